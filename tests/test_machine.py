"""The machine described once (``machine``) and timing written once (``timing``): every
description of the CPU comes from one reading of it, and the timers count what they say."""

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from fer_utils import machine, timing
from fer_utils.config import PROJECT_ROOT

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Test CPU @ 2.00GHz
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16
vmx flags\t: ept

processor\t: 1
model name\t: Intel(R) Xeon(R) Test CPU @ 2.00GHz
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16
"""


@pytest.fixture
def fake_cpu(tmp_path, monkeypatch):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    monkeypatch.setattr(machine, "CPUINFO", path)
    monkeypatch.setattr(machine.os, "cpu_count", lambda: 2)
    return path


def test_every_description_of_the_cpu_comes_from_one_reading(fake_cpu, monkeypatch):
    cpu = machine.cpu()
    assert cpu.name == "Intel(R) Xeon(R) Test CPU @ 2.00GHz" and cpu.logical == 2
    assert machine.cpu_flags() == {"fpu", "sse2", "avx2", "avx512f", "avx512_bf16"}  # not the "vmx flags"
    assert machine.cpu_summary() == "Intel(R) Xeon(R) Test CPU @ 2.00GHz, 2 logical CPUs"
    assert machine.architecture() == f"{cpu.architecture}, 2 CPUs"
    assert machine.describe("numpy") == {"backend": "numpy", "device": "cpu (2 cores)",
                                         "cpu": "Intel(R) Xeon(R) Test CPU @ 2.00GHz"}
    monkeypatch.setattr(machine, "accelerator", lambda backend: f"gpu of {backend}")
    assert machine.describe("jax")["device"] == "gpu of jax"


def test_without_cpuinfo_the_platform_names_the_cpu(tmp_path, monkeypatch):
    monkeypatch.setattr(machine, "CPUINFO", tmp_path / "missing")
    cpu = machine.cpu()
    assert cpu.name and cpu.flags == frozenset() and machine.cpu_flags() == set()


def test_the_training_record_and_the_bfloat16_choice_use_it(fake_cpu, monkeypatch):
    from fer_utils import train

    monkeypatch.setattr(machine, "accelerator", lambda backend: None)
    monkeypatch.setattr(train, "accelerator", lambda: None)
    described = train.machine_description()
    assert described["cpu"] == "Intel(R) Xeon(R) Test CPU @ 2.00GHz" and described["device"] == "cpu (2 cores)"
    assert set(described) == {"backend", "device", "cpu"}
    assert train.resolve_precision("auto") == "mixed_bfloat16"  # the fake CPU has avx512_bf16


def test_importing_it_loads_no_framework():
    script = "import json, sys, fer_utils.machine, fer_utils.timing; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = {m.split(".")[0] for m in json.loads(done.stdout)}
    assert not {"tensorflow", "keras", "jax", "torch", "sklearn", "pandas"} & loaded


def test_stopwatch_times_a_block_and_divides_it_per_item():
    with timing.Stopwatch() as watch:
        time.sleep(0.02)
    assert 0.015 < watch.seconds < 1.0
    assert watch.ms_per(4) == pytest.approx(1000 * watch.seconds / 4) and watch.ms_per(0) == 1000 * watch.seconds


def test_time_calls_warms_up_untimed_then_times_each_call():
    calls = []
    seconds = timing.time_calls(calls.append, repeats=4, warmup=2)
    assert calls == [0, 1, 2, 3, 4, 5] and len(seconds) == 4 and (seconds >= 0).all()
    slow = timing.time_calls(lambda i: time.sleep(0.01), repeats=50, max_seconds=0.0, min_calls=3)
    assert len(slow) == 3  # over its time: stops at the minimum
    assert len(timing.time_calls(lambda i: None, repeats=2, max_seconds=0.0)) == 2  # fewer asked than the minimum
    assert isinstance(seconds, np.ndarray)


def test_a_notebook_reports_the_cores_it_may_use():
    assert 1 <= machine.available_cpus() <= machine.cpu().logical

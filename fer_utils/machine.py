"""The machine a run or a measurement ran on, described in one place.

:func:`cpu` reads the processor once (Linux ``/proc/cpuinfo``: model name and feature flags;
``platform`` elsewhere); every description of the machine is made from it: a metrics file's
``train`` entry (:func:`describe`: ``backend``, ``device``, ``cpu``), its ``environment``
(:func:`architecture`), latency tables and model cards (:func:`cpu_summary`), the choice of
bfloat16 (:func:`cpu_flags`) and the cores a notebook ran on (:func:`available_cpus`).

Standard library only at import, so the lab and the runtime can both use it; the one probe that
needs a deep-learning framework (:func:`accelerator`) imports it when called.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class Cpu:
    """The processor: its model ``name``, ``architecture`` (``x86_64``, ``arm64``, ...), the
    number of ``logical`` CPUs and its feature ``flags`` (empty where unknown)."""

    name: str
    architecture: str
    logical: int
    flags: frozenset[str] = field(default_factory=frozenset)


def cpu() -> Cpu:
    """The processor this process runs on (read each call: it is cheap, and tests may fake it)."""
    fields: dict[str, str] = {}
    try:
        for line in CPUINFO.read_text().splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields.setdefault(key.strip(), value.strip())  # the first processor's entry
    except OSError:  # not Linux
        pass
    architecture = platform.machine()
    return Cpu(name=fields.get("model name") or platform.processor() or architecture, architecture=architecture,
               logical=os.cpu_count() or 1, flags=frozenset(fields.get("flags", "").split()))


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    return set(cpu().flags)


def cpu_summary() -> str:
    """The CPU in a few words, for latency tables and model cards: ``<model>, <N> logical CPUs``."""
    c = cpu()
    return f"{c.name}, {c.logical} logical CPUs"


def available_cpus() -> int:
    """CPU cores this process may use (its affinity where the system has one; for reports)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpu().logical


def architecture() -> str:
    """A metrics file's ``environment.machine``: ``<architecture>, <N> CPUs``."""
    c = cpu()
    return f"{c.architecture}, {c.logical} CPUs"


def accelerator(backend: str) -> str | None:
    """The first GPU or TPU the Keras ``backend`` (``jax``, ``tensorflow`` or ``torch``) sees, in
    words, or None on a CPU-only machine."""
    # The frameworks are imported here, not at the top: each is an optional dependency of its own
    # backend (and heavy), and only the one that runs the model is asked.
    if backend == "jax":
        import jax

        devices = [d for d in jax.devices() if d.platform != "cpu"]
        return f"{devices[0].platform} {devices[0].device_kind}" if devices else None
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return f"gpu {gpus[0].name}" if gpus else None
    if backend == "torch":
        import torch

        return f"gpu {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else None
    return None


def describe(backend: str) -> dict:
    """Where a run trained, for a metrics file's ``train`` entry: ``backend``, ``device`` (the
    accelerator, else ``cpu (<N> cores)``) and ``cpu`` (the processor's model)."""
    c = cpu()
    return {"backend": backend, "device": accelerator(backend) or f"cpu ({c.logical} cores)", "cpu": c.name}

"""The GPU runner: packing under the upload limit, staging between calls, 16-bit weights in
returnable pieces, and the round trip pack -> train (fixed schedule) -> collect (metrics here)."""

import json

import numpy as np
import pytest

from fer_utils import gpu
from fer_utils.synthetic import make_synthetic_fer
from fer_utils.train import TrainConfig


@pytest.fixture
def tiny_job(tmp_path, monkeypatch):
    ds = make_synthetic_fer(350, seed=3)
    x, y = ds.split("Training")
    monkeypatch.setattr(gpu, "tree_bytes", lambda root=None: 0)  # the work tree's size is measured elsewhere
    monkeypatch.setattr(gpu, "STAGE_DIR", tmp_path / "stage")
    runs = [gpu.JobRun("cnn_small", "03", "cnn_small", "models:cnn_small", {},
                       TrainConfig(epochs=2, batch_size=32, patience=None, schedule="cosine", augment="flip").params())]
    limit = 2 * 2**20 + 2_000 + 15_000  # two MiB of margins, the labels, about 15 kB of faces per call
    description = gpu.pack(x, y, tmp_path / "job", runs, minutes=2, fingerprint=ds.fingerprint, limit=limit)
    return ds, x, y, runs, description


def test_the_data_is_cut_into_parts_that_travel_one_per_call(tiny_job, tmp_path):
    ds, x, y, runs, description = tiny_job
    assert len(description["parts"]) >= 2
    calls = description["calls"]
    assert len(calls) == len(description["parts"])
    assert all(" stage " in c["command"] for c in calls) and " train " in calls[-1]["command"]
    assert all(" train " not in c["command"] for c in calls[:-1])
    assert [c["carry"][1].rsplit("/", 1)[1] for c in calls] == description["parts"]
    # each call carries one part; staged parts and the last carried one give back the exact faces
    for part in description["parts"][:-1]:
        gpu.stage(tmp_path / "job", part, gpu.STAGE_DIR)
        (tmp_path / "job" / part / "faces.xz.part").unlink()  # not carried on later calls
    faces, labels = gpu.load_training(tmp_path / "job", json.loads((tmp_path / "job/common/job.json").read_text()),
                                      gpu.STAGE_DIR)
    np.testing.assert_array_equal(faces, x)
    np.testing.assert_array_equal(labels, y)
    assert "PublicTest" not in (tmp_path / "job/common/job.json").read_text()


def test_weights_come_back_in_16_bit_pieces(tmp_path):
    weights = [np.random.default_rng(0).normal(size=(300, 200)).astype(np.float32), np.arange(5)]
    files = gpu.save_weights(weights, tmp_path, "model", max_bytes=50_000)
    assert len(files) > 1 and all((tmp_path / f).stat().st_size <= 50_000 for f in files)
    back = gpu.read_weights(tmp_path, files)
    np.testing.assert_allclose(back[0], weights[0], rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(back[1], weights[1])


def test_pack_train_collect_round_trip(tiny_job, tmp_path):
    ds, x, y, runs, description = tiny_job
    with pytest.raises(SystemExit):  # no GPU here: the host side stops before any work
        gpu.train_job(tmp_path / "job", tmp_path / "nothing", allow_cpu=False)
    for part in description["parts"]:
        gpu.stage(tmp_path / "job", part, gpu.STAGE_DIR)
    results = gpu.train_job(tmp_path / "job", tmp_path / "out", allow_cpu=True, epochs=1, epoch_size=64)
    assert [r["name"] for r in results["runs"]] == ["cnn_small"] and results["runs"][0]["train"]["epochs"] == 1
    records = gpu.collect(tmp_path / "out", ds, tmp_path / "reports", runs)
    record = records[0]
    # a run shorter than its schedule is labelled with its real length, not `full`
    assert record["profile"] == "gpu_1ep" and record["run"] == "03_cnn_small_none_gpu_1ep"
    assert (tmp_path / "reports/metrics/03_cnn_small_none_gpu_1ep.json").exists()
    assert set(record["metrics"]) == {"PublicTest", "PrivateTest", "PrivateTest_clean"}
    assert record["train"]["selection"].startswith("last epoch")
    with pytest.raises(ValueError, match="trained on dataset"):
        gpu.collect(tmp_path / "out", make_synthetic_fer(350, seed=4), tmp_path / "reports", runs)

"""Every notebook: committed clean (no outputs, a tagged parameters cell) and runs end to end
under papermill with the smoke profile on the synthetic stand-in."""

import base64
import json
import os
import re
import shlex
from pathlib import Path

import nbformat
import pytest

from fer_utils import config, pipeline
from fer_utils.notebook import resolve_reports_dir, start

NOTEBOOKS = pipeline.list_notebooks()


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks/NN_*.ipynb found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not any(c.get("outputs") or c.get("execution_count") for c in code), "commit without outputs"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    for name in ("profile", "data_path", "reports_dir", "seed", "force"):
        assert f"{name} =" in tagged[0].source, f"parameter {name} missing"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), "starts with a title"


@pytest.mark.notebooks
def test_the_notebooks_run_in_sequence_as_make_all_runs_them(tmp_path, capsys, monkeypatch):
    """``make all`` without a FER2013 copy: every notebook in the pipeline's order, on the synthetic
    stand-in at the smoke profile, into one reports folder, so each notebook sees what the earlier
    ones trained (as on a fresh clone), then checks of what each executed copy shows and saved."""
    monkeypatch.setenv("MPLBACKEND", "Agg")
    reports = tmp_path / "reports"
    assert pipeline.main(["--profile", "smoke", "--data", "synthetic", "--reports-dir", str(reports)]) == 0
    ran = capsys.readouterr().out
    for path in pipeline.list_notebooks():
        assert f"=== {path.name}: done" in ran
        executed = nbformat.read(reports / "notebooks" / path.name, as_version=4)
        first_output = next(o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", []))
        assert "SYNTHETIC STAND-IN" in first_output.get("text", ""), f"{path.stem}: the first output says the data is synthetic"
        assert list((reports / "figures").glob(f"{path.stem}_*.png")), f"{path.stem} saved its figures"
    distilled = (reports / "tables" / "12_champion_distillation.csv").read_text()
    assert "student, seed" in distilled and "control without the teacher" in distilled, "12 trains a smoke student and its control"
    assert not (config.REPORTS_DIR / "notebooks" / f"{NOTEBOOKS[0].stem}.smoke").exists()
    assert os.environ["MPLBACKEND"] == "Agg", "the caller's environment is restored"
    shows_each_saved_figure_once(reports, next(p for p in NOTEBOOKS if p.name.startswith("02_")))


def shows_each_saved_figure_once(reports, path):
    """With ``MPLBACKEND=Agg`` in the environment (as .ci/run and conftest set it), the executed
    copy still shows every figure the notebook saved, once each, and keeps no progress widget
    frozen at 0% nor half-drawn progress bars (notebook 02: figures and progress bars)."""
    outputs = [o for c in nbformat.read(reports / "notebooks" / path.name, as_version=4).cells
               if c.cell_type == "code" for o in c.get("outputs", [])]
    shown = sorted(base64.b64decode(o["data"]["image/png"]) for o in outputs if "image/png" in o.get("data", {}))
    saved = sorted(p.read_bytes() for p in (reports / "figures").glob(f"{path.stem}_*.png"))
    assert len(saved) > 0
    assert len(shown) == len(saved), "one image output per saved figure"
    assert shown == saved, "the images shown are the PNG files saved"
    assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
    streams = [o["text"] for o in outputs if o["output_type"] == "stream"]
    assert any("100%" in text for text in streams), "the progress bars are plain text, in their last state"
    assert not any("\r" in text.replace("\r\n", "\n") or "cuInit" in text for text in streams)


def test_smoke_and_synthetic_runs_never_target_reports():
    assert resolve_reports_dir(None, "cpu", synthetic=False) == config.REPORTS_DIR
    assert resolve_reports_dir(None, "smoke", synthetic=False) != config.REPORTS_DIR
    assert resolve_reports_dir(None, "cpu", synthetic=True) != config.REPORTS_DIR
    for profile, synthetic in (("smoke", False), ("cpu", True)):
        with pytest.raises(ValueError, match="refusing"):
            resolve_reports_dir(str(config.REPORTS_DIR), profile, synthetic)


def test_start_prints_a_synthetic_banner_first(capsys, tmp_path):
    run = start("99_test", "smoke", "synthetic", str(tmp_path), seed=0)
    printed = capsys.readouterr().out
    assert printed.startswith("!!!") and "SYNTHETIC STAND-IN" in printed.splitlines()[1]
    assert run.dataset.synthetic and run.reports_dir == tmp_path
    assert "fingerprint: " + run.dataset.fingerprint in printed


def test_smoke_profile_shrinks_real_data(csv_file, tmp_path):
    run = start("99_test", "smoke", str(csv_file), str(tmp_path), verbose=False)
    limit = config.get_profile("smoke").max_train_per_class
    assert not run.dataset.synthetic
    assert run.dataset.counts().drop(index="all").drop(columns="all").to_numpy().max() <= limit


def test_pipeline_selects_notebooks_by_number():
    assert pipeline.list_notebooks(["1"]) == [p for p in NOTEBOOKS if p.name.startswith("01_")]
    with pytest.raises(FileNotFoundError, match="no notebook numbered"):
        pipeline.list_notebooks(["98"])


def test_pipeline_reads_notebook_parameters_as_yaml(tmp_path):
    assert pipeline.parse_parameter("allow_scratch=True") == ("allow_scratch", True)
    assert pipeline.parse_parameter("n_others=3") == ("n_others", 3)
    assert pipeline.parse_parameter("rate=0.5") == ("rate", 0.5)
    assert pipeline.parse_parameter("methods=[ros, smote]") == ("methods", ["ros", "smote"])
    assert pipeline.parse_parameter("compare_data_path=") == ("compare_data_path", "")
    assert pipeline.parse_parameter(f"compare_data_path={tmp_path}") == ("compare_data_path", str(tmp_path.resolve()))
    with pytest.raises(ValueError, match="NAME=VALUE"):
        pipeline.parse_parameter("allow_scratch")


def _parameters(path) -> set[str]:
    """The names a notebook's tagged ``parameters`` cell assigns."""
    cell = next(c for c in nbformat.read(path, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    return {line.split("=")[0].strip() for line in cell.source.splitlines() if "=" in line.split("#")[0]}


def test_documented_notebook_options_parse():
    """Every ``make NN ARGS="-p ..."`` written in the README, the docs pages or a notebook's prose is
    a valid ``-p NAME=VALUE`` naming a parameter of notebook NN: a typo there fails a reader's first try."""
    pages = [config.PROJECT_ROOT / "README.md", *sorted((config.PROJECT_ROOT / "docs").glob("*.md"))]
    texts = [p.read_text() for p in pages] + [c.source for p in NOTEBOOKS for c in nbformat.read(p, as_version=4).cells]
    commands = [(number, args) for text in texts
                for number, args in re.findall(r'make (\d\d) ARGS="(.*?)"`', text.replace("\n", " "), re.S)]
    assert len(commands) >= 5
    for number, args in commands:
        words = shlex.split(args)
        assert words[::2] == ["-p"] * len(words[1::2]), args
        notebook = next(p for p in NOTEBOOKS if p.name.startswith(number + "_"))
        for option in words[1::2]:
            name, _ = pipeline.parse_parameter(option)
            assert name in _parameters(notebook), f"make {number}: {notebook.name} has no parameter {name!r}"


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        config.get_profile("fast")
    assert json.dumps(sorted(config.PROFILES)) == '["cpu", "full", "smoke"]'


def test_the_export_and_demo_notebooks_run_after_the_champion(tmp_path):
    for name in ("09_onnx_export", "10_webcam_demo", "11_audit", "12_champion", "01_eda"):
        (tmp_path / f"{name}.ipynb").write_text("{}")
    order = [p.name[:2] for p in pipeline.list_notebooks(folder=tmp_path)]
    assert order == ["01", "11", "12", "09", "10"]


def test_tidy_outputs_merges_streams_and_drops_overwritten_text_and_cuda_noise():
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stderr", text="E0000 00:00:17.3 1 cuda_platform.cc:52] failed call to "
                                                             "cuInit: INTERNAL: CUDA error\n"),
        nbformat.v4.new_output("stream", name="stderr", text="\rbar:   0%|    | 0/2"),
        nbformat.v4.new_output("stream", name="stderr", text="\rbar:  50%|#   | 1/2"),
        nbformat.v4.new_output("stream", name="stderr", text="\rbar: 100%|####| 2/2\n"),
        nbformat.v4.new_output("stream", name="stdout", text="result\n"),
        nbformat.v4.new_output("stream", name="stderr", text="E0000 00:00:17.4 1 cuda_platform.cc:52] cuInit\n"),
    ]
    nb = nbformat.v4.new_notebook(cells=[cell])
    pipeline.tidy_outputs(nb)
    assert [(o.name, o.text) for o in nb.cells[0].outputs] == [("stderr", "bar: 100%|####| 2/2\n"),
                                                                ("stdout", "result\n")]


def test_kernel_environment_sets_the_inline_backend_and_restores(monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv(pipeline.BATCH_RUN_ENV, raising=False)
    with pipeline.kernel_environment():
        assert os.environ["MPLBACKEND"] == "module://matplotlib_inline.backend_inline"
        assert os.environ[pipeline.BATCH_RUN_ENV] == "1"
    assert os.environ["MPLBACKEND"] == "Agg" and pipeline.BATCH_RUN_ENV not in os.environ

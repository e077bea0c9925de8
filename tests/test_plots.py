"""Figures: comparison charts without overlapping labels, and saved
figures shown once in a notebook and closed."""

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from fer_utils import naming, notebook, plots
from fer_utils.notebook import start


def _overlap(a, b):
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_method_comparison_labels_do_not_overlap():
    runs = ["06_vgg_w0.25_fc512_tuned_smote_enn_cpu", "05_mobilenet_v3_large_frozen_weighted_ce_none_cpu",
            "11_vgg_w0.25_fc512_tuned_leaky_smote_before_split_cpu", "03_cnn_small_none_cpu", "12_champion_cnn_none_cpu"]
    table = pd.DataFrame({"run": [naming.describe_run(r) for r in runs], "PrivateTest": [60, 40, 55, 52, 68],
                          "balanced": [58, 35, 50, 45, 66]})
    fig = plots.method_comparison(table, "run", ["PrivateTest", "balanced"], "comparison")
    fig.canvas.draw()
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.get_yticklabels() if t.get_text()]
    assert len(boxes) == len(runs)
    assert not any(_overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert [t.get_text().replace("\n", " ") for t in ax.get_yticklabels()] == list(table["run"])
    plt.close(fig)


def test_savefig_writes_shows_once_in_a_kernel_and_closes(tmp_path, monkeypatch):
    run = start("99_test", "smoke", "synthetic", str(tmp_path), seed=0, verbose=False)
    shown = []
    monkeypatch.setattr(notebook, "in_notebook", lambda: True)
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    path = run.savefig(fig, "line")
    assert path == tmp_path / "figures" / "99_test_line.png" and path.exists()
    assert len(shown) == 1 and shown[0].data == path.read_bytes()
    assert not plt.fignum_exists(fig.number), "the figure is closed"


def test_savefig_outside_a_notebook_shows_nothing(tmp_path, capsys):
    run = start("99_test", "smoke", "synthetic", str(tmp_path), seed=0, verbose=False)
    fig, _ = plt.subplots()
    assert run.savefig(fig, "empty").exists()
    assert capsys.readouterr().out == "" and not plt.fignum_exists(fig.number)


def test_classwise_before_after_draws_the_per_class_tables():
    from fer_utils.config import CLASS_NAMES
    from fer_utils.runs import RunRecord

    def run(f1):
        per_class = {c: {"precision": 0.5, "recall": 0.4, "f1": f1, "support": 3} for c in CLASS_NAMES}
        return RunRecord({"run": "x", "metrics": {"PrivateTest": {"per_class": per_class}}})

    fig = plots.classwise_before_after(run(0.3).per_class_table("PrivateTest"), run(0.6).per_class_table("PrivateTest"))
    f1_panel = fig.axes[2]
    heights = sorted({round(bar.get_height()) for bar in f1_panel.patches if bar.get_height()})
    assert f1_panel.get_title() == "f1" and heights == [30, 60]
    plt.close(fig)

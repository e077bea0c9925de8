"""Figures: runs described in words, comparison charts without overlapping labels, and saved
figures shown once in a notebook and closed."""

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from fer_utils import notebook, plots
from fer_utils.notebook import start


@pytest.mark.parametrize("run_id, words", [
    ("06_vgg_w0.25_fc512_tuned_smote_enn_cpu", "VGG, quarter width, tuned recipe, SMOTE-ENN"),
    ("04_vgg_paper_none_full", "VGG, full width, paper recipe"),
    ("03_cnn_small_none_cpu", "small CNN"),
    ("03_cnn_small_class_weights_smoke", "small CNN, class weights"),
    ("03_fc_2304_256_512_7_none_cpu", "fully connected, hidden 256-512"),
    ("05_resnet18_frozen_weighted_ce_none_cpu", "ResNet-18, frozen backbone, weighted cross-entropy"),
    ("06_ensemble_ros_smote_smote_tomek_cpu", "ensemble: random oversampling + SMOTE + SMOTE-Tomek"),
    ("11_vgg_w0.25_fc512_tuned_leaky_smote_before_split_cpu",
     "VGG, quarter width, tuned recipe, SMOTE before the split (leaky)"),
    ("12_champion_cnn_none_cpu", "champion CNN"),
    ("something_else", "something else"),
])
def test_describe_run_from_a_run_id(run_id, words):
    assert plots.describe_run(run_id) == words


def test_describe_run_from_a_record_uses_its_fields():
    record = {"run": "05_xception_finetune_ce_none_cpu", "model": "xception_finetune_ce", "sampling": "none",
              "backbone": "xception", "mode": "finetune", "loss": "ce", "weights": "none"}
    assert plots.describe_run(record) == "Xception, fine-tuned, cross-entropy, random init"
    ensemble = {"run": "06_ensemble_all_four_cpu", "model": "ensemble", "sampling": "ros+smote+smote_tomek+smote_enn"}
    assert plots.describe_run(ensemble) == "ensemble: random oversampling + SMOTE + SMOTE-Tomek + SMOTE-ENN"


def _overlap(a, b):
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_method_comparison_labels_do_not_overlap():
    runs = ["06_vgg_w0.25_fc512_tuned_smote_enn_cpu", "05_mobilenet_v3_large_frozen_weighted_ce_none_cpu",
            "11_vgg_w0.25_fc512_tuned_leaky_smote_before_split_cpu", "03_cnn_small_none_cpu", "12_champion_cnn_none_cpu"]
    table = pd.DataFrame({"run": [plots.describe_run(r) for r in runs], "PrivateTest": [60, 40, 55, 52, 68],
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

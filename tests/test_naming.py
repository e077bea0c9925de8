"""Runs in words: labels people read in tables, figures and legends."""

import pytest

from fer_utils import naming


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
    ("03_cnn_small_ros_seed43_cpu", "small CNN, random oversampling, seed 43"),
    ("12_champion_cnn_none_seed44_smoke", "champion CNN, seed 44"),
    ("something_else", "something else"),
])
def test_describe_run_from_a_run_id(run_id, words):
    assert naming.describe_run(run_id) == words


def test_describe_run_from_a_record_uses_its_fields():
    record = {"run": "05_xception_finetune_ce_none_cpu", "model": "xception_finetune_ce", "sampling": "none",
              "backbone": "xception", "mode": "finetune", "loss": "ce", "weights": "none"}
    assert naming.describe_run(record) == "Xception, fine-tuned, cross-entropy, random init"
    ensemble = {"run": "06_ensemble_all_four_cpu", "model": "ensemble", "sampling": "ros+smote+smote_tomek+smote_enn"}
    assert naming.describe_run(ensemble) == "ensemble: random oversampling + SMOTE + SMOTE-Tomek + SMOTE-ENN"


def test_a_record_names_a_seed_other_than_42():
    record = {"run": "12_champion_cnn_none_seed43_cpu", "model": "champion_cnn", "sampling": "none",
              "params": {"seed": 43}}
    assert naming.describe_run(record) == "champion CNN, seed 43"
    assert naming.describe_run({**record, "run": "12_champion_cnn_none_cpu", "params": {"seed": 42}}) == "champion CNN"

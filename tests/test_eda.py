"""Notebook 01's comparison of FER2013's labels with FER+'s votes, on hand-made faces."""

import numpy as np
import pytest

from fer_utils import data, eda
from fer_utils.config import CLASS_NAMES, TEST, TRAIN, VAL

# FER+'s columns: neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF
VOTES = [[0, 9, 0, 0, 0, 0, 0, 0, 1, 0],   # happy
         [7, 0, 0, 3, 0, 0, 0, 0, 0, 0],   # neutral
         [7, 0, 0, 3, 0, 0, 0, 0, 0, 0],   # neutral (a copy of the face above)
         [4, 0, 0, 4, 0, 0, 0, 0, 2, 0],   # no majority
         [0, 0, 0, 0, 0, 0, 0, 0, 0, 10],  # not a face
         [0, 0, 0, 8, 0, 0, 0, 0, 2, 0]]   # sad
LABELS = ["happy", "sad", "neutral", "fear", "angry", "sad"]
USAGE = [TRAIN, TRAIN, TEST, VAL, TEST, TEST]


@pytest.fixture
def ds():
    pixels = np.random.default_rng(0).integers(0, 256, (6, 48, 48), dtype=np.uint8)
    pixels[2] = pixels[1]  # a duplicate whose FER2013 labels conflict (sad, neutral)
    return data.FERDataset(pixels, [CLASS_NAMES.index(c) for c in LABELS], USAGE,
                           ferplus=data.FerPlusVotes(np.array(VOTES)))


def test_the_two_label_sets_side_by_side(ds):
    matrix = eda.label_agreement(ds)
    assert matrix.to_numpy().sum() == 6 and list(matrix.columns) == list(eda.FERPLUS_OUTCOMES)
    assert matrix.loc["sad", "neutral"] == 1 and matrix.loc["sad", "sad"] == 1 and matrix.loc["angry", "not a face"] == 1
    per_class = eda.agreement_per_class(ds)
    assert per_class.loc["happy", "agree %"] == 100.0
    assert per_class.loc["sad", ["faces", "with FER+ majority", "agree"]].tolist() == [2, 2, 1]
    assert per_class.loc["sad", "FER+ most often says instead"] == "neutral"
    assert per_class.loc["all", ["faces", "with FER+ majority", "agree"]].tolist() == [6, 4, 3]
    assert eda.agreement_per_class(ds, TEST).loc["all", "faces"] == 3
    left_out = eda.ferplus_left_out(ds)
    assert left_out.loc[TEST].tolist() == [3, 2, 0, 0, 0, 1]  # faces, with a majority, contempt, none, unknown, NF
    assert left_out.loc["all", "no majority"] == 1


def test_conflicting_duplicates_seen_through_the_votes(ds):
    groups = data.duplicate_audit(ds)["groups"]
    votes = eda.duplicate_votes(ds, groups)
    assert votes[["FER2013 labels", "same votes", "FER+ outcome", "verdict"]].values.tolist() == \
        [["sad, neutral", True, "neutral", "FER+ sides with neutral"]]
    assert eda.verdict_counts(votes).tolist() == [1, 0, 0]
    ds.ferplus.counts[2] = VOTES[3]  # the copies' votes differ: nothing is settled
    assert eda.duplicate_votes(ds, groups).loc[0, "verdict"] == "FER+: copies differ"

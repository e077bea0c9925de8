"""Loaders, cache, fingerprint and duplicate audit, on generated fixtures of both layouts."""

import gzip
import hashlib

import numpy as np
import pytest
from PIL import Image

from fer_utils import config, data
from fer_utils.config import TEST, TRAIN, USAGES, VAL
from fer_utils.data import DataFormatError, FERDataset


def assert_same(a: FERDataset, b: FERDataset):
    np.testing.assert_array_equal(a.pixels, b.pixels)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.usage, b.usage)


# --- CSV layout ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["fer2013.csv", "fer2013.csv.gz"])
def test_csv_round_trip(small_ds, tmp_path, name):
    path = data.write_csv(small_ds, tmp_path / name)
    loaded = data.load_csv(path, progress=False)
    assert loaded.pixels.dtype == np.uint8 and loaded.pixels.shape == (len(small_ds), 48, 48)
    assert loaded.labels.dtype == np.int64
    assert_same(loaded, small_ds)
    assert loaded.fingerprint == small_ds.fingerprint


def _corrupt(csv_file, line_no, new_line):
    lines = csv_file.read_text().splitlines()
    lines[line_no - 1] = new_line
    csv_file.write_text("\n".join(lines) + "\n")


def _row(label="3", n=2304, value="7", usage="Training"):
    return f"{label},{' '.join([value] * n)},{usage}"


@pytest.mark.parametrize(
    "line, text, message",
    [
        (5, "3,1 2 3", "expected 3 fields, found 2"),
        (5, _row(n=2303), "pixels has 2303 values, expected 2304"),
        (6, _row(value="x"), "pixel value 'x' is not an integer"),
        (7, _row(value="256"), "pixel value 256 is outside 0-255"),
        (7, _row(value="-1"), "pixel value -1 is outside 0-255"),
        (8, _row(usage="Validation"), "Usage 'Validation' is not one of"),
        (9, _row(label="7"), "emotion 7 is outside 0-6"),
        (9, _row(label="happy"), "emotion 'happy' is not an integer"),
        (1, "label,pixels,Usage", "lacks column(s) ['emotion']"),
    ],
)
def test_csv_bad_rows_name_file_and_line(csv_file, line, text, message):
    _corrupt(csv_file, line, text)
    with pytest.raises(DataFormatError) as err:
        data.load_csv(csv_file, progress=False)
    assert str(csv_file) in str(err.value)
    assert f"line {line}" in str(err.value)
    assert message in str(err.value)


def test_csv_empty_file_and_header_only(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataFormatError, match="empty"):
        data.load_csv(empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text("emotion,pixels,Usage\n")
    with pytest.raises(DataFormatError, match="no data rows"):
        data.load_csv(header_only)


def test_csv_gz_that_is_not_gzip(tmp_path):
    fake = tmp_path / "fer2013.csv.gz"
    fake.write_text("emotion,pixels,Usage\n")
    with pytest.raises(DataFormatError, match="cannot be read"):
        data.load_csv(fake)


# --- Image-folder layout ---------------------------------------------------------------------


def test_folder_round_trip_keeps_official_split(small_ds, folder):
    loaded = data.load_image_folder(folder, progress=False)
    assert loaded.fingerprint == small_ds.fingerprint
    assert data.split_fingerprints(loaded) == data.split_fingerprints(small_ds)
    assert loaded.counts().equals(small_ds.counts())
    assert loaded.notes == []


def test_csv_and_folder_layouts_agree(csv_file, folder):
    a, b = data.load_fer2013(csv_file), data.load_fer2013(folder)
    assert a.counts().equals(b.counts())
    assert a.fingerprint == b.fingerprint


def test_folder_without_usage_prefix_gets_seeded_stratified_split(small_ds, tmp_path):
    root = data.write_image_folder(small_ds, tmp_path / "plain", usage_prefix=False)
    a = data.load_image_folder(root, seed=3, progress=False)
    b = data.load_image_folder(root, seed=3, progress=False)
    np.testing.assert_array_equal(a.usage, b.usage)
    assert any("no Usage prefix" in n and "seed=3" in n for n in a.notes)
    counts = a.counts()
    for usage in USAGES:
        assert (counts.loc[list(config.CLASS_NAMES), usage] > 0).all(), usage
    share = counts.loc["all", TRAIN] / counts.loc["all", "all"]
    assert 0.75 < share < 0.85
    c = data.load_image_folder(root, seed=4, progress=False)
    assert not np.array_equal(a.usage, c.usage)


def test_folder_with_some_prefixes_missing(small_ds, folder):
    first = next((folder / "train").rglob("*.png"))
    first.rename(first.with_name("unprefixed.png"))
    with pytest.raises(DataFormatError, match="unprefixed.png.*no Training_/PublicTest_/PrivateTest_ prefix"):
        data.load_image_folder(folder, progress=False)


def test_unknown_class_folder(folder):
    odd = folder / "train" / "contempt"
    odd.mkdir()
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(odd / "Training_x.png")
    with pytest.raises(DataFormatError, match="unknown class folder 'contempt'") as err:
        data.load_image_folder(folder, progress=False)
    assert str(odd) in str(err.value)


def test_unreadable_image(folder):
    bad = folder / "train" / "happy" / "Training_broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(DataFormatError, match="unreadable image") as err:
        data.load_image_folder(folder, progress=False)
    assert str(bad) in str(err.value)


def test_wrong_size_image_is_rejected_with_reason(folder):
    bad = folder / "train" / "sad" / "Training_big.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(bad)
    with pytest.raises(DataFormatError, match="64x64, expected 48x48") as err:
        data.load_image_folder(folder, progress=False)
    assert str(bad) in str(err.value)


def test_colour_image_is_converted_and_noted(folder):
    colour = folder / "train" / "happy" / "Training_colour.png"
    Image.fromarray(np.full((48, 48, 3), (200, 100, 50), np.uint8)).save(colour)
    loaded = data.load_image_folder(folder, progress=False)
    assert any("1 colour image(s) converted to grayscale" in n for n in loaded.notes)
    expected = round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)
    assert np.isin(np.full((48, 48), expected, np.uint8), loaded.pixels).all()


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match="no image files"):
        data.load_image_folder(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        data.load_image_folder(tmp_path / "missing")


def test_empty_split_is_a_clear_error(small_ds):
    no_test = small_ds.subset(small_ds.usage != TEST)
    with pytest.raises(DataFormatError, match="the PrivateTest split is empty"):
        no_test.split(TEST)
    with pytest.raises(ValueError, match="unknown split"):
        small_ds.split("Validation")


# --- Dispatch, cache, data discovery ---------------------------------------------------------


def test_cache_is_used_and_invalidated(small_ds, csv_file):
    first = data.load_fer2013(csv_file)
    cached = list(config.cache_dir().glob("fer2013.csv-*.npz"))
    assert len(cached) == 1
    assert_same(data.load_fer2013(csv_file), first)
    # Rewriting the source (another label) must not serve the stale cache.
    changed = small_ds.subset(np.arange(len(small_ds)))
    changed.labels[0] = (changed.labels[0] + 1) % 7
    data.write_csv(changed, csv_file)
    reloaded = data.load_fer2013(csv_file)
    assert reloaded.fingerprint == changed.fingerprint != first.fingerprint


def test_npz_round_trip_keeps_flags(small_ds, tmp_path):
    path = data.save_npz(small_ds, tmp_path / "ds.npz")
    loaded = data.load_fer2013(path)
    assert_same(loaded, small_ds)
    assert loaded.synthetic and loaded.notes == small_ds.notes


def test_unsupported_and_missing_paths(tmp_path):
    other = tmp_path / "fer.txt"
    other.write_text("x")
    with pytest.raises(DataFormatError, match="expected a .csv"):
        data.load_fer2013(other)
    with pytest.raises(FileNotFoundError, match="FER2013="):
        data.load_fer2013(tmp_path / "nope.csv")


def test_find_dataset_order(tmp_path, monkeypatch, csv_file):
    assert data.find_dataset() is None  # nothing given, nothing in data/
    assert data.find_dataset("synthetic") is None
    monkeypatch.setenv(config.DATA_ENV_VAR, str(csv_file))
    assert data.find_dataset() == csv_file
    with pytest.raises(FileNotFoundError, match="not found"):
        data.find_dataset(tmp_path / "missing.csv")
    monkeypatch.delenv(config.DATA_ENV_VAR)
    config.DATA_DIR.mkdir(parents=True)
    (config.DATA_DIR / "fer2013.csv.gz").write_bytes(gzip.compress(csv_file.read_bytes()))
    assert data.find_dataset() == config.DATA_DIR / "fer2013.csv.gz"


# --- Fingerprint and duplicates --------------------------------------------------------------


def test_fingerprint_matches_its_definition():
    pixels = np.stack([np.full((48, 48), 10, np.uint8), np.arange(2304).reshape(48, 48).astype(np.uint8)])
    labels = np.array([3, 0])
    digests = sorted(hashlib.sha256(bytes([int(y)]) + p.tobytes()).hexdigest() for p, y in zip(pixels, labels))
    expected = hashlib.sha256("\n".join(digests).encode()).hexdigest()[:16]
    assert data.fingerprint(pixels, labels) == expected


def test_fingerprint_ignores_row_order_but_not_content(small_ds):
    order = np.random.default_rng(0).permutation(len(small_ds))
    assert small_ds.subset(order).fingerprint == small_ds.fingerprint
    relabelled = small_ds.subset(np.arange(len(small_ds)))
    relabelled.labels[5] = (relabelled.labels[5] + 1) % 7
    assert relabelled.fingerprint != small_ds.fingerprint
    repixelled = small_ds.subset(np.arange(len(small_ds)))
    repixelled.pixels[5, 0, 0] ^= 1
    assert repixelled.fingerprint != small_ds.fingerprint


def _planted(ds: FERDataset) -> tuple[FERDataset, dict]:
    """Copy of ``ds`` with known duplicates: 2 PrivateTest and 1 PublicTest copies of Training
    images (one with another label) and one duplicate inside Training."""
    out = ds.subset(np.arange(len(ds)))
    train, val, test = (np.flatnonzero(out.usage == u) for u in (TRAIN, VAL, TEST))
    out.pixels[test[0]] = out.pixels[train[0]]                      # same label? not necessarily
    out.labels[test[0]] = out.labels[train[0]]
    out.pixels[test[1]] = out.pixels[train[1]]
    out.labels[test[1]] = (out.labels[train[1]] + 1) % 7             # conflicting label
    out.pixels[val[0]] = out.pixels[train[2]]
    out.labels[val[0]] = out.labels[train[2]]
    out.pixels[train[4]] = out.pixels[train[3]]                      # within Training
    out.labels[train[4]] = out.labels[train[3]]
    return out, {"test_rows": {test[0], test[1]}}


def test_duplicate_audit_counts_planted_duplicates(small_ds):
    assert data.duplicate_audit(small_ds)["n_groups"] == 0
    ds, planted = _planted(small_ds)
    audit = data.duplicate_audit(ds)
    assert audit["n_groups"] == 4
    assert audit["n_rows_in_groups"] == 8
    assert audit["n_distinct"] == len(ds) - 4
    assert audit["n_cross_split_groups"] == 3
    assert audit["n_conflicting_label_groups"] == 1
    assert audit["in_training"] == {TRAIN: 2, VAL: 1, TEST: 2}
    assert len(audit["groups"]) == 4


def test_private_test_without_training_duplicates(small_ds):
    ds, planted = _planted(small_ds)
    mask = data.without_training_duplicates(ds, TEST)
    test_rows = set(np.flatnonzero(ds.usage == TEST))
    assert set(np.flatnonzero(mask)) == test_rows - planted["test_rows"]


def test_sample_per_class_is_seeded_capped_and_filtered():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    where = np.array([True, True, True, True, False, False, False, False])
    picks = data.sample_per_class(labels, 2, seed=1, where=where, classes=range(4))
    assert [len(p) for p in picks] == [2, 1, 0, 0]
    assert set(picks[0]) <= {0, 1, 2} and picks[1].tolist() == [3]
    again = data.sample_per_class(labels, 2, seed=1, where=where, classes=range(4))
    assert all(np.array_equal(a, b) for a, b in zip(picks, again))
    assert sorted(np.concatenate(data.sample_per_class(labels)).tolist()) == list(range(8))


# --- FER+ votes ------------------------------------------------------------------------------

# FER+'s columns: neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF
MAJORITY_CASES = [  # votes, label over the eight classes, label over FER2013's seven, reason
    ([6, 0, 0, 1, 3, 0, 0, 0, 0, 0], "neutral", "neutral", ""),            # the single sad vote dropped: 6 of 9
    ([5, 1, 1, 1, 1, 1, 0, 0, 0, 0], "neutral", "neutral", ""),            # 5 of 10, but of 5 once singles go
    ([4, 0, 0, 4, 1, 0, 0, 0, 1, 0], None, None, "no majority"),           # a tie: 4 of 8 is not more than half
    ([1, 1, 1, 1, 1, 1, 1, 1, 1, 1], None, None, "no majority"),           # only single votes: nothing left
    ([3, 0, 0, 0, 3, 0, 0, 0, 4, 0], None, None, "no majority"),           # 4 of 10
    ([0, 2, 0, 0, 0, 0, 0, 0, 8, 0], None, None, "unknown"),
    ([0, 0, 0, 0, 0, 0, 0, 0, 0, 10], None, None, "not a face"),
    ([0, 0, 0, 0, 2, 0, 0, 6, 0, 2], "contempt", None, "contempt"),        # only the seven classes leave it out
    ([0, 0, 0, 0, 7, 3, 0, 0, 0, 0], "angry", "angry", ""),                # FER+'s anger is FER2013's angry
    ([0, 5, 0, 0, 0, 0, 0, 0, 4, 0], "happy", "happy", ""),                # the one 9-vote row: 5 of 9
]


def test_ferplus_majority_rule_on_hand_made_rows():
    counts = np.array([votes for votes, *_ in MAJORITY_CASES])
    eight, reasons8 = data.ferplus_majority(counts, config.FERPLUS_CLASS_NAMES)
    seven, reasons7 = data.ferplus_majority(counts, config.CLASS_NAMES)
    for (votes, label8, label7, reason), y8, y7, r8, r7 in zip(MAJORITY_CASES, eight, seven, reasons8, reasons7):
        assert y8 == (config.FERPLUS_CLASS_NAMES.index(label8) if label8 else -1), votes
        assert y7 == (config.CLASS_NAMES.index(label7) if label7 else -1), votes
        assert r7 == reason and r8 == ("" if reason == "contempt" else reason), votes
    votes = data.FerPlusVotes(counts)
    np.testing.assert_array_equal(votes.majority(config.CLASS_NAMES)[0], seven)
    assert votes.class_votes(config.CLASS_NAMES)[0].tolist() == [3, 0, 0, 0, 1, 0, 6]  # FER2013's order
    assert votes.class_votes()[7].tolist()[-1] == 6  # contempt, the eighth class


def _csv_with_votes(ds, root):
    csv_path = data.write_csv(ds, root / "fer2013" / "fer2013.csv")
    return csv_path, data.write_ferplus_votes(ds, root / "ferplus" / data.FERPLUS_FILE)


def test_ferplus_votes_are_found_beside_the_csv_checked_and_fingerprinted(small_ds, tmp_path, monkeypatch):
    csv_path, votes_path = _csv_with_votes(small_ds, tmp_path)
    ds = data.load_fer2013(csv_path, progress=False)
    np.testing.assert_array_equal(ds.ferplus.counts, small_ds.ferplus.counts)
    assert ds.describe()["ferplus_votes"] == {"source": str(votes_path),
                                              "sha256": hashlib.sha256(votes_path.read_bytes()).hexdigest()}
    test_votes = ds.ferplus_split(TEST)
    assert len(test_votes) == len(ds.split(TEST)[1]) and len(ds.subset(ds.usage == VAL).ferplus) == (ds.usage == VAL).sum()
    subset = data.save_npz(ds.subset(ds.usage == TEST), tmp_path / "fer2013" / "test-only.npz")
    assert data.load_fer2013(subset).ferplus is None  # a saved .npz need not hold the CSV's rows: not looked for
    elsewhere = votes_path.rename(tmp_path / "votes.csv")
    assert data.load_fer2013(csv_path, progress=False).ferplus is None  # no file found: FER2013 as before
    assert "ferplus_votes" not in data.load_fer2013(csv_path, progress=False).describe()
    assert data.load_fer2013(csv_path, progress=False, ferplus_path=elsewhere).ferplus.source == str(elsewhere)
    monkeypatch.setenv(config.FERPLUS_ENV_VAR, str(elsewhere))
    assert data.load_fer2013(csv_path, progress=False).ferplus.source == str(elsewhere)


def _edit_line(path, line, edit):
    lines = path.read_text().splitlines(keepends=True)
    lines[line - 1] = edit(lines[line - 1])
    path.write_text("".join(lines))


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_text("".join(p.read_text().splitlines(keepends=True)[:-1])), r"353 data rows, but the FER2013 copy has 354"),
    (lambda p: _edit_line(p, 5, lambda t: ("Training" if t.startswith("P") else "PublicTest") + t[t.index(","):]),
     r"line 5: Usage '\w+', but FER2013's row 4 is"),
    (lambda p: _edit_line(p, 7, lambda t: t.rsplit(",", 1)[0] + ",x\n"), r"line 7: vote counts .* not whole numbers"),
    (lambda p: _edit_line(p, 9, lambda t: t.rsplit(",", 1)[0] + ",11\n"), r"line 9: vote counts .* adding up to 1-10"),
    (lambda p: p.write_text(p.read_text().replace("contempt", "scorn", 1)), r"line 1: header lacks column\(s\) \['contempt'\]"),
    (lambda p: p.write_bytes(b"\x00\xff\xfe garbage"), r"cannot be read as FER\+'s vote file"),
])
def test_a_mismatched_or_damaged_vote_file_is_refused_naming_file_and_line(small_ds, tmp_path, damage, message):
    csv_path, votes_path = _csv_with_votes(small_ds, tmp_path)
    damage(votes_path)
    with pytest.raises(data.VoteFileError, match=message) as err:
        data.load_fer2013(csv_path, progress=False)
    assert str(votes_path) in str(err.value)


def test_image_folders_say_once_that_they_go_on_without_ferplus(small_ds, tmp_path, capsys):
    root = data.write_image_folder(small_ds, tmp_path / "images" / "fer2013-images")
    data.write_ferplus_votes(small_ds, tmp_path / "images" / data.FERPLUS_FILE)
    assert data.load_fer2013(root, progress=False).ferplus is None
    assert data.load_fer2013(root, progress=False).ferplus is None
    assert capsys.readouterr().out.count("cannot be mapped to FER+'s rows") == 1
    with pytest.raises(data.VoteFileError, match="cannot be mapped"):
        data.load_fer2013(root, progress=False, ferplus_path=tmp_path / "images" / data.FERPLUS_FILE)


def test_the_synthetic_stand_in_has_votes_around_its_expressions():
    from fer_utils.synthetic import make_synthetic_fer

    ds = make_synthetic_fer(700, seed=0, label_noise=0.0)
    assert (ds.ferplus.counts.sum(axis=1) == 10).all()
    labels, reasons = ds.ferplus.majority(config.CLASS_NAMES)
    kept = labels >= 0
    assert 0.75 < (labels[kept] == ds.labels[kept]).mean() < 1.0  # mostly the drawn expression, not always
    assert {"no majority", "not a face"} <= set(reasons)
    np.testing.assert_array_equal(make_synthetic_fer(700, seed=0, label_noise=0.0).ferplus.counts, ds.ferplus.counts)

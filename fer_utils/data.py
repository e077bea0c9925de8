"""Loading FER2013 from its two public layouts, caching it, fingerprinting it and auditing duplicates.

Layouts:

* the original Kaggle CSV, ``emotion,pixels,Usage`` (``.csv`` or ``.csv.gz``);
* the Kaggle image folders, ``train/<class>/Training_*.jpg`` and
  ``test/<class>/PublicTest_*.jpg`` / ``PrivateTest_*.jpg``. A folder tree whose file names
  carry no Usage prefix gets a seeded stratified 80/10/10 split, and the dataset says so.

Every loader returns a :class:`FERDataset` of uint8 pixels ``(N, 48, 48)``, int labels ``(N,)``
and Usage strings ``(N,)``. Bad input raises :class:`DataFormatError` naming the file and the row
or path at fault.

FER+ (Barsoum et al. 2016) re-labelled every FER2013 image with ten annotators' votes, in a file of
its own (``fer2013new.csv``) whose rows follow ``fer2013.csv``. :func:`load_fer2013` finds it beside
the CSV (or takes its path) and attaches it as :class:`FerPlusVotes` (``FERDataset.ferplus``): the
vote matrix, FER+'s majority labels and why a face has none. The Kaggle image folders cannot be
mapped to its rows: with them the dataset has no votes.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import os
import re
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from .progress import tqdm

from . import config
from .config import (CLASS_NAMES, FERPLUS_CLASS_NAMES, FERPLUS_EMOTIONS, FERPLUS_TO_CLASS, IMAGE_SIZE, NUM_CLASSES,
                     NUM_PIXELS, TEST, TRAIN, USAGES, VAL)
from .files import atomic_path

CACHE_VERSION = 1  #: bump when the cache format or the parsing changes
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
SYNTHETIC = "synthetic"  #: a ``data_path`` asking for the synthetic stand-in explicitly
_USAGE_PREFIX = re.compile(r"^(Training|PublicTest|PrivateTest)_", re.IGNORECASE)


class DataFormatError(ValueError):
    """The dataset on disk is not what FER2013 should look like; the message says where."""


class VoteFileError(DataFormatError):
    """A FER+ vote file that is damaged or does not match the FER2013 copy; the message names the
    file, the line and what is wrong."""


#: FER+'s vote columns in its file's order: its eight emotions, then ``unknown`` and ``NF`` (not a face).
FERPLUS_COLUMNS: tuple[str, ...] = (*FERPLUS_EMOTIONS, "unknown", "NF")
FERPLUS_FILE = "fer2013new.csv"  #: the FER+ vote file's name in FER+'s repository
#: Why FER+'s majority rule leaves a face out (:meth:`FerPlusVotes.majority`); ``""``: kept.
NO_MAJORITY, UNKNOWN, NOT_A_FACE, CONTEMPT = "no majority", "unknown", "not a face", "contempt"


@dataclass
class FerPlusVotes:
    """FER+'s ten annotators' votes for every face of a dataset, row by row.

    ``counts``: int ``(N, 10)`` in FER+'s column order (:data:`FERPLUS_COLUMNS`); ``source``: the
    vote file (or what generated the votes); ``sha256``: the file's (or the counts') digest.
    """

    counts: np.ndarray
    source: str = ""
    sha256: str = ""

    def __post_init__(self) -> None:
        self.counts = np.asarray(self.counts, dtype=np.int64).reshape(-1, len(FERPLUS_COLUMNS))
        if not self.sha256:
            self.sha256 = hashlib.sha256(np.ascontiguousarray(self.counts).tobytes()).hexdigest()

    def __len__(self) -> int:
        return len(self.counts)

    def describe(self) -> dict:
        """The ``ferplus_votes`` entry of a dataset block: where the votes come from and their sha256."""
        return {"source": self.source, "sha256": self.sha256}

    def subset(self, mask: np.ndarray) -> "FerPlusVotes":
        """The votes of the rows a boolean mask or index array selects."""
        return FerPlusVotes(self.counts[mask], self.source, self.sha256)

    def class_votes(self, class_names: tuple[str, ...] = FERPLUS_CLASS_NAMES) -> np.ndarray:
        """Votes ``(N, len(class_names))`` for a model's classes (this project's names: FER2013's
        seven, or FER+'s eight with contempt), taken from the FER+ emotion column of each class."""
        column = {FERPLUS_TO_CLASS[e]: i for i, e in enumerate(FERPLUS_EMOTIONS)}
        unknown = [name for name in class_names if name not in column]
        if unknown:
            raise ValueError(f"class(es) {unknown} have no FER+ vote column; FER+ has {sorted(column)}")
        return self.counts[:, [column[name] for name in class_names]]

    def majority(self, class_names: tuple[str, ...] = FERPLUS_CLASS_NAMES) -> tuple[np.ndarray, np.ndarray]:
        """FER+'s majority label of every face as an index into ``class_names`` (-1 where left
        out) and why a face is left out (``""`` where kept): :func:`ferplus_majority`."""
        return ferplus_majority(self.counts, class_names)


def ferplus_majority(counts: np.ndarray, class_names: tuple[str, ...] = FERPLUS_CLASS_NAMES) -> tuple[np.ndarray, np.ndarray]:
    """FER+'s majority rule (its ``majority`` mode) on vote counts ``(N, 10)`` in FER+'s order.

    Single votes are dropped; a face is kept when its top column then holds more than half of the
    remaining votes. Returns labels ``(N,)`` indexing ``class_names`` (FER+'s eight under this
    project's names, or FER2013's seven) with -1 where a face is left out, and reasons ``(N,)``:
    ``""`` (kept), ``no majority``, ``unknown`` or ``not a face`` (the top column), or the name of a
    top emotion ``class_names`` lacks (``contempt`` for FER2013's seven).
    """
    counts = np.asarray(counts, dtype=np.int64)
    kept_votes = np.where(counts > 1, counts, 0)
    top = kept_votes.argmax(axis=1)
    has_majority = 2 * kept_votes.max(axis=1) > kept_votes.sum(axis=1)
    index = {name: i for i, name in enumerate(class_names)}
    column_class = [index.get(FERPLUS_TO_CLASS[e], -1) for e in FERPLUS_EMOTIONS] + [-1, -1]
    column_reason = ["" if index.get(FERPLUS_TO_CLASS[e], -1) >= 0 else FERPLUS_TO_CLASS[e] for e in FERPLUS_EMOTIONS]
    column_reason += [UNKNOWN, NOT_A_FACE]
    labels = np.where(has_majority, np.asarray(column_class)[top], -1)
    reasons = np.where(has_majority, np.asarray(column_reason, dtype=object)[top], NO_MAJORITY).astype(str)
    return labels.astype(np.int64), reasons


@dataclass
class FERDataset:
    """FER2013 (or a stand-in) in memory.

    ``pixels``: uint8 ``(N, 48, 48)``; ``labels``: int64 ``(N,)``, indices into ``class_names``
    (FER2013's seven, ``config.CLASS_NAMES``, unless the labels come from elsewhere, e.g. FER+'s
    eight, ``config.FERPLUS_CLASS_NAMES``); ``usage``: str ``(N,)``, one of ``config.USAGES``.
    ``notes`` records anything a reader of the results must know (synthetic data, a
    fallback split, converted images). ``label_source`` says where labels that are not the
    images' own file's come from (FER+: ``{"name": "ferplus", ...}``); ``describe`` records it
    as ``labels``, so a run on them is never taken for a run on FER2013's labels. ``ferplus``: FER+'s
    votes for the same rows (:class:`FerPlusVotes`), when known; ``describe`` records their sha256.
    """

    pixels: np.ndarray
    labels: np.ndarray
    usage: np.ndarray
    name: str = "fer2013"
    source: str = ""
    synthetic: bool = False
    notes: list[str] = field(default_factory=list)
    class_names: tuple[str, ...] = CLASS_NAMES
    label_source: dict | None = None
    ferplus: FerPlusVotes | None = None

    def __post_init__(self) -> None:
        self.pixels = np.asarray(self.pixels, dtype=np.uint8)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.usage = np.asarray(self.usage, dtype=str)
        n = len(self.pixels)
        if self.pixels.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
            raise DataFormatError(f"{self.source}: pixels must be (N, 48, 48), got {self.pixels.shape}")
        if len(self.labels) != n or len(self.usage) != n:
            raise DataFormatError(f"{self.source}: pixels, labels and usage differ in length")
        if self.ferplus is not None and len(self.ferplus) != n:
            raise DataFormatError(f"{self.source}: {len(self.ferplus)} rows of FER+ votes for {n} images")

    def __len__(self) -> int:
        return len(self.labels)

    def split(self, usage: str) -> tuple[np.ndarray, np.ndarray]:
        """``(pixels, labels)`` of one split (``Training``, ``PublicTest`` or ``PrivateTest``)."""
        if usage not in USAGES:
            raise ValueError(f"unknown split {usage!r}; choose one of {USAGES}")
        mask = self.usage == usage
        if not mask.any():
            raise DataFormatError(f"{self.source}: the {usage} split is empty")
        return self.pixels[mask], self.labels[mask]

    def counts(self) -> pd.DataFrame:
        """Images per class (rows) and split (columns), with totals."""
        table = pd.crosstab(
            pd.Categorical([self.class_names[i] for i in self.labels], categories=self.class_names),
            pd.Categorical(self.usage, categories=USAGES),
            dropna=False,
        )
        table.index.name, table.columns.name = "class", "split"
        table["all"] = table.sum(axis=1)
        table.loc["all"] = table.sum(axis=0)
        return table

    @property
    def fingerprint(self) -> str:
        """The dataset fingerprint defined in DESIGN.md (16 hex characters)."""
        return fingerprint(self.pixels, self.labels)

    def describe(self) -> dict:
        """The ``dataset`` block of a metrics file: name, fingerprint and split sizes."""
        sizes = {u: int((self.usage == u).sum()) for u in USAGES}
        return {
            "name": self.name,
            "fingerprint": self.fingerprint,
            "synthetic": self.synthetic,
            "source": self.source,
            "n_train": sizes[TRAIN],
            "n_val": sizes[VAL],
            "n_test": sizes[TEST],
            "notes": list(self.notes),
            **({"labels": dict(self.label_source)} if self.label_source else {}),
            **({"ferplus_votes": self.ferplus.describe()} if self.ferplus is not None else {}),
        }

    def subset(self, mask: np.ndarray) -> "FERDataset":
        """The rows selected by a boolean mask or index array, as a new dataset."""
        return FERDataset(
            self.pixels[mask], self.labels[mask], self.usage[mask], self.name, self.source,
            self.synthetic, list(self.notes), self.class_names, self.label_source,
            None if self.ferplus is None else self.ferplus.subset(mask),
        )

    def ferplus_split(self, usage: str) -> FerPlusVotes:
        """The FER+ votes of one split's faces, in the order of :meth:`split`; a
        :class:`DataFormatError` when the dataset has none."""
        if self.ferplus is None:
            raise DataFormatError(f"{self.source}: no FER+ votes ({FERPLUS_FILE} beside the CSV, or ferplus_path=)")
        self.split(usage)  # an unknown or empty split says so
        return self.ferplus.subset(self.usage == usage)


# ---------------------------------------------------------------------------------------------
# Fingerprint and duplicates


def image_digests(pixels: np.ndarray, labels: np.ndarray | None = None) -> list[str]:
    """sha256 hex digest per image of ``bytes([label]) + pixels`` (or of the pixels alone)."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    if labels is None:
        return [hashlib.sha256(p.tobytes()).hexdigest() for p in pixels]
    return [hashlib.sha256(bytes([int(y)]) + p.tobytes()).hexdigest() for p, y in zip(pixels, labels)]


def fingerprint(pixels: np.ndarray, labels: np.ndarray) -> str:
    """DESIGN.md fingerprint: first 16 hex of sha256 over the sorted per-image digests.

    Independent of row order; changes with any pixel or label.
    """
    digests = sorted(image_digests(pixels, labels))
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()[:16]


def split_fingerprints(ds: FERDataset) -> dict[str, str]:
    """Fingerprint of the whole dataset (``all``) and of each split."""
    out = {"all": ds.fingerprint}
    for u in USAGES:
        mask = ds.usage == u
        out[u] = fingerprint(ds.pixels[mask], ds.labels[mask]) if mask.any() else ""
    return out


def duplicate_audit(ds: FERDataset) -> dict:
    """Exact duplicate pixel arrays: how many, across which splits, with conflicting labels.

    Returns a dict with ``n_images``, ``n_distinct``, ``n_groups`` (pixel arrays seen more than
    once), ``n_rows_in_groups``, ``n_cross_split_groups``, ``n_conflicting_label_groups``,
    ``in_training`` (per split: rows whose pixels also appear in Training; for Training, rows
    with another Training copy) and ``groups`` (a DataFrame, one row per duplicate group).
    """
    digests = np.array(image_digests(ds.pixels))
    frame = pd.DataFrame({"digest": digests, "label": ds.labels, "usage": ds.usage})
    sizes = frame.groupby("digest")["label"].transform("size")
    dup = frame[sizes > 1]
    groups = dup.groupby("digest").agg(
        rows=("label", "size"),
        labels=("label", lambda s: tuple(sorted(set(s)))),
        usages=("usage", lambda s: tuple(sorted(set(s)))),
    )
    groups["first_row"] = dup.reset_index().groupby("digest")["index"].min()
    train_digests = set(digests[ds.usage == TRAIN])
    in_training = {}
    for u in USAGES:
        mask = ds.usage == u
        if u == TRAIN:
            counts = Counter(digests[mask])
            in_training[u] = int(sum(c for c in counts.values() if c > 1))
        else:
            in_training[u] = int(sum(d in train_digests for d in digests[mask]))
    return {
        "n_images": len(ds),
        "n_distinct": int(frame["digest"].nunique()),
        "n_groups": len(groups),
        "n_rows_in_groups": int(groups["rows"].sum()) if len(groups) else 0,
        "n_cross_split_groups": int((groups["usages"].map(len) > 1).sum()) if len(groups) else 0,
        "n_conflicting_label_groups": int((groups["labels"].map(len) > 1).sum()) if len(groups) else 0,
        "in_training": in_training,
        "groups": groups.sort_values("first_row").reset_index(),
    }


def without_training_duplicates(ds: FERDataset, usage: str = TEST) -> np.ndarray:
    """Boolean mask over ``ds``: rows of ``usage`` whose pixels do not also appear in Training.

    Use it to report test accuracy on images the model cannot have memorised.
    """
    train_digests = set(image_digests(ds.pixels[ds.usage == TRAIN]))
    mask = ds.usage == usage
    idx = np.flatnonzero(mask)
    for i, d in zip(idx, image_digests(ds.pixels[idx])):
        if d in train_digests:
            mask[i] = False
    return mask


# ---------------------------------------------------------------------------------------------
# CSV layout


def _open_text(path: Path):
    """The file as text; ``utf-8-sig`` also reads files saved with a byte-order mark (Excel)."""
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def load_csv(path: str | os.PathLike, progress: bool = True) -> FERDataset:
    """Parse the Kaggle ``fer2013.csv`` (or ``.csv.gz``): header ``emotion,pixels,Usage``.

    Raises :class:`DataFormatError` naming the file and line for a missing column, a wrong field
    count, a label outside 0-6, an unknown Usage, a pixel field that is not 2304 integers in
    0-255, an empty file, damaged (gzip) data, or a split without rows.
    """
    path = Path(path)
    pixels, labels, usage = [], [], []
    line = 1
    try:
        with _open_text(path) as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise DataFormatError(f"{path}: the file is empty")
            header = [h.strip() for h in header]
            missing = {"emotion", "pixels", "Usage"} - set(header)
            if missing:
                raise DataFormatError(
                    f"{path}, line 1: header {header} lacks column(s) {sorted(missing)}; "
                    "expected emotion,pixels,Usage"
                )
            col = {name: header.index(name) for name in ("emotion", "pixels", "Usage")}
            for line, row in enumerate(tqdm(reader, desc=f"parsing {path.name}", unit=" rows",
                                            disable=not progress), start=2):
                if not row:
                    continue
                if len(row) != len(header):
                    raise DataFormatError(
                        f"{path}, line {line}: expected {len(header)} fields, found {len(row)}"
                    )
                labels.append(_parse_label(row[col["emotion"]], path, line))
                usage.append(_parse_usage(row[col["Usage"]], path, line))
                pixels.append(_parse_pixels(row[col["pixels"]], path, line))
    except (OSError, EOFError, UnicodeDecodeError, csv.Error, zlib.error) as err:
        if isinstance(err, FileNotFoundError):
            raise
        where = f", after line {line}" if line > 1 else ""
        raise DataFormatError(f"{path}{where}: cannot be read as a (gzipped) CSV file "
                              f"({type(err).__name__}: {err}); the file is damaged: copy it again") from None
    if not labels:
        raise DataFormatError(f"{path}: header found but no data rows")
    ds = FERDataset(np.stack(pixels), np.array(labels), np.array(usage), source=str(path))
    require_every_split(ds, "no row has Usage {usage}")
    return ds


def require_every_split(ds: FERDataset, what_is_missing: str) -> None:
    """:class:`DataFormatError` naming ``ds.source`` when a split has no images;
    ``what_is_missing`` says so in the layout's words (``{usage}`` is filled in)."""
    for usage in USAGES:
        if not (ds.usage == usage).any():
            raise DataFormatError(f"{ds.source}: {what_is_missing.format(usage=usage)}; FER2013 needs images in "
                                  f"all three splits ({', '.join(USAGES)})")


def _parse_label(text: str, path: Path, line: int) -> int:
    try:
        label = int(text)
    except ValueError:
        raise DataFormatError(f"{path}, line {line}: emotion {text!r} is not an integer") from None
    if not 0 <= label < NUM_CLASSES:
        raise DataFormatError(f"{path}, line {line}: emotion {label} is outside 0-{NUM_CLASSES - 1}")
    return label


def _parse_usage(text: str, path: Path, line: int) -> str:
    text = text.strip()
    if text not in USAGES:
        raise DataFormatError(f"{path}, line {line}: Usage {text!r} is not one of {list(USAGES)}")
    return text


def _parse_pixels(text: str, path: Path, line: int) -> np.ndarray:
    values = text.split()
    if len(values) != NUM_PIXELS:
        raise DataFormatError(
            f"{path}, line {line}: pixels has {len(values)} values, expected {NUM_PIXELS} (48x48)"
        )
    try:
        array = np.array(values, dtype=np.int64)
    except ValueError:
        bad = next(v for v in values if not v.lstrip("-").isdigit())
        raise DataFormatError(f"{path}, line {line}: pixel value {bad!r} is not an integer") from None
    if array.min() < 0 or array.max() > 255:
        bad = array[(array < 0) | (array > 255)][0]
        raise DataFormatError(f"{path}, line {line}: pixel value {bad} is outside 0-255")
    return array.astype(np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE)


# ---------------------------------------------------------------------------------------------
# FER+ votes


def load_ferplus_votes(path: str | os.PathLike, usage: np.ndarray) -> FerPlusVotes:
    """Read FER+'s ``fer2013new.csv`` for the FER2013 rows whose Usage is ``usage`` (in order).

    Raises :class:`VoteFileError` naming the file (and line) for an unreadable file, missing
    columns, a row count or a row's Usage that differs from the FER2013 copy's, and vote counts
    that are not whole numbers from 0 to 10 adding up to 1-10.
    """
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, zlib.error) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise VoteFileError(f"{path}: cannot be read as FER+'s vote file ({type(err).__name__}: {err}); "
                            "copy it again") from None
    table.columns = [c.strip() for c in table.columns]
    missing = [c for c in ("Usage", *FERPLUS_COLUMNS) if c not in table.columns]
    if missing:
        raise VoteFileError(f"{path}, line 1: header lacks column(s) {missing}; expected "
                            f"Usage,Image name,{','.join(FERPLUS_COLUMNS)}")
    usage = np.asarray(usage, dtype=str)
    if len(table) != len(usage):
        raise VoteFileError(f"{path}: {len(table):,} data rows, but the FER2013 copy has {len(usage):,}: "
                            "not the FER+ file of this copy (its rows follow fer2013.csv one to one)")
    differs = np.flatnonzero(table["Usage"].str.strip().to_numpy(dtype=str) != usage)
    if len(differs):
        row = differs[0]
        raise VoteFileError(f"{path}, line {row + 2}: Usage {table['Usage'].iloc[row]!r}, but FER2013's row "
                            f"{row + 1} is {usage[row]!r} ({len(differs):,} rows differ): the rows are not in "
                            "fer2013.csv's order")
    counts = table[list(FERPLUS_COLUMNS)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(counts) | (counts != np.round(counts)) | (counts < 0) | (counts > 10)
    totals = np.where(bad, 0, counts).sum(axis=1)
    bad_rows = np.flatnonzero(bad.any(axis=1) | (totals < 1) | (totals > 10))
    if len(bad_rows):
        row = bad_rows[0]
        values = dict(zip(FERPLUS_COLUMNS, table[list(FERPLUS_COLUMNS)].iloc[row]))
        raise VoteFileError(f"{path}, line {row + 2}: vote counts {values} are not whole numbers 0-10 "
                            f"adding up to 1-10 (ten annotators)")
    return FerPlusVotes(counts.astype(np.int64), str(path), hashlib.sha256(path.read_bytes()).hexdigest())


def find_ferplus_votes(data_path: str | os.PathLike) -> Path | None:
    """FER+'s vote file for the FER2013 CSV at ``data_path``: ``$FERPLUS`` if set, else
    ``fer2013new.csv`` beside the CSV, in a ``ferplus/`` folder beside it, or in a ``ferplus/``
    folder beside the CSV's folder (``data/fer2013/`` and ``data/ferplus/``). None when there is none."""
    given = os.environ.get(config.FERPLUS_ENV_VAR)
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{path}: FER+ vote file not found (given as ${config.FERPLUS_ENV_VAR})")
        return path
    path = Path(data_path).expanduser().absolute()
    for folder in dict.fromkeys((path.parent, path.resolve().parent)):  # the link's folder, then its target's
        for candidate in (folder / FERPLUS_FILE, folder / "ferplus" / FERPLUS_FILE,
                          folder.parent / "ferplus" / FERPLUS_FILE):
            if candidate.is_file():
                return candidate
    return None


_said_no_ferplus: set[str] = set()


def attach_ferplus(ds: FERDataset, data_path: str | os.PathLike, ferplus_path: str | os.PathLike | None = None) -> FERDataset:
    """``ds`` with FER+'s votes (``ds.ferplus``) from ``ferplus_path`` or the file
    :func:`find_ferplus_votes` finds for the CSV ``data_path``; unchanged without one. The Kaggle image
    folders cannot be mapped to FER+'s rows: with them it says so once and goes on without."""
    data_path = Path(data_path)
    if data_path.is_dir():
        if ferplus_path is not None:
            raise VoteFileError(f"{ferplus_path}: FER+ votes follow fer2013.csv's rows; the image folder "
                                f"{data_path} cannot be mapped to them: use the CSV")
        if str(data_path) not in _said_no_ferplus:
            _said_no_ferplus.add(str(data_path))
            print(f"{data_path}: image folders cannot be mapped to FER+'s rows; going on without FER+ labels "
                  "(use fer2013.csv for them)")
        return ds
    if ferplus_path is not None:
        path = Path(ferplus_path).expanduser()
    else:  # found only for the CSV whose rows the file follows (not for a saved .npz, a subset maybe)
        path = find_ferplus_votes(data_path) if data_path.name.endswith((".csv", ".csv.gz")) else None
    if path is not None:
        ds.ferplus = load_ferplus_votes(path, ds.usage)
    return ds


# ---------------------------------------------------------------------------------------------
# Image-folder layout


def load_image_folder(root: str | os.PathLike, seed: int = 0, progress: bool = True) -> FERDataset:
    """Read ``<root>/<any>/<class>/<image>`` (Kaggle's ``train/`` and ``test/`` folders).

    Usage comes from the file-name prefix (``Training_``, ``PublicTest_``, ``PrivateTest_``).
    If no file has one, a seeded stratified 80/10/10 split is made and recorded in ``notes``.
    Colour images are converted to grayscale (noted); images that are not 48x48, unreadable files
    and class folders outside ``config.CLASS_NAMES`` raise :class:`DataFormatError`.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataFormatError(f"{root}: no image files found (expected <split>/<class>/<image>.jpg)")
    class_index = {name: i for i, name in enumerate(CLASS_NAMES)}
    pixels, labels, prefixes = [], [], []
    converted = 0
    for path in tqdm(files, desc=f"reading {root.name}/", unit=" images", disable=not progress):
        folder = path.parent.name.lower()
        if folder not in class_index:
            raise DataFormatError(
                f"{path.parent}: unknown class folder {path.parent.name!r}; "
                f"expected one of {list(CLASS_NAMES)}"
            )
        image, was_converted = _read_gray_image(path)
        converted += was_converted
        pixels.append(image)
        labels.append(class_index[folder])
        match = _USAGE_PREFIX.match(path.name)
        prefixes.append(_canonical_usage(match.group(1)) if match else None)
    labels = np.array(labels)
    notes = []
    if converted:
        notes.append(f"{converted} colour image(s) converted to grayscale")
    if all(p is None for p in prefixes):
        usage = stratified_split(labels, seed=seed)
        notes.append(
            f"file names carry no Usage prefix: seeded (seed={seed}) stratified 80/10/10 split "
            "into Training/PublicTest/PrivateTest; results are not comparable with the official split"
        )
    elif any(p is None for p in prefixes):
        bad = files[prefixes.index(None)]
        raise DataFormatError(
            f"{bad}: file name has no Training_/PublicTest_/PrivateTest_ prefix, while others do"
        )
    else:
        usage = np.array(prefixes)
    ds = FERDataset(np.stack(pixels), labels, usage, source=str(root), notes=notes)
    require_every_split(ds, "no {usage} images (Kaggle's layout: train/<class>/Training_*.jpg, "
                            "test/<class>/PublicTest_*.jpg and PrivateTest_*.jpg)")
    return ds


def _canonical_usage(prefix: str) -> str:
    return {u.lower(): u for u in USAGES}[prefix.lower()]


def _read_gray_image(path: Path) -> tuple[np.ndarray, bool]:
    try:
        with Image.open(path) as image:
            image.load()
            converted = image.mode not in ("L", "P", "1", "I", "I;16")
            gray = image.convert("L")
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DataFormatError(f"{path}: unreadable image ({err})") from None
    if gray.size != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataFormatError(
            f"{path}: image is {gray.size[0]}x{gray.size[1]}, expected 48x48 (FER2013 faces); "
            "resize your copy or remove the file"
        )
    return np.asarray(gray, dtype=np.uint8), converted


def sample_per_class(labels: np.ndarray, per_class: int | None = None, seed: int | np.random.Generator = 0,
                     where: np.ndarray | None = None, classes=None) -> list[np.ndarray]:
    """Seeded random row indices of every class (``classes``, default the sorted labels present),
    one array per class in random order: at most ``per_class`` (None: all) of the rows where
    ``where`` (bool ``(N,)``) is True. A Generator as ``seed`` continues its stream."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    where = np.ones(len(labels), bool) if where is None else np.asarray(where, bool)
    classes = np.unique(labels) if classes is None else classes
    return [rng.permutation(np.flatnonzero((labels == c) & where))[:per_class] for c in classes]


def stratified_split(labels: np.ndarray, seed: int = 0, fractions=(0.8, 0.1, 0.1)) -> np.ndarray:
    """Seeded stratified assignment of Training/PublicTest/PrivateTest to each label."""
    usage = np.empty(len(labels), dtype=object)
    for idx in sample_per_class(labels, seed=seed):
        n_train = int(round(fractions[0] * len(idx)))
        n_val = int(round(fractions[1] * len(idx)))
        usage[idx[:n_train]] = TRAIN
        usage[idx[n_train:n_train + n_val]] = VAL
        usage[idx[n_train + n_val:]] = TEST
    return usage.astype(str)


# ---------------------------------------------------------------------------------------------
# Dispatch and cache


def load_fer2013(path: str | os.PathLike, cache: bool = True, seed: int = 0,
                 progress: bool = True, ferplus_path: str | os.PathLike | None = None) -> FERDataset:
    """Load FER2013 from a CSV, a CSV.gz, an image folder or a cached ``.npz``, with FER+'s votes
    (``ferplus``) from ``ferplus_path`` or found beside the CSV (:func:`attach_ferplus`).

    With ``cache`` the parsed arrays are kept in ``config.cache_dir()`` keyed by the source's
    path, size and modification time, so the CSV is parsed once.
    """
    return attach_ferplus(_load_images(path, cache, seed, progress), path, ferplus_path)


def _load_images(path: str | os.PathLike, cache: bool, seed: int, progress: bool) -> FERDataset:
    """:func:`load_fer2013` without the votes."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no such file or folder; point {config.DATA_ENV_VAR}= (or data_path) at "
            "fer2013.csv, fer2013.csv.gz or the image folder"
        )
    if path.suffix == ".npz":
        return _read_npz(path)
    cache_file = config.cache_dir() / f"{path.name}-{_source_key(path, seed)}.npz" if cache else None
    if cache_file is not None and cache_file.exists():
        ds = _read_npz(cache_file)
        ds.source = str(path)
        return ds
    if path.is_dir():
        ds = load_image_folder(path, seed=seed, progress=progress)
    elif path.name.endswith((".csv", ".csv.gz")):
        ds = load_csv(path, progress=progress)
    else:
        raise DataFormatError(f"{path}: expected a .csv, .csv.gz, .npz file or an image folder")
    if cache_file is not None:
        save_npz(ds, cache_file)
    return ds


def _source_key(path: Path, seed: int) -> str:
    """Hash of what identifies a source's content cheaply: path, sizes, mtimes."""
    h = hashlib.sha1(f"v{CACHE_VERSION}|{path.resolve()}|seed={seed}".encode())
    entries = sorted(path.rglob("*")) if path.is_dir() else [path]
    for entry in entries:
        if entry.is_file():
            st = entry.stat()
            h.update(f"{entry.relative_to(path.parent)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:12]


def save_npz(ds: FERDataset, path: str | os.PathLike) -> Path:
    """Write a dataset to a compressed ``.npz`` atomically (temp file, then rename)."""
    path = Path(path)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(
            tmp, pixels=ds.pixels, labels=ds.labels, usage=ds.usage, name=ds.name, source=ds.source,
            synthetic=ds.synthetic, notes=np.array(ds.notes, dtype=str),
        )
    return path


def _read_npz(path: Path) -> FERDataset:
    try:
        with np.load(path, allow_pickle=False) as z:
            return FERDataset(
                z["pixels"], z["labels"], z["usage"], name=str(z["name"]), source=str(z["source"]),
                synthetic=bool(z["synthetic"]), notes=[str(n) for n in z["notes"]],
            )
    except (OSError, KeyError, ValueError) as err:
        raise DataFormatError(f"{path}: not a dataset file written by fer_utils ({err})") from err


def find_dataset(data_path: str | os.PathLike | None = None) -> Path | None:
    """Resolve the FER2013 copy to use: ``data_path``, else ``$FER2013``, else ``data/``.

    Returns None when there is none, or when ``data_path`` is ``"synthetic"``: the caller then
    uses the synthetic stand-in. A path that is given but does not exist raises
    FileNotFoundError rather than silently falling back.
    """
    given = data_path or os.environ.get(config.DATA_ENV_VAR)
    if given == SYNTHETIC:
        return None
    if given:
        path = Path(given).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"{path}: FER2013 copy not found (given as data_path or ${config.DATA_ENV_VAR})")
        return path
    for candidate in config.DEFAULT_DATA_CANDIDATES:
        path = config.DATA_DIR / candidate
        if path.exists():
            return path
    return None


# ---------------------------------------------------------------------------------------------
# Writers (fixtures for tests, or exporting a stand-in in the public layouts)


def write_csv(ds: FERDataset, path: str | os.PathLike) -> Path:
    """Write ``ds`` in the Kaggle CSV layout (gzipped if the name ends in ``.gz``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8", newline="") as handle:
        handle.write("emotion,pixels,Usage\n")
        for pixels, label, usage in zip(ds.pixels, ds.labels, ds.usage):
            handle.write(f"{label},{' '.join(map(str, pixels.ravel()))},{usage}\n")
    return path


def write_ferplus_votes(ds: FERDataset, path: str | os.PathLike) -> Path:
    """Write ``ds``'s FER+ votes in FER+'s ``fer2013new.csv`` layout, rows in ``ds``'s order (the
    image name empty where the votes say not a face, as in FER+'s file)."""
    if ds.ferplus is None:
        raise ValueError(f"{ds.source}: the dataset has no FER+ votes to write")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _, reasons = ds.ferplus.majority()
    names = [("" if why == NOT_A_FACE else f"fer{i:07d}.png") for i, why in enumerate(reasons)]
    table = pd.DataFrame(ds.ferplus.counts, columns=list(FERPLUS_COLUMNS))
    table.insert(0, "Image name", names)
    table.insert(0, "Usage", ds.usage)
    table.to_csv(path, index=False)
    return path


def write_image_folder(ds: FERDataset, root: str | os.PathLike, usage_prefix: bool = True,
                       suffix: str = ".png") -> Path:
    """Write ``ds`` as Kaggle's ``train|test/<class>/<Usage>_<i><suffix>`` folders.

    PNG (default) is lossless, so reading the folder back gives the same pixels and fingerprint.
    Without ``usage_prefix`` the files are named ``<i><suffix>`` (no official split).
    """
    root = Path(root)
    for i, (pixels, label, usage) in enumerate(zip(ds.pixels, ds.labels, ds.usage)):
        folder = root / ("train" if usage == TRAIN else "test") / CLASS_NAMES[label]
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{usage}_{i}{suffix}" if usage_prefix else f"{i}{suffix}"
        Image.fromarray(pixels, mode="L").save(folder / name)
    return root

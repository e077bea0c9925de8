"""The README and the pages under docs/ show the committed results: every number in the numeric
columns of the results tables (the README's, and the full one in docs/results.md) is a committed
run's (a metrics file in reports/metrics/, or notebook 12's table of the `fer` package), and every
accuracy there carries its 95% Wilson interval, recomputed here from the run's metrics file
(``correct = round(accuracy * n)``); the FER+ column shows the run's FER+ score or says why it has none. A re-run that replaces a metrics file fails this test until
the README and the docs say the new number. A row over seeds writes ``mean ± sd`` and is checked
against the seed runs of one recipe (the same notebook, model, training data and settings but the
seed), as many as the row says. The other accuracy tables of docs/ (ablations,
transfer learning) and every interval written beside a number in their prose are checked the
same way, and so are the pages' links and their ``make NN ARGS=...`` commands."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fer_utils.config import PROJECT_ROOT, TEST, VAL
from fer_utils.evaluate import CLEAN_TEST, accuracy_interval, ferplus_cell, was_capped

README = PROJECT_ROOT / "README.md"
DOCS = PROJECT_ROOT / "docs"
REPORTS = PROJECT_ROOT / "reports"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
HEADER = "| notebook | model | training data | epochs | train min | PublicTest | PrivateTest | balanced | clean |"
COLUMNS = ("epochs", "train min", "PublicTest", "PrivateTest", "balanced", "clean")
SPLITS = {"PublicTest": VAL, "PrivateTest": TEST, "clean": CLEAN_TEST}  # the accuracy columns
#: ``value (low–high)``: an accuracy and its interval (an en dash or a hyphen between the bounds; the
#: value may be bold).
INTERVAL = re.compile(r"(\d+(?:\.\d+)?)%?\**\s*\((\d+(?:\.\d+)?)\s*[–-]\s*(\d+(?:\.\d+)?)\)")
#: ``mean ± sd``: a recipe's mean over its seeds and their standard deviation.
SPREAD = re.compile(r"(\d+(?:\.\d+)?)\**\s*±\s*(\d+(?:\.\d+)?)")
NUMBER = re.compile(r"\d+(?:\.\d+)?")


def decimals(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


def rounds_to(value: float, shown: str) -> bool:
    """``shown`` is ``value`` rounded to the decimals it shows."""
    return abs(value - float(shown)) <= 0.5 * 10 ** -decimals(shown) + 1e-9


def parse_cell(cell: str) -> dict:
    """A table cell's numbers (a range ``a-b`` gives two, ``-`` none) and, where the cell is
    ``value (low–high)`` or ``mean ± sd``, its accuracy and interval or its mean and spread as written."""
    match, spread = INTERVAL.search(cell), SPREAD.search(cell)
    rest = SPREAD.sub(r"\1", INTERVAL.sub(r"\1", cell))
    return {"numbers": [float(x) for x in NUMBER.findall(rest)],
            "interval": match.groups() if match else None, "spread": spread.groups() if spread else None}


def table_rows(text: str, header: str) -> list[list[str]]:
    """The cells of each row of the markdown table whose header line starts with ``header``."""
    lines = text[text.index(header):].splitlines()
    names = [c.strip() for c in lines[0].strip().strip("|").split("|")]
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(names, [c.strip() for c in line.strip().strip("|").split("|")])))
    return rows


def results_rows(text: str) -> list[dict]:
    """The results table's rows: notebook, model, and for each numeric column its numbers and
    (accuracy columns) the interval or the spread over seeds as written."""
    rows = []
    for cells in table_rows(text, HEADER):
        parsed = {name: parse_cell(cells.get(name, "")) for name in (*COLUMNS, "FER+")}
        rows.append({"notebook": re.search(r"\d\d", cells["notebook"]).group(), "model": cells["model"],
                     **{name: parsed[name]["numbers"] for name in COLUMNS},
                     "intervals": {name: p["interval"] for name, p in parsed.items() if p["interval"] and name in COLUMNS},
                     "spreads": {name: p["spread"] for name, p in parsed.items() if p["spread"]}, "cells": cells})
    return rows


def wilson(split_metrics: dict) -> tuple[float, float]:
    n = split_metrics["n"]
    return accuracy_interval(round(split_metrics["accuracy"] * n), n)


def records() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((REPORTS / "metrics").glob("*.json"))]


def committed_results() -> list[dict]:
    """The numbers each committed run would show in the table, with its notebook number and the
    Wilson interval of each accuracy column."""
    results = []
    for r in records():
        m = r["metrics"]
        ferplus = m[TEST].get("ferplus")
        settings = {k: v for k, v in r["params"].items() if k not in ("seed", "time_budget_s")}
        results.append({"notebook": r["notebook"][:2], "epochs": r["train"].get("epochs"),
                        "recipe": json.dumps([r["notebook"], r["model"], r["sampling"], settings], sort_keys=True),
                        "counted": not was_capped(r["train"]),
                        "train min": r["train"]["seconds"] / 60,
                        "PublicTest": 100 * m[VAL]["accuracy"], "PrivateTest": 100 * m[TEST]["accuracy"],
                        "balanced": 100 * m[TEST]["balanced_accuracy"], "clean": 100 * m[CLEAN_TEST]["accuracy"],
                        "intervals": {c: wilson(m[s]) for c, s in SPLITS.items()},
                        "FER+": (100 * ferplus["accuracy"], *ferplus["accuracy_95"]) if ferplus else None,
                        "FER+ cell": ferplus_cell(r)})
    # The fer package's model, scored by notebook 12 on the same faces as the release (whose
    # metrics file gives the number of faces of each split).
    fer = pd.read_csv(REPORTS / "tables" / "12_champion_against_fer_package.csv", index_col=0)
    row = fer.loc[next(i for i in fer.index if i.startswith("fer package"))]
    release = json.loads((REPORTS / "metrics" / "12_champion_cnn_none_prior_corrected_cpu.json").read_text())
    accuracy = {"PublicTest": row["PublicTest accuracy %"], "PrivateTest": row["PrivateTest accuracy %"],
                "clean": row["PrivateTest_clean accuracy %"]}
    scored = "PrivateTest FER+ majority %" in row  # the table of a notebook 12 run with FER+ scores
    results.append({"notebook": "12", "epochs": None, "train min": None, "recipe": None, **accuracy,
                    "balanced": row["PrivateTest balanced accuracy %"],
                    "intervals": {c: wilson({"accuracy": accuracy[c] / 100, "n": release["metrics"][s]["n"]})
                                  for c, s in SPLITS.items()},
                    "FER+": (row["PrivateTest FER+ majority %"], *map(float, row["PrivateTest FER+ 95% interval"].split("-")))
                    if scored else None, "FER+ cell": "not scored yet"})
    return results


def seed_groups(results: list[dict]) -> list[list[dict]]:
    """The finished runs of each recipe trained with more than one seed."""
    groups = {}
    for r in results:
        if r["recipe"] and r["counted"]:
            groups.setdefault(r["recipe"], []).append(r)
    return [g for g in groups.values() if len(g) > 1]


def shows_spread(group: list[dict], column: str, written: tuple[str, str]) -> bool:
    """``written`` (mean, sd as text) is the mean and standard deviation of ``column`` over ``group``."""
    values = [r[column][0] if column == "FER+" and r[column] else r[column] for r in group]
    return (None not in values and rounds_to(float(np.mean(values)), written[0])
            and rounds_to(float(np.std(values, ddof=1)), written[1]))


def shows(result: dict, column: str, number: float) -> bool:
    value = result[column]
    return value is not None and abs(value - number) <= 0.05 + 1e-9  # the README rounds to one decimal


def shows_interval(result: dict, column: str, written: tuple[str, str, str]) -> bool:
    """``written`` (value, low, high as text) is ``result``'s accuracy in ``column`` with its
    Wilson interval, each rounded to the decimals written."""
    value, low, high = written
    expected_low, expected_high = result["intervals"][column]
    return (result[column] is not None and rounds_to(result[column], value)
            and rounds_to(expected_low, low) and rounds_to(expected_high, high))


def test_the_parser_reads_ranges_bold_italics_and_intervals():
    text = (HEADER + " claim |\n|---|\n| 06 | VGG | ROS | 5 | 6.9-11.3 | **44.3** (42.7–45.9) | "
            "*57.5 (55.9–59.1), seen* | - | 41.6 (40.0-43.2) | - |\n| [12](docs/x.md) | C | T | 1 | 2 | 3 | 4 | 5 | 6 | - |\n\nafter")
    row, other = results_rows(text)
    assert row["train min"] == [6.9, 11.3] and row["PublicTest"] == [44.3] and row["PrivateTest"] == [57.5]
    assert row["balanced"] == [] and row["clean"] == [41.6]
    assert row["intervals"] == {"PublicTest": ("44.3", "42.7", "45.9"), "PrivateTest": ("57.5", "55.9", "59.1"),
                                "clean": ("41.6", "40.0", "43.2")}
    assert other["notebook"] == "12" and other["intervals"] == {} and other["spreads"] == {}


def test_the_parser_reads_a_mean_and_spread_over_seeds():
    text = HEADER + " FER+ |\n|---|\n| 12 | C, 3 seeds | T | 140 | 85.9–215.8 | 66.82 ± 0.13 | **68.47** ± 0.34 | 65.99 ± 0.61 | - | 67.63 ± 0.54 |\n"
    (row,) = results_rows(text)
    assert row["PublicTest"] == [66.82] and row["PrivateTest"] == [68.47] and row["train min"] == [85.9, 215.8]
    assert row["spreads"] == {"PublicTest": ("66.82", "0.13"), "PrivateTest": ("68.47", "0.34"),
                              "balanced": ("65.99", "0.61"), "FER+": ("67.63", "0.54")}
    assert row["intervals"] == {}


@pytest.mark.parametrize("written, ok", [(("68.47", "0.34"), True), (("68.48", "0.34"), False), (("68.47", "0.47"), False)])
def test_a_wrong_mean_or_spread_over_seeds_is_caught(written, ok):
    group = [{"PrivateTest": 68.77}, {"PrivateTest": 68.10}, {"PrivateTest": 68.54}]
    assert shows_spread(group, "PrivateTest", written) is ok


@pytest.mark.parametrize("page", [README, DOCS / "results.md"], ids=lambda p: p.name)
def test_every_number_of_the_results_table_is_a_committed_run(page):
    rows, results = results_rows(page.read_text()), committed_results()
    assert len(rows) >= 10
    for row in rows:
        mine = [r for r in results if r["notebook"] == row["notebook"]]
        given = {c: row[c] for c in COLUMNS if row[c]}
        where = f"{page.name} row {row['notebook']} '{row['model'][:60]}'"
        if row["spreads"]:  # a recipe over seeds: mean ± sd over its seed runs, the other numbers theirs
            seeds = int(re.search(r"(\d+) seeds", row["model"]).group(1))
            assert any(len(g) == seeds and all(shows_spread(g, c, s) for c, s in row["spreads"].items())
                       and all(any(shows(r, c, n) for r in g) for c, v in given.items() if c not in row["spreads"] for n in v)
                       for g in seed_groups(results) if g[0]["notebook"] == row["notebook"]), \
                f"{where}: {row['spreads']} is no recipe's mean ± sd over {seeds} committed seed runs"
        elif all(len(v) == 1 for v in given.values()):  # one run: one metrics file shows every number
            assert any(all(shows(r, c, v[0]) for c, v in given.items())
                       and all(shows_interval(r, c, w) for c, w in row["intervals"].items()) for r in mine), \
                f"{where}: {given} with intervals {row['intervals']} is no committed run's"
        else:  # a range over several runs: each end is one of the notebook's runs
            for column, numbers in given.items():
                for number in numbers:
                    assert any(shows(r, column, number) for r in mine), \
                        f"{where}: {column} {number} is no committed run's"


#: What the FER+ column writes for a run without FER+ scores, by ``evaluate.ferplus_cell``'s reason.
FERPLUS_TEXT = {"model and per-face predictions gone": "gone", "n/a: leaky resampled split": "n/a (leaky split)",
                "not scored yet": "at 12's next run"}


@pytest.mark.parametrize("page", [README, DOCS / "results.md"], ids=lambda p: p.name)
def test_the_fer_plus_column_shows_the_runs_score_or_why_it_has_none(page):
    results = committed_results()
    for row in results_rows(page.read_text()):
        given = {c: row[c] for c in COLUMNS if row[c]}
        if row["spreads"] or not all(len(v) == 1 for v in given.values()):
            continue  # a range over several runs, or a mean over seeds (checked above)
        run = next(r for r in results if r["notebook"] == row["notebook"] and all(shows(r, c, v[0]) for c, v in given.items()))
        written, where = row["cells"]["FER+"], f"{page.name} row {row['notebook']} '{row['model'][:60]}'"
        if run["FER+"] is None:
            assert written == FERPLUS_TEXT[run["FER+ cell"]], f"{where}: FER+ cell {written!r} for a run that has {run['FER+ cell']!r}"
        else:
            value, low, high = parse_cell(written)["interval"] or ("nan",) * 3
            assert all(rounds_to(x, shown) for x, shown in zip(run["FER+"], (value, low, high))), \
                f"{where}: FER+ {written!r} is not the run's {run['FER+']}"


@pytest.mark.parametrize("page", [README, DOCS / "results.md"], ids=lambda p: p.name)
def test_every_accuracy_of_the_results_table_carries_its_interval(page):
    for row in results_rows(page.read_text()):
        for column in SPLITS:
            if row[column]:
                assert column in row["intervals"] or column in row["spreads"], \
                    f"{page.name} row {row['notebook']} '{row['model'][:60]}': {column} {row[column]} has no interval"


@pytest.mark.parametrize("number, ok", [(61.6, True), (61.7, False)])
def test_a_changed_number_is_caught(number, ok):
    result = {"PrivateTest": 61.63}
    assert shows(result, "PrivateTest", number) is ok


@pytest.mark.parametrize("written, ok", [(("68.6", "67.1", "70.1"), True), (("68.6", "67.0", "70.1"), False),
                                         (("68.6", "67.1", "70.2"), False), (("68.7", "67.1", "70.1"), False)])
def test_a_wrong_interval_is_caught(written, ok):
    m = {"accuracy": 2463 / 3589, "n": 3589}  # the release's PrivateTest: 68.63%, Wilson 67.1-70.1
    result = {"PrivateTest": 100 * m["accuracy"], "intervals": {"PrivateTest": wilson(m)}}
    assert shows_interval(result, "PrivateTest", written) is ok


# The other tables with intervals: the file, the start of the header line, the notebook, each
# accuracy column's split, and whether one run shows every accuracy of a row.
OTHER_TABLES = [
    ("champion.md", "| change to the recipe |", "12", {"PublicTest %": VAL, "PrivateTest %": TEST}, True),
    ("transfer.md", "| backbone |", "05",
     {"frozen: PrivateTest": TEST, "fine-tuned from scratch: PrivateTest": TEST}, False),
    ("transfer.md", "| EfficientNet-Lite0 run |", "05", {"PublicTest": VAL, "PrivateTest": TEST}, True),
    ("results.md", "| run | targets |", "13", {"FER+ PublicTest": VAL, "FER+ PrivateTest": TEST}, True),
]


@pytest.mark.parametrize("name, header, notebook, splits, one_run", OTHER_TABLES, ids=[t[0] for t in OTHER_TABLES])
def test_the_other_accuracy_tables_show_committed_runs_with_their_intervals(name, header, notebook, splits, one_run):
    runs = [r["metrics"] for r in records() if r["notebook"][:2] == notebook]
    rows = table_rows((DOCS / name).read_text(), header)
    assert len(rows) >= 3
    for row in rows:
        cells = {column: parse_cell(row[column])["interval"] for column in splits}
        assert all(cells.values()), f"{name}: {row}: an accuracy without its interval"

        def matches(m, column):
            value, low, high = cells[column]
            wilson_low, wilson_high = wilson(m[splits[column]])
            return (rounds_to(100 * m[splits[column]]["accuracy"], value)
                    and rounds_to(wilson_low, low) and rounds_to(wilson_high, high))

        if one_run:
            assert any(all(matches(m, c) for c in splits) for m in runs), f"{name}: {row} is no committed run's"
        else:
            for column in splits:
                assert any(matches(m, column) for m in runs), f"{name}: {column} {cells[column]} is no committed run's"


def test_every_interval_written_beside_a_number_is_a_wilson_interval():
    """Wherever the README or a docs page writes ``68.63% (67.1–70.1)``, the bounds are the Wilson
    interval of a count of faces that gives that accuracy on one of the test sets the metrics
    files evaluate on (3,589, 3,301, 6,293, ... faces)."""
    scored = [m for r in records() for m in r["metrics"].values() if isinstance(m, dict) and "n" in m]
    sizes = sorted({m["n"] for m in scored} | {m["ferplus"]["n"] for m in scored if "ferplus" in m})
    found = 0
    for page in PAGES:
        for value, low, high in INTERVAL.findall(page.read_text()):
            if float(low) >= float(high) or not float(low) <= float(value) <= float(high):
                continue  # not an accuracy and its interval (e.g. "(3 (004)"): nothing to check
            found += 1
            spread = {n: int(n * 0.5 * 10 ** -decimals(value) / 100) + 1 for n in sizes}  # faces a rounding hides
            counts = [(c, n) for n in sizes
                      for c in range(round(float(value) / 100 * n) - spread[n], round(float(value) / 100 * n) + spread[n] + 1)
                      if 0 <= c <= n and rounds_to(100 * c / n, value)]
            assert any(rounds_to(accuracy_interval(c, n)[0], low) and rounds_to(accuracy_interval(c, n)[1], high)
                       for c, n in counts), f"{page.name}: {value} ({low}-{high}) is no Wilson interval of {sizes} faces"
    assert found >= 60


def slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lstrip("#").strip())
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def prose(text: str) -> str:
    """``text`` without its fenced code blocks."""
    return re.sub(r"```.*?```", "", text, flags=re.S)


def test_slug():
    assert slug("## What the data looks like ([01_eda](../reports/notebooks/01_eda.ipynb))") == \
        "what-the-data-looks-like-01_eda"
    assert slug("## How long `make all` takes") == "how-long-make-all-takes"
    assert slug("## Deployment (09, 10), on this 2-core CPU") == "deployment-09-10-on-this-2-core-cpu"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_links_point_to_files_and_headings_that_exist(page):
    for target in re.findall(r"\]\(([^)\s]+)\)", prose(page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name}: link to {target}: no such file"
        if anchor:
            headings = [slug(line) for line in prose(file.read_text()).splitlines() if line.startswith("#")]
            assert anchor in headings, f"{page.name}: link to {target}: no such heading in {file.name}"


def test_the_readme_is_a_front_page():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    assert "make test" in text and "make all FER2013=" in text
    assert "make test" in (PROJECT_ROOT / ".ci" / "run").read_text()  # the README's test command is CI's

"""The README's results table comes from the committed results: every number in its numeric
columns is a committed run's (a metrics file in reports/metrics/, or notebook 12's table of the
`fer` package), so a re-run that replaces a metrics file fails this test until the README says
the new number."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from fer_utils.config import PROJECT_ROOT, TEST, VAL
from fer_utils.evaluate import CLEAN_TEST

README = PROJECT_ROOT / "README.md"
REPORTS = PROJECT_ROOT / "reports"
HEADER = "| notebook | model | training data | epochs | train min | PublicTest | PrivateTest | balanced | clean |"
COLUMNS = ("epochs", "train min", "PublicTest", "PrivateTest", "balanced", "clean")


def results_rows(text: str) -> list[dict]:
    """The results table's rows: notebook, model, and the numbers of each numeric column (a range
    ``a-b`` gives two, ``-`` none)."""
    lines = text[text.index(HEADER):].splitlines()[2:]
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        numbers = {name: [float(x) for x in re.findall(r"\d+(?:\.\d+)?", cell)]
                   for name, cell in zip(COLUMNS, cells[3:9])}
        rows.append({"notebook": cells[0], "model": cells[1], **numbers})
    return rows


def committed_results() -> list[dict]:
    """The numbers each committed run would show in the table, with its notebook number."""
    results = []
    for path in sorted((REPORTS / "metrics").glob("*.json")):
        r = json.loads(path.read_text())
        m = r["metrics"]
        results.append({"notebook": r["notebook"][:2], "epochs": r["train"].get("epochs"),
                        "train min": r["train"]["seconds"] / 60,
                        "PublicTest": 100 * m[VAL]["accuracy"], "PrivateTest": 100 * m[TEST]["accuracy"],
                        "balanced": 100 * m[TEST]["balanced_accuracy"], "clean": 100 * m[CLEAN_TEST]["accuracy"]})
    fer = pd.read_csv(REPORTS / "tables" / "12_champion_against_fer_package.csv", index_col=0)
    row = fer.loc[next(i for i in fer.index if i.startswith("fer package"))]
    results.append({"notebook": "12", "epochs": None, "train min": None, "PublicTest": row["PublicTest accuracy %"],
                    "PrivateTest": row["PrivateTest accuracy %"], "balanced": row["PrivateTest balanced accuracy %"],
                    "clean": row["PrivateTest_clean accuracy %"]})
    return results


def shows(result: dict, column: str, number: float) -> bool:
    value = result[column]
    return value is not None and abs(value - number) <= 0.05 + 1e-9  # the README rounds to one decimal


def test_the_parser_reads_ranges_bold_and_italics():
    text = HEADER + " claim |\n|---|\n| 06 | VGG | ROS | 5 | 6.9-11.3 | **44.3** | *57.5 (seen)* | - | 41.6 | - |\n\nafter"
    [row] = results_rows(text)
    assert row["train min"] == [6.9, 11.3] and row["PublicTest"] == [44.3] and row["PrivateTest"] == [57.5]
    assert row["balanced"] == [] and row["clean"] == [41.6]


def test_every_number_of_the_results_table_is_a_committed_run():
    rows, results = results_rows(README.read_text()), committed_results()
    assert len(rows) >= 10
    for row in rows:
        mine = [r for r in results if r["notebook"] == row["notebook"]]
        given = {c: row[c] for c in COLUMNS if row[c]}
        if all(len(v) == 1 for v in given.values()):  # one run: one metrics file shows every number
            assert any(all(shows(r, c, v[0]) for c, v in given.items()) for r in mine), \
                f"README row {row['notebook']} '{row['model'][:60]}': {given} is no committed run's"
        else:  # a range over several runs: each end is one of the notebook's runs
            for column, numbers in given.items():
                for number in numbers:
                    assert any(shows(r, column, number) for r in mine), \
                        f"README row {row['notebook']} '{row['model'][:60]}': {column} {number} is no committed run's"


@pytest.mark.parametrize("number, ok", [(61.6, True), (61.7, False)])
def test_a_changed_number_is_caught(number, ok):
    result = {"PrivateTest": 61.63}
    assert shows(result, "PrivateTest", number) is ok

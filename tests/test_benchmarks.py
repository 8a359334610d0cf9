"""Every benchmark runs in its --quick mode and prints markdown tables whose ratio columns hold positive finite
numbers (a ratio column is one whose header ends with "(x)", see benchmarks/common.py)."""

import importlib
import math
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

# script -> the tables its --quick mode prints
EXPECTED_TABLES = {"inference": 2, "train_step": 4, "views": 2, "roofline": 1, "scaling": 4}


def parse_tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """(header, rows) of every markdown table in `text`."""
    tables, lines = [], text.splitlines()
    index = 0
    while index < len(lines):
        if lines[index].startswith("|") and index + 1 < len(lines) and lines[index + 1].startswith("|---"):
            header = [cell.strip() for cell in lines[index].strip("|").split("|")]
            rows, index = [], index + 2
            while index < len(lines) and lines[index].startswith("|"):
                rows.append([cell.strip() for cell in lines[index].strip("|").split("|")])
                index += 1
            tables.append((header, rows))
        else:
            index += 1
    return tables


def test_parse_tables_reads_header_and_rows():
    text = "title\n\n| a | x/y (x) |\n|---|---|\n| one | 1.5 |\n| two | 0.25 |\n\nafter"
    assert parse_tables(text) == [(["a", "x/y (x)"], [["one", "1.5"], ["two", "0.25"]])]


@pytest.fixture(scope="module", autouse=True)
def benchmarks_on_path():
    sys.path.insert(0, str(BENCHMARKS))
    yield
    sys.path.remove(str(BENCHMARKS))


@pytest.mark.parametrize("script", sorted(EXPECTED_TABLES))
def test_quick_mode_prints_tables_of_positive_finite_ratios(script, capsys):
    importlib.import_module(script).main(["--quick"])
    tables = parse_tables(capsys.readouterr().out)
    assert len(tables) == EXPECTED_TABLES[script]
    for header, rows in tables:
        assert rows, f"{script}: empty table {header}"
        ratio_columns = [i for i, name in enumerate(header) if name.endswith("(x)")]
        assert ratio_columns, f"{script}: no ratio column in {header}"
        for row in rows:
            assert len(row) == len(header), f"{script}: row {row} does not match {header}"
            for column in ratio_columns:
                value = float(row[column])
                assert math.isfinite(value) and value > 0, f"{script}: {header[column]} = {row[column]} in {row}"


FMNIST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


@pytest.mark.skipif(not FMNIST.exists(), reason="needs Debian's dataset-fashion-mnist")
def test_quality_fmnist_trains_for_the_budget_and_reports_every_column(tmp_path, capsys):
    """A budget of a few steps: the calibrated number of steps is what was trained, the JSON holds kNN (trained and
    random init) and linear top-1 in [0, 100], and the raw-pixel reference of the same run."""
    import json

    quality = importlib.import_module("quality_fmnist")
    out = tmp_path / "results.json"
    quality.main(["--methods", "simclr", "--budget-minutes", "0.05", "--calibration-steps", "2",
                  "--knn-train", "300", "--knn-test", "100", "--linear-epochs", "2",
                  "--work-dir", str(tmp_path / "runs"), "--out", str(out)])  # fmt: skip
    results = json.loads(out.read_text())
    (row,) = results["rows"]
    assert row["method"] == "simclr" and row["steps"] >= 1
    history = [json.loads(line) for line in (tmp_path / "runs" / "simclr" / "metrics.jsonl").read_text().splitlines()]
    assert max(entry["step"] for entry in history) <= row["steps"]
    for key in ("knn", "knn_random_init", "linear"):
        assert 0.0 <= row[key] <= 100.0
    assert 0.0 < results["raw_pixels_knn"] <= 100.0
    header, rows = parse_tables(capsys.readouterr().out)[-1]
    assert header[0] == "method" and rows[-1][0] == "raw pixels (standardised)"


def test_quality_fmnist_rejects_a_method_without_tiny_recipe():
    quality = importlib.import_module("quality_fmnist")
    with pytest.raises(SystemExit):
        quality.main(["--methods", "no_such_method"])

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

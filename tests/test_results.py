"""Tests of stn_repro.results: reference copy, run records and paper-comparison tables, on hand-written records."""

from __future__ import annotations

import csv
import json
import math
import os
from importlib import resources
from pathlib import Path

import pytest
import yaml

from stn_repro.results import records as records_module
from stn_repro.results import tables
from stn_repro.results.markdown import markdown_row, markdown_table
from stn_repro.results.records import (
    RecordError,
    RunRecord,
    archive_record,
    find_record,
    load_records,
    read_record,
    record_path,
    write_record,
)
from stn_repro.results.reference import load_reference, paper_value, table_columns, table_rows
from stn_repro.results.summaries import TableError, format_cell, summarise_cells
from stn_repro.results.table_csv import CSV_FIELDS
from stn_repro.results.tables import build_tables

SHARED_REFERENCE = Path(__file__).resolve().parents[1].parent / "shared/paper/reference.yaml"
T1 = "table1_distorted_mnist"
TC = "translated_cluttered_mnist"
DATA = {
    "source": "bundled",
    "digits": "mnist",
    "full_dataset": False,
    "n_train": 4000,
    "n_val": 500,
    "n_test": 1000,
    "checksum": "0123abcd" * 8,
}


H0, H1 = "0123456789abcdef", "fedcba9876543210"  # config hashes


def make(
    cell: str = "cnn_r",
    row: str = "CNN",
    column: str | None = "R",
    seed: int = 0,
    err: float | None = 1.0,
    **changes: object,
) -> RunRecord:
    """A finished table1 record (or diverged with ``err=None``); ``changes`` override fields, ``data_*`` data keys."""
    data = dict(DATA)
    for key in [key for key in changes if key.startswith("data_")]:
        data[key.removeprefix("data_")] = changes.pop(key)
    fields = {
        "suite": "table1",
        "cell": cell,
        "table": T1,
        "row": row,
        "column": column,
        "seed": seed,
        "profile": "quick",
        "overrides": [],
        "canonical": True,
        "status": "finished" if err is not None else "diverged",
        "metrics": None if err is None else {"test/err": err, "val/err": err + 0.5},
        "data": data,
        "params": 412_345,
        "iterations": 3000,
        "batch_size": 256,
        "wall_time_s": 95.0,
        "device": "cpu",
        "git_revision": "abc1234+dirty",
        "config_hash": H0,
        "created": "2025-01-02T03:04:05+00:00",
        "deviations": ["bundled 5k MNIST sample", "3,000 iterations instead of 150k"],
    }
    fields.update(changes)
    return RunRecord(**fields)


def cnn_r(values: list[float | None]) -> list[RunRecord]:
    """Seeds 0, 1, ... of cell CNN / R (paper 1.2) with the given test errors (``None`` = diverged)."""
    return [make(seed=seed, err=err) for seed, err in enumerate(values)]


def csv_rows(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    with path.open(newline="") as file:
        return {(row["row"], row["column"]): row for row in csv.DictReader(file)}


def cell_line(markdown: str, row: str) -> str:
    """The line of the main table for model ``row``."""
    return next(line for line in markdown.splitlines() if line.startswith(f"| {row} |"))


@pytest.fixture
def no_figure(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip matplotlib where a test checks the tables only (keeps the file fast)."""
    monkeypatch.setattr(tables, "plot_table", lambda path, *args: path.write_bytes(b"stub"))


# --- reference --------------------------------------------------------------------------------------------------


def test_reference_copy_holds_the_shared_file_and_only_numberless_extras() -> None:
    if not SHARED_REFERENCE.is_file():
        pytest.skip(f"{SHARED_REFERENCE} not present (only in the development workspace)")
    packaged = resources.files("stn_repro.results").joinpath("reference.yaml").read_text(encoding="utf-8")
    shared = SHARED_REFERENCE.read_text(encoding="utf-8")
    assert packaged.startswith(shared)  # the published figures, byte for byte
    extras = {key: value for key, value in yaml.safe_load(packaged).items() if key not in yaml.safe_load(shared)}
    for table, spec in extras.items():  # project-only tables never invent a published number
        assert all(value is None for value in spec["rows"].values()), table


def test_paper_value_and_layout() -> None:
    assert paper_value(T1, "ST-CNN TPS", "E") == 1.1
    assert paper_value(T1, "FCN", "RTS") == 5.2
    assert paper_value(TC, "ST-CNN", None) == 1.7
    assert paper_value("table2_svhn", "Maxout CNN (Goodfellow et al.)", "128px") is None
    assert paper_value("co_localisation", "TC (translated + 16 clutter patches)", None) is None
    assert table_columns(T1) == ["R", "RTS", "P", "E"] and table_columns(TC) == [None]
    assert table_rows(TC) == ["FCN", "CNN", "ST-FCN", "ST-CNN"]
    for bad in ((T1, "ST-CNN TPS", "X"), (T1, "ST-CNN TPS", None), (TC, "ST-CNN", "R"), (TC, "Nope", None)):
        with pytest.raises(KeyError):
            paper_value(*bad)
    with pytest.raises(KeyError, match="unknown reference table"):
        paper_value("table9", "CNN", None)


def test_load_reference_returns_a_fresh_copy() -> None:
    first = load_reference()
    first[T1]["rows"]["CNN"][0] = 99.0
    assert load_reference()[T1]["rows"]["CNN"][0] == 1.2
    assert paper_value(T1, "CNN", "R") == 1.2


# --- records ----------------------------------------------------------------------------------------------------


def test_record_round_trip(tmp_path: Path) -> None:
    record = make(column="RTS", cell="cnn_rts", seed=2, err=0.75)
    path = write_record(tmp_path, record)
    assert path == record_path(tmp_path, "table1", "cnn_rts", 2, H0) == tmp_path / f"table1/cnn_rts/seed2-{H0}.json"
    assert read_record(path) == record
    assert RunRecord.from_dict(record.to_dict()) == record
    stored = json.loads(path.read_text())
    assert stored["record_format"] == 2 and stored["metrics"] == {"test/err": 0.75, "val/err": 1.25}
    diverged = make(cell="tc", row="ST-CNN", column=None, table=TC, suite="cluttered", err=None)
    assert read_record(write_record(tmp_path, diverged)) == diverged
    assert json.loads(record_path(tmp_path, "cluttered", "tc", 0, H0).read_text())["metrics"] is None


def test_write_is_atomic_never_replaces_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_record(tmp_path, make(err=2.0))
    folder = tmp_path / "table1/cnn_r"
    with pytest.raises(RecordError, match="a record is already there; it is kept"):
        write_record(tmp_path, make(err=1.0))
    assert sorted(os.listdir(folder)) == [f"seed0-{H0}.json"]
    assert read_record(folder / f"seed0-{H0}.json").metrics["test/err"] == 2.0
    kept = archive_record(folder / f"seed0-{H0}.json", "replaced")
    assert kept.parent == folder / "replaced" and read_record(kept).metrics["test/err"] == 2.0
    assert load_records(tmp_path, "table1") == []  # replaced/ is not read

    def fail(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(records_module.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_record(tmp_path, make(err=3.0))
    assert sorted(os.listdir(folder)) == ["replaced"]


def test_corrupt_record_raises_one_line_error_naming_the_file(tmp_path: Path) -> None:
    path = write_record(tmp_path, make())
    path.write_text(path.read_text()[:40])  # half-written
    with pytest.raises(RecordError) as info:
        read_record(path)
    message = str(info.value)
    assert str(path) in message and "delete it" in message and "\n" not in message
    with pytest.raises(RecordError, match=f"seed0-{H0}.json"):
        load_records(tmp_path, "table1")
    with pytest.raises(RecordError, match=f"seed0-{H0}.json"):
        find_record(tmp_path, "table1", "cnn_r", 0, H0)
    with pytest.raises(RecordError, match="no such run record"):
        read_record(tmp_path / "missing.json")


def test_invalid_records_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match="diverged run must have metrics None"):
        make(status="diverged")
    with pytest.raises(RecordError, match="diverged"):
        make(metrics={"test/err": math.nan})
    with pytest.raises(RecordError, match="'seed'"):
        make(seed=True)
    with pytest.raises(RecordError, match="lacks 'checksum'"):
        make(data={key: value for key, value in DATA.items() if key != "checksum"})
    with pytest.raises(RecordError, match="cell"):
        make(cell="../escape")
    with pytest.raises(RecordError, match="a canonical record has no overrides"):
        make(overrides=["system.optimizer.lr=0.1"])
    assert not make(overrides=["system.optimizer.lr=0.1"], canonical=False).canonical
    values = make().to_dict()
    del values["params"]
    values["colour"] = "red"
    path = tmp_path / f"table1/cnn_r/seed0-{H0}.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(values))
    with pytest.raises(
        RecordError, match=r"seed0-0123456789abcdef\.json: invalid run record .*missing params; unknown"
    ):
        read_record(path)


def test_find_record_respects_config_hash(tmp_path: Path) -> None:
    assert find_record(tmp_path, "table1", "cnn_r", 0, H0) is None
    record, other = (
        make(config_hash=H0),
        make(config_hash=H1, err=7.0, overrides=["system.optimizer.lr=0.1"], canonical=False),
    )
    write_record(tmp_path, record)
    write_record(tmp_path, other)  # a sweep point of the same cell and seed: beside it, not over it
    assert find_record(tmp_path, "table1", "cnn_r", 0, H0) == record
    assert find_record(tmp_path, "table1", "cnn_r", 0, H1) == other
    assert find_record(tmp_path, "table1", "cnn_r", 1, H0) is None


def test_load_records_is_sorted_and_skips_nothing(tmp_path: Path) -> None:
    assert load_records(tmp_path, "table1") == []
    for record in (make(seed=1), make(seed=0), make(cell="cnn_e", column="E")):
        write_record(tmp_path, record)
    write_record(tmp_path, make(suite="cluttered", table=TC, cell="cnn", column=None))
    loaded = load_records(tmp_path, "table1")
    assert [(r.cell, r.seed) for r in loaded] == [("cnn_e", 0), ("cnn_r", 0), ("cnn_r", 1)]
    moved = tmp_path / f"table1/cnn_r/seed7-{H0}.json"
    moved.write_text((tmp_path / f"table1/cnn_r/seed0-{H0}.json").read_text())
    with pytest.raises(RecordError, match=f"seed7-{H0}.json: holds suite/cell/seed/hash table1/cnn_r/0/{H0}"):
        load_records(tmp_path, "table1")
    moved.rename(tmp_path / "table1/cnn_r/notes.json")
    with pytest.raises(RecordError, match="notes.json: not a run record name"):
        load_records(tmp_path, "table1")


# --- tables -----------------------------------------------------------------------------------------------------


def test_markdown_table_rows_rule_and_escaped_bars() -> None:
    assert markdown_row(["a", 1, ""]) == "| a | 1 |  |"
    assert markdown_row(["x|y"]) == "| x\\|y |"
    assert markdown_table(["h1", "h2"], [["a", "b"]]) == ["| h1 | h2 |", "| --- | --- |", "| a | b |"]
    with pytest.raises(ValueError, match="1 cells for 2 columns"):  # a short row would shift every column after it
        markdown_table(["h1", "h2"], [["a", "b"], ["c"]])
    assert markdown_table(["h1", "h2", "h3"], [], compact=True) == ["| h1 | h2 | h3 |", "|---|---|---|"]


def test_mean_std_and_difference(tmp_path: Path, no_figure: None) -> None:
    _, summaries = summarise_cells(cnn_r([1.0, 2.0, 3.0]))
    cell = next(s for s in summaries if (s.row, s.column) == ("CNN", "R"))
    assert (cell.mean, cell.std, cell.diff, cell.paper) == (2.0, 1.0, 0.8, 1.2)
    assert format_cell(cell) == "1.2 / 2.00 ± 1.00 [1.6, 2.6] (+0.80)"

    paths = build_tables(cnn_r([1.0, 2.0, 3.0]), tmp_path)
    assert paths["markdown"] == tmp_path / "table1.md" and paths["csv"] == tmp_path / "table1.csv"
    assert (
        "| CNN | 1.2 / 2.00 ± 1.00 [1.6, 2.6] (+0.80) | 0.8 / — | 1.5 / — | 1.4 / — |" in paths["markdown"].read_text()
    )
    rows = csv_rows(paths["csv"])
    assert len(rows) == 8 * 4
    row = rows[("CNN", "R")]
    assert list(row) == list(CSV_FIELDS)
    assert (float(row["paper"]), float(row["mean"]), float(row["std"]), float(row["diff"])) == (1.2, 2.0, 1.0, 0.8)
    assert (row["n_seeds"], row["n_diverged"], row["params"], row["iterations"]) == ("3", "0", "412345", "3000")
    assert (row["profile"], row["source"], row["n_train"], row["full_dataset"]) == ("quick", "bundled", "4000", "false")
    assert row["table"] == T1 and row["git_revision"] == "abc1234+dirty"
    assert rows[("FCN", "E")]["mean"] == "" and rows[("FCN", "E")]["n_seeds"] == "0"


def test_negative_difference_and_rounding(no_figure: None) -> None:
    _, summaries = summarise_cells([make(err=0.5), make(seed=1, err=0.6)])
    cell = next(s for s in summaries if (s.row, s.column) == ("CNN", "R"))
    assert cell.diff == -0.65 and format_cell(cell) == "1.2 / 0.55 ± 0.07 [0.3, 1.0] (-0.65)"


def test_markdown_header_provenance_and_deviations(tmp_path: Path, no_figure: None) -> None:
    records = [*cnn_r([1.0, 2.0, 3.0]), make(cell="st_cnn_aff_e", row="ST-CNN Aff", column="E", err=1.5)]
    records.append(make(cell="fcn_p", row="FCN", column="P", err=3.0, deviations=["FCN uses 128 units"]))
    text = build_tables(records, tmp_path)["markdown"].read_text()
    assert text.startswith("# Table 1: distorted MNIST: ours vs paper")
    assert "- Profile: `quick`" in text
    assert "4,000 train / 500 val / 1,000 test; NOT the full dataset" in text
    assert "**WARNING: NOT THE FULL MNIST DATASET**" in text
    assert "- Seeds: 0, 1, 2 (1–3 per cell; 3 of 32 cells run)" in text
    assert "- Iterations: 3,000; batch size 256" in text and "- Newest record: 2025-01-02T03:04:05+00:00" in text
    assert "| model | R | RTS | P | E |" in text
    assert (
        cell_line(text, "ST-CNN Aff") == "| ST-CNN Aff | 0.7 / — | 0.5 / — | 0.8 / — | 1.2 / 1.50 [0.9, 2.5] (+0.30) |"
    )
    assert (
        "| cell | row | column | seeds | params | iterations | batch | profile | source | n_train | wall time / seed "
        "| device | git revision |" in text
    )
    assert (
        "| `cnn_r` | CNN | R | 0, 1, 2 (n=3) | 412,345 | 3,000 | 256 | quick | bundled | 4,000 | 95 s | cpu "
        "| abc1234+dirty |" in text
    )
    assert "| `st_cnn_aff_e` | ST-CNN Aff | E | 0 (n=1) |" in text
    deviations = text.split("## Deviations from the paper")[1]
    assert deviations.count("- bundled 5k MNIST sample (only `cnn_r`, `st_cnn_aff_e`)") == 1
    assert "- FCN uses 128 units (only `fcn_p`)" in deviations


def test_full_dataset_has_no_warning(tmp_path: Path, no_figure: None) -> None:
    records = [make(seed=s, data_source="idx", data_full_dataset=True, data_n_train=55_000) for s in range(2)]
    text = build_tables(records, tmp_path)["markdown"].read_text()
    assert "WARNING" not in text and "; full dataset" in text


def test_one_seed_shows_no_plus_minus(tmp_path: Path, no_figure: None) -> None:
    text = build_tables(cnn_r([2.0]), tmp_path)["markdown"].read_text()
    assert cell_line(text, "CNN").startswith("| CNN | 1.2 / 2.00 [1.3, 3.1] (+0.80) | 0.8 / — |")
    assert "±" not in cell_line(text, "CNN")
    assert "| `cnn_r` | CNN | R | 0 (n=1) |" in text
    assert csv_rows(tmp_path / "table1.csv")[("CNN", "R")]["std"] == ""


def test_missing_cells_show_a_dash(tmp_path: Path, no_figure: None) -> None:
    text = build_tables(cnn_r([2.0]), tmp_path)["markdown"].read_text()
    assert cell_line(text, "FCN") == "| FCN | 2.1 / — | 5.2 / — | 3.1 / — | 3.2 / — |"
    assert "`fcn_r`" not in text


def test_diverged_seed_is_shown_and_excluded_from_the_mean(tmp_path: Path, no_figure: None) -> None:
    paths = build_tables(cnn_r([1.0, None, 3.0]), tmp_path)
    text = paths["markdown"].read_text()
    assert "| CNN | 1.2 / 2.00 ± 1.41 [1.5, 2.7] (+0.80), diverged (1/3) |" in text
    assert "0, 1, 2 (n=3, 1 diverged)" in text
    row = csv_rows(paths["csv"])[("CNN", "R")]
    assert (float(row["mean"]), row["n_seeds"], row["n_diverged"]) == (2.0, "3", "1")


def test_all_seeds_diverged_gives_no_number(tmp_path: Path, no_figure: None) -> None:
    paths = build_tables(cnn_r([None, None, None]), tmp_path)
    assert cell_line(paths["markdown"].read_text(), "CNN").startswith("| CNN | 1.2 / diverged (3/3) | 0.8 / — |")
    row = csv_rows(paths["csv"])[("CNN", "R")]
    assert (row["mean"], row["std"], row["diff"], row["n_diverged"]) == ("", "", "", "3")


@pytest.mark.parametrize(
    ("change", "what"),
    [
        ({"profile": "paper"}, "profile"),
        ({"data_source": "idx"}, "data source"),
        ({"data_checksum": "f" * 64}, "data checksum"),
    ],
)
def test_mixing_profiles_sources_or_checksums_is_refused(change: dict, what: str, no_figure: None) -> None:
    within_cell = [make(seed=0), make(seed=1, **change)]
    with pytest.raises(TableError, match=rf"cell 'cnn_r' mixes {what} values .*\(seed 0\) and .*\(seed 1\)"):
        summarise_cells(within_cell)
    across_cells = [make(), make(cell="cnn_e", column="E", **change)]
    with pytest.raises(TableError, match=rf"suite 'table1' mixes {what} values .*\(cells cnn_r\) and .*cnn_e"):
        summarise_cells(across_cells)


def test_profile_error_suggests_the_profile_option(no_figure: None) -> None:
    with pytest.raises(TableError, match="'quick' .* and 'paper' .*; remove .*results/runs/table1.*--profile"):
        summarise_cells([make(), make(seed=1, profile="paper")])


def test_duplicates_and_unknown_cells_are_refused(no_figure: None) -> None:
    with pytest.raises(TableError, match="cell 'cnn_r': seed 0 appears twice"):
        summarise_cells([make(err=1.0), make(err=2.0)])
    with pytest.raises(TableError, match="cells 'cnn_r' and 'cnn_r_again' both claim"):
        summarise_cells([make(), make(cell="cnn_r_again", seed=1)])
    with pytest.raises(TableError, match="has no row 'LeNet'"):
        summarise_cells([make(row="LeNet")])
    with pytest.raises(TableError, match="no metric 'test/acc'"):
        summarise_cells(cnn_r([1.0]), metric="test/acc")
    with pytest.raises(TableError, match="mixes suite values"):
        summarise_cells([make(), make(suite="cluttered", table=TC, cell="cnn", column=None)])
    with pytest.raises(TableError, match="no run records"):
        summarise_cells([])


def test_figure_is_written(tmp_path: Path) -> None:
    paths = build_tables([*cnn_r([1.0, None, 3.0]), make(cell="fcn_e", row="FCN", column="E", err=4.0)], tmp_path)
    figure = paths["figure"]
    assert figure == tmp_path / "figures/table1_vs_paper.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 10_000


def test_cluttered_suite_and_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_figure: None) -> None:
    runs = tmp_path / "runs"
    for seed, err in enumerate([2.5, 3.5]):
        write_record(
            runs, make(suite="cluttered", table=TC, cell="st_cnn", row="ST-CNN", column=None, seed=seed, err=err)
        )
    assert tables.main(["--runs", str(runs), "--suite", "cluttered", "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out/table_cluttered.md").read_text()
    assert "| model | error % |" in text and "| ST-CNN | 1.7 / 3.00 ± 0.71 [2.3, 3.8] (+1.30) |" in text
    assert "| FCN | 13.2 / — |" in text
    assert csv_rows(tmp_path / "out/table_cluttered.csv")[("ST-CNN", "")]["diff"] == "1.3"
    assert (tmp_path / "out/figures/cluttered_vs_paper.png").is_file()
    assert "wrote" in capsys.readouterr().out

    assert tables.main(["--runs", str(runs), "--suite", "cluttered", "--out", str(tmp_path), "--profile", "x"]) == 2
    assert "error: no run records with profile 'x'" in capsys.readouterr().err
    write_record(runs, make(suite="cluttered", table=TC, cell="cnn", row="CNN", column=None))
    (runs / f"cluttered/cnn/seed0-{H0}.json").write_text("{")
    assert tables.main(["--runs", str(runs), "--suite", "cluttered"]) == 2
    assert "delete it to re-run that cell" in capsys.readouterr().err


def test_tables_rebuild_byte_for_byte_and_only_from_canonical_records(tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    for record in cnn_r([1.0, 2.0]):
        write_record(runs, record)
    arguments = ["--runs", str(runs), "--suite", "table1", "--out", str(tmp_path / "out")]
    assert tables.main(arguments) == 0
    first = {p.name: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert tables.main(arguments) == 0
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()} == first
    write_record(runs, make(seed=5, config_hash=H1, overrides=["system.optimizer.lr=0.1"], canonical=False))
    assert tables.main(arguments) == 2
    assert "holds variant records (cnn_r seed 5)" in capsys.readouterr().err
    lr = "system.optimizer.lr=0.1"
    variant = build_tables([make(seed=5, config_hash=H1, overrides=[lr], canonical=False)], tmp_path / "v")
    heading = f"VARIANT RUNS, NOT THE SUITE'S CANONICAL CELLS** (1 of 1 records differ from their experiment: {lr})"
    assert heading in variant["markdown"].read_text()


def test_a_table_does_not_depend_on_the_order_of_its_records(tmp_path: Path, no_figure: None) -> None:
    """reproduce passes records in the suite's cell order, the command line in load_records' order: one page."""
    records = [
        make(cell="st_cnn_aff_e", row="ST-CNN Aff", column="E", err=1.5, iterations=2000, git_revision="bbb2222"),
        *cnn_r([1.0, 2.0]),
        make(cell="fcn_p", row="FCN", column="P", err=3.0, iterations=1000, git_revision="aaa1111"),
    ]
    pages = [
        build_tables(ordered, tmp_path / name)["markdown"].read_bytes()
        for name, ordered in (("given", records), ("reversed", records[::-1]))
    ]
    assert pages[0] == pages[1]
    assert b"- Iterations: 3,000, 1,000, 2,000; batch size 256" in pages[0]  # cells in name order: cnn_r, fcn_p, st_..


def test_a_not_run_table_never_replaces_a_table_built_from_runs(tmp_path: Path) -> None:
    built = build_tables(cnn_r([1.0]), tmp_path)["markdown"]
    before = built.read_bytes()
    assert tables.build_not_run_tables("table1", T1, {"cnn_r": ("CNN", "R")}, "no data", tmp_path) == {}
    assert built.read_bytes() == before and (tmp_path / "figures/table1_vs_paper.png").is_file()
    fresh = tables.build_not_run_tables("table1", T1, {"cnn_r": ("CNN", "R")}, "no data", tmp_path / "new")
    assert "> **Not run:** no data" in fresh["markdown"].read_text()
    assert tables.build_not_run_tables("table1", T1, {"cnn_r": ("CNN", "R")}, "still none", tmp_path / "new")

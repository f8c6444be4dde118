"""Console lines come from global rank 0 only (stn_repro/console.py): under trainer=ddp every process runs the
script, and each line would otherwise show once per process."""

from pytorch_lightning.utilities import rank_zero_only

from stn_repro.console import say, show
from stn_repro.progress import indented


def test_rank_zero_says_each_line_once_to_the_right_stream(capsys, monkeypatch):
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    say("fcn_r on R, seed 0")
    say("error: no data", error=True)
    indented("cache hit")
    out, err = capsys.readouterr()
    assert out == "fcn_r on R, seed 0\n  cache hit\n" and err == "error: no data\n"


def test_the_other_ranks_stay_quiet(capsys, monkeypatch):
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    say("fcn_r on R, seed 0")
    say("error: no data", error=True)
    indented("cache hit")
    assert capsys.readouterr() == ("", "")


TABLE = "| point | val/err |\n| --- | --- |\n| `lr=0.01` | 4.20 |"


def test_a_markdown_table_goes_to_a_pipe_as_written_and_to_a_terminal_laid_out(capsys, monkeypatch):
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    show(TABLE)
    assert capsys.readouterr().out == TABLE + "\n"  # a log file keeps the markdown
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich treats standard output as a terminal
    monkeypatch.setenv("COLUMNS", "60")
    show(TABLE)
    out = capsys.readouterr().out
    assert "| --- |" not in out and "lr=0.01" in out and "4.20" in out and "point" in out
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    show(TABLE)
    assert capsys.readouterr() == ("", "")

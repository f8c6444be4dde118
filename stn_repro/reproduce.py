"""Run the cells of one or more suites (Hydra multirun over ``stn_repro.train``), then build their tables.

    python -m stn_repro.reproduce suite=table1,cluttered [profile=auto|quick|paper] [any train override ...]

``profile=auto`` (the default) picks ``paper`` when CUDA and the full MNIST are available and ``quick`` otherwise,
and says so on the first line. Every cell is validated before anything trains. Cells whose records exist for the
same configuration are skipped by ``stn_repro.train``; tables are built from the records alone.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from stn_repro.config import ConfigError, validate
from stn_repro.data.errors import DataError
from stn_repro.data.sources import resolve_digits
from stn_repro.results.records import RecordError, load_records
from stn_repro.results.tables import TableError, build_tables

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def parse_arguments(argv: list[str]) -> tuple[list[str], str, list[str]]:
    """``(suites, profile, train_overrides)`` from ``key=value`` arguments."""
    suites, profile, overrides = ["table1"], "auto", []
    for argument in argv:
        key, sep, value = argument.partition("=")
        if not sep:
            raise ConfigError(f"argument {argument!r} is not key=value (e.g. suite=table1 profile=quick)")
        if key == "suite":
            suites = [s for s in value.split(",") if s]
        elif key == "profile":
            profile = value
        else:
            overrides.append(argument)
    for suite in suites:
        if not (CONF_DIR / "suite" / f"{suite}.yaml").exists():
            known = sorted(p.stem for p in (CONF_DIR / "suite").glob("*.yaml"))
            raise ConfigError(f"unknown suite {suite!r}; expected one of {', '.join(known)}")
    return suites, profile, overrides


def choose_profile(profile: str, overrides: list[str]) -> tuple[str, str]:
    """The profile to run and a sentence saying why."""
    if profile != "auto":
        return profile, "as requested"
    base = _compose("table1/cnn_r", "quick", overrides)
    digits = resolve_digits(base.data.root, base.data.source, base.data.digits, log=lambda message: None)
    cuda = torch.cuda.is_available()
    source = f"{digits.source} digits, {len(digits.train_labels):,} train / {len(digits.test_labels):,} test"
    if cuda and digits.full_dataset:
        return "paper", f"CUDA and the full MNIST are available ({source})"
    reasons = [] if cuda else ["no CUDA device"]
    if not digits.full_dataset:
        reasons.append(f"not the full MNIST: {source}")
    return "quick", "; ".join(reasons)


def _compose(cell: str, profile: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[f"experiment={cell}", f"profile={profile}", *overrides])


def main(argv: list[str] | None = None) -> int:
    try:
        suites, profile, overrides = parse_arguments(sys.argv[1:] if argv is None else argv)
        profile, why = choose_profile(profile, overrides)
        print(f"stn-repro: profile {profile} ({why}); suites: {', '.join(suites)}", flush=True)
        cells = [c for s in suites for c in OmegaConf.load(CONF_DIR / "suite" / f"{s}.yaml").cells]
        configs = {cell: _compose(cell, profile, overrides) for cell in cells}
        for cell, cfg in configs.items():
            try:
                validate(cfg)
            except ConfigError as error:
                raise ConfigError(f"{cell}: {error}") from None
        seeds = list(next(iter(configs.values())).profile.seeds)
    except (ConfigError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    total = len(cells) * len(seeds)
    print(f"{len(cells)} cells x {len(seeds)} seed(s) = {total} runs", flush=True)
    command = [
        sys.executable, "-m", "stn_repro.train", "--multirun",
        f"experiment={','.join(cells)}", f"seed={','.join(map(str, seeds))}", f"profile={profile}",
        f"progress={{total:{total}}}", *overrides,
    ]  # fmt: skip
    status = subprocess.run(command).returncode

    runs_root = Path(next(iter(configs.values())).paths.runs)
    out = Path(next(iter(configs.values())).paths.results)
    record_suites = list(dict.fromkeys(cfg.suite for cfg in configs.values()))  # where the cells write records
    try:
        for suite in record_suites:
            records = [r for r in load_records(runs_root, suite) if r.profile == profile]
            if records:
                written = build_tables(records, out)
                print(f"{suite}: {len(records)} records -> {', '.join(str(p) for p in written.values())}")
            else:
                print(f"{suite}: no finished runs yet, no table")
    except (RecordError, TableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if status != 0:
        print(
            f"error: some runs failed (exit code {status}); finished runs are kept, re-run to resume", file=sys.stderr
        )
    return status


if __name__ == "__main__":
    sys.exit(main())

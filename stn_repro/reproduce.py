"""Run the cells of one or more suites (Hydra multirun over ``stn_repro.train``), then build their tables.

    python -m stn_repro.reproduce suite=table1,cluttered [profile=auto|quick|paper] [any train override ...]

``profile=auto`` (the default) picks ``paper`` when CUDA and the suite's full dataset are available and ``quick``
otherwise, and says so. A suite may map ``quick`` / ``paper`` to its own profile files (``profiles:`` in
``conf/suite/<suite>.yaml``, e.g. ``svhn_quick``). Before anything trains, every cell is validated and the suite's
data (and pretrained weights) are checked: a suite whose data is missing stops with one message saying where to
put it, and its table is written with every cell ``not run`` and the reason. Cells whose records exist for the same
configuration are skipped by ``stn_repro.train``; tables are built from the records alone.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from stn_repro.config import ConfigError, validate
from stn_repro.data.errors import DataError
from stn_repro.models.cub import PretrainedWeightsError
from stn_repro.results.records import RecordError, load_records
from stn_repro.results.tables import TableError, build_not_run_tables, build_tables
from stn_repro.tasks import preflight

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
PROFILES = ("auto", "quick", "paper")


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


def profile_file(suite: DictConfig, profile: str) -> str:
    """The ``conf/profile`` file that ``profile`` (``quick`` / ``paper`` / a file name) means for ``suite``."""
    profiles = suite.get("profiles") or {}
    name = profiles.get(profile, profile)
    if not (CONF_DIR / "profile" / f"{name}.yaml").exists():
        known = ", ".join(sorted({*PROFILES, *(p.stem for p in (CONF_DIR / "profile").glob("*.yaml"))}))
        raise ConfigError(f"unknown profile {profile!r}; expected one of {known}")
    return name


def choose_profile(profile: str, source: dict) -> tuple[str, str]:
    """The profile to run (``quick`` / ``paper`` / as requested) and a sentence saying why."""
    if profile != "auto":
        return profile, "as requested"
    cuda = torch.cuda.is_available()
    counts = ", ".join(f"{source[k]:,} {k[2:]}" for k in ("n_train", "n_test") if isinstance(source.get(k), int))
    data = f"{source['source']} {source['digits']}" + (f", {counts}" if counts else "")
    if cuda and source["full_dataset"]:
        return "paper", f"CUDA and the full dataset are available ({data})"
    reasons = [] if cuda else ["no CUDA device"]
    if not source["full_dataset"]:
        reasons.append(f"not the full dataset: {data}")
    return "quick", "; ".join(reasons)


def _compose(cell: str, profile: str, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[f"experiment={cell}", f"profile={profile}", *overrides])


@dataclass
class SuitePlan:
    """A checked suite, ready to run: its cells' composed configs and the profile file they use."""

    name: str
    profile: str
    configs: dict[str, DictConfig]


def plan_suite(name: str, profile: str, overrides: list[str]) -> SuitePlan:
    """Compose and validate every cell of suite ``name`` after checking its data (nothing trains).

    Raises:
        DataError, PretrainedWeightsError: the suite's data or weights are missing (its table says "not run").
        ConfigError: a cell's configuration is invalid.
    """
    suite = OmegaConf.load(CONF_DIR / "suite" / f"{name}.yaml")
    cells = list(suite.cells)
    first = _compose(cells[0], profile_file(suite, "quick" if profile == "auto" else profile), overrides)
    try:
        source = preflight(first)
    except (DataError, PretrainedWeightsError) as error:
        papers = {c: _compose(c, "quick", overrides).paper for c in cells}
        ours = {c.split("/")[-1]: (paper.row, paper.column) for c, paper in papers.items()}
        paths = build_not_run_tables(name, first.paper.table, ours, str(error), Path(first.paths.results))
        print(f"{name}: not run -> {', '.join(str(p) for p in paths.values())}", flush=True)
        raise type(error)(f"suite {name} not run: {error}") from None
    chosen, why = choose_profile(profile, source)
    print(f"stn-repro: suite {name}: profile {chosen} ({why})", flush=True)
    profile_name = profile_file(suite, chosen)
    configs = {cell: _compose(cell, profile_name, overrides) for cell in cells}
    for cell, cfg in configs.items():
        try:
            validate(cfg)
        except ConfigError as error:
            raise ConfigError(f"{cell}: {error}") from None
    return SuitePlan(name, profile_name, configs)


def run_suite(plan: SuitePlan, overrides: list[str]) -> int:
    """Run a planned suite (one Hydra multirun) and tabulate its records; returns the multirun's exit status."""
    cells = list(plan.configs)
    cfg = plan.configs[cells[0]]
    seeds = list(cfg.profile.seeds)
    total = len(cells) * len(seeds)
    print(f"{plan.name}: {len(cells)} cells x {len(seeds)} seed(s) = {total} runs", flush=True)
    command = [
        sys.executable, "-m", "stn_repro.train", "--multirun",
        f"experiment={','.join(cells)}", f"seed={','.join(map(str, seeds))}", f"profile={plan.profile}",
        f"progress={{total:{total}}}", *overrides,
    ]  # fmt: skip
    status = subprocess.run(command).returncode
    runs_root, out = Path(cfg.paths.runs), Path(cfg.paths.results)
    for record_suite in dict.fromkeys(c.suite for c in plan.configs.values()):  # where the cells write records
        records = [r for r in load_records(runs_root, record_suite) if r.profile == cfg.profile.name]
        if records:
            written = build_tables(records, out)
            print(f"{record_suite}: {len(records)} records -> {', '.join(str(p) for p in written.values())}")
        else:
            print(f"{record_suite}: no finished runs yet, no table")
    if status != 0:
        print(f"error: some runs of suite {plan.name} failed (exit code {status}); finished runs are kept, re-run to "
              "resume", file=sys.stderr)  # fmt: skip
    return status


def main(argv: list[str] | None = None) -> int:
    try:
        suites, profile, overrides = parse_arguments(sys.argv[1:] if argv is None else argv)
        if profile not in PROFILES and not (CONF_DIR / "profile" / f"{profile}.yaml").exists():
            raise ConfigError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
        plans, status = [], 0
        for suite in suites:
            try:
                plans.append(plan_suite(suite, profile, overrides))
            except (DataError, PretrainedWeightsError) as error:  # the other suites still run
                print(f"error: {error}", file=sys.stderr, flush=True)
                status = 2
        for plan in plans:
            status = max(status, run_suite(plan, overrides))
    except (ConfigError, DataError, PretrainedWeightsError, RecordError, TableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return status


if __name__ == "__main__":
    sys.exit(main())

"""Run the cells of one or more suites (one Hydra multirun of ``stn_repro.train`` per suite, in this process), then
build their tables.

    python -m stn_repro.reproduce suite=table1,cluttered [profile=auto|quick|paper] [any train override ...]

``profile=auto`` (the default) picks ``paper`` when CUDA and the suite's full dataset are available and ``quick``
otherwise, and says so. A suite may map ``quick`` / ``paper`` to its own profile files (``profiles:`` in
``conf/suites/<suite>.yaml``, e.g. ``svhn_quick``). Before anything trains, every cell is validated and the suite's
data (and pretrained weights) are checked: a suite whose data is missing stops with one message saying where to
put it, and its table is written with every cell ``not run`` and the reason (a table built from runs is never
replaced by one). Cells whose records exist for the same configuration are skipped by ``stn_repro.train``
(``rerun=true`` trains them again, keeping the old records aside).

Tables come from exactly the records of the runs this command defines. With no override that changes a result,
they are the suite's canonical runs, and the tables go to ``results/``; with one (e.g. ``profile.iterations=20``,
or the smoke suite, whose cells are recorded as suite ``smoke``), the runs are variants and their tables go to the
multirun's folder (``multirun/<suite>/<time>/tables/``): ``results/`` is never touched by them.
"""

from __future__ import annotations

import difflib
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from stn_repro import components, train
from stn_repro.cli import check_moved_keys, one_line
from stn_repro.config import ConfigError, check_writable
from stn_repro.console import say
from stn_repro.data.errors import DataError
from stn_repro.identity import CONF_DIR, compose_config, config_hash, protocol_overrides
from stn_repro.models.cub import PretrainedWeightsError
from stn_repro.progress import indented
from stn_repro.results.claims import (
    CLAIM_SUITES,
    claims_summary,
    load_claimed,
    load_evidence,
    write_claims,
)
from stn_repro.results.records import RecordError, RunRecord, find_record
from stn_repro.results.summaries import TableError
from stn_repro.results.tables import build_not_run_tables, build_tables
from stn_repro.tasks import preflight
from stn_repro.validation import validate

PROFILES = ("auto", "quick", "paper")


def parse_arguments(argv: list[str]) -> tuple[list[str], str, list[str]]:
    """``(suites, profile, train_overrides)`` from Hydra override arguments, read by Hydra's own override parser:
    ``suite=a,b`` names several suites; every other override goes to the runs as written.

    Raises:
        ConfigError: an argument Hydra cannot parse, several profiles, or an unknown suite (with a close match).
    """
    try:
        parsed = OverridesParser.create().parse_overrides(list(argv))
    except HydraException as error:
        raise ConfigError(f"{one_line(error)} (arguments are key=value, e.g. suite=table1 profile=quick)") from None
    suites, profile, overrides = ["table1"], "auto", []
    for override in parsed:
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
        if override.key_or_group == "suite":
            suites = [str(value) for value in values]
        elif override.key_or_group == "profile":
            if len(values) != 1:
                raise ConfigError(f"{override.input_line} names several profiles; a command runs one")
            profile = str(values[0])
        else:
            overrides.append(override.input_line)
    check_moved_keys(overrides)
    for suite in suites:
        if not (CONF_DIR / "suites" / f"{suite}.yaml").exists():
            known = sorted(p.stem for p in (CONF_DIR / "suites").glob("*.yaml"))
            close = difflib.get_close_matches(suite, known, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ConfigError(f"unknown suite {suite!r}; {hint}expected one of {', '.join(known)}")
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


def _compose(cell: str, profile: str, overrides: list[str], suite: str) -> DictConfig:
    try:
        return compose_config([f"experiment={cell}", f"profile={profile}", f"suite={suite}", *overrides])
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(one_line(error)) from None


@dataclass
class PlannedRun:
    """One run of a suite: where its record will be, and whether it is canonical."""

    cell: str
    seed: int
    runs_root: Path
    config_hash: str
    canonical: bool
    overrides: list[str]

    def record(self, suite: str) -> RunRecord | None:
        return find_record(self.runs_root, suite, self.cell, self.seed, self.config_hash)


@dataclass
class SuitePlan:
    """A checked suite, ready to run: its cells' composed configs, the profile file they use and every run."""

    name: str
    profile: str
    configs: dict[str, DictConfig]
    runs: list[PlannedRun] = field(default_factory=list)

    @property
    def canonical(self) -> bool:
        return all(run.canonical for run in self.runs)


def plan_suite(name: str, profile: str, overrides: list[str]) -> SuitePlan:
    """Compose and validate every cell of suite ``name`` after checking its data (nothing trains).

    Raises:
        DataError, PretrainedWeightsError: the suite's data or weights are missing (its table says "not run").
        ConfigError: a cell's configuration is invalid.
    """
    suite = OmegaConf.load(CONF_DIR / "suites" / f"{name}.yaml")
    cells = list(suite.cells)
    first = _compose(cells[0], profile_file(suite, "quick" if profile == "auto" else profile), overrides, name)
    try:
        notes: list[str] = []  # printed under the suite's profile line
        source = preflight(first, log=notes.append)
    except (DataError, PretrainedWeightsError) as error:
        papers = {c: _compose(c, "quick", overrides, name).paper for c in cells}
        ours = {c.split("/")[-1]: (paper.row, paper.column) for c, paper in papers.items()}
        paths = build_not_run_tables(name, first.paper.table, ours, str(error), Path(first.paths.results))
        done = f"not run -> {', '.join(map(str, paths.values()))}" if paths else "not run (its table from runs is kept)"
        say(f"{name}: {done}")
        raise type(error)(f"suite {name} not run: {error}") from None
    chosen, why = choose_profile(profile, source)
    say(f"stn-repro: suite {name}: profile {chosen} ({why})")
    for note in notes:
        indented(note)
    profile_name = profile_file(suite, chosen)
    plan = SuitePlan(name, profile_name, {cell: _compose(cell, profile_name, overrides, name) for cell in cells})
    for cell, cfg in plan.configs.items():
        try:
            validate(cfg)
        except ConfigError as error:
            raise ConfigError(f"{cell}: {error}") from None
        checksum = components.data_module(cfg).source_metadata()["checksum"]
        changed, canonical = protocol_overrides(cfg, started_from=cell)
        root = Path(cfg.paths.runs if canonical else cfg.paths.variants)
        for seed in cfg.profile.seeds:
            seeded = OmegaConf.merge(cfg, {"seed": seed})
            plan.runs.append(PlannedRun(cfg.cell, seed, root, config_hash(seeded, checksum), canonical, changed))
    cfg = plan.configs[cells[0]]
    check_writable(*{run.runs_root for run in plan.runs}, Path(cfg.paths.models))
    if plan.canonical:
        check_writable(Path(cfg.paths.results) / "figures")
    return plan


def run_suite(plan: SuitePlan, overrides: list[str]) -> int:
    """Run a planned suite (one Hydra multirun) and tabulate its records; returns the multirun's exit status (1 when
    a run did not finish)."""
    cells = list(plan.configs)
    cfg = plan.configs[cells[0]]
    seeds = list(cfg.profile.seeds)
    total = len(cells) * len(seeds)
    sweep_dir = _sweep_dir(plan.name, overrides)
    kind = "canonical runs" if plan.canonical else f"variant runs ({', '.join(_distinct_overrides(plan))})"
    say(f"{plan.name}: {len(cells)} cells x {len(seeds)} seed(s) = {total} {kind} -> {sweep_dir}")
    status = train.launch([
        "--multirun",
        f"experiment={','.join(cells)}", f"seed={','.join(map(str, seeds))}", f"profile={plan.profile}",
        f"suite={plan.name}", f"progress.total={total}", f"progress.started={time.time()}",
        f"hydra.sweep.dir={sweep_dir}",
        *(o for o in overrides if not o.startswith("hydra.sweep.dir=")),
    ])  # fmt: skip
    records = []
    for planned in plan.runs:
        try:
            record = planned.record(plan.name)
        except RecordError as error:
            say(f"error: {error}", error=True)
            continue
        if record is not None:
            records.append(record)
    out = Path(cfg.paths.results) if plan.canonical else sweep_dir / "tables"
    if plan.canonical:
        for path in copy_run_figures(sweep_dir, out / "figures", plan.name):
            say(f"{plan.name}: run figure -> {path}")
    if records:
        written = build_tables(records, out)
        say(f"{plan.name}: {len(records)}/{total} records -> {', '.join(str(p) for p in written.values())}")
    else:
        say(f"{plan.name}: no finished runs yet, no table")
    if status != 0 or len(records) < total:
        say(
            f"error: {total - len(records)} of the {total} runs of suite {plan.name} did not finish (exit code "
            f"{status}); finished runs are kept, re-run the same command to resume",
            error=True,
        )
    return status or int(len(records) < total)


RUN_FIGURES = ("optimisation.png",)  # figures drawn during training, kept for canonical runs (co-localisation)


def copy_run_figures(sweep_dir: Path, out: Path, suite: str) -> list[Path]:
    """Copy each :data:`RUN_FIGURES` file a multirun's jobs wrote (``<job>/figures/<name>``) to
    ``<out>/<suite>_<cell>_<name>`` (the lowest seed's of a cell); returns the paths written."""
    written: dict[Path, int] = {}
    for config in sorted(sweep_dir.glob("*/.hydra/config.yaml")):
        job = OmegaConf.load(config)
        for name in RUN_FIGURES:
            source = config.parent.parent / "figures" / name
            target = out / f"{suite}_{job.cell}_{name}"
            if source.exists() and job.seed < written.get(target, job.seed + 1):
                out.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
                written[target] = job.seed
    return list(written)


def _sweep_dir(suite: str, overrides: list[str]) -> Path:
    """The multirun's folder: ``<hydra.sweep.dir>/<suite>`` when given, else ``multirun/<suite>/<time to the µs>``."""
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.key_or_group == "hydra.sweep.dir":
            return Path(str(override.value())) / suite
    return Path("multirun") / suite / datetime.now().strftime("%Y%m%d-%H%M%S-%f")


def _distinct_overrides(plan: SuitePlan) -> list[str]:
    return list(dict.fromkeys(o for run in plan.runs for o in run.overrides)) or ["no experiment of their own"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(argument in ("-h", "--help") for argument in argv):
        say(__doc__)
        return 0
    try:
        suites, profile, overrides = parse_arguments(argv)
        if profile not in PROFILES and not (CONF_DIR / "profile" / f"{profile}.yaml").exists():
            raise ConfigError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
        plans, status = [], 0
        for suite in suites:
            try:
                plans.append(plan_suite(suite, profile, overrides))
            except (DataError, PretrainedWeightsError) as error:  # the other suites still run
                say(f"error: {error}", error=True)
                status = 2
        for plan in plans:
            status = max(status, run_suite(plan, overrides))
        claiming = [plan for plan in plans if plan.canonical and plan.name in CLAIM_SUITES]
        if claiming:  # every claim suite's canonical records of this profile, not only those of this call
            cfg = claiming[0].configs[next(iter(claiming[0].configs))]
            claimed = [r for r in load_claimed(cfg.paths.runs) if r.profile == cfg.profile.name]
            results_dir = Path(cfg.paths.results)
            path = write_claims(claimed, results_dir, load_evidence(results_dir / "evidence"))
            say(f"claims of the paper: {claims_summary(claimed)} -> {path}")
    except (ConfigError, DataError, PretrainedWeightsError, RecordError, TableError) as error:
        say(f"error: {error}", error=True)
        return 2
    return status


if __name__ == "__main__":
    sys.exit(main())

"""Re-key the run records made before the configuration named its classes (records of layout 1).

    .venv/bin/python scripts/rekey_records.py [results/runs] [--dry-run]

Since the data, model and system nodes carry ``_target_`` (and ``data.kind``, ``data.pool`` and ``model.margin``
became the data module's class, ``model.pool: auto`` and ``system.margin``), every configuration hashes to a new
value with the same settings, so an older record is no longer found by its run. For each record of a canonical
cell (no overrides), this composes the cell as ``reproduce`` plans it (experiment, seed, the suite's profile) and
re-keys the record only if that configuration, written in layout 1, hashes to the record's own hash: the proof
that the record is this run. A record that matches neither layout is left where it is and listed.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from stn_repro import components
from stn_repro.identity import compose_config, config_hash, experiment_exists, result_tree, suite_profile_file
from stn_repro.models.build import paper_pool
from stn_repro.results.records import load_records, record_path, write_record


def layout_1_tree(cfg: DictConfig) -> dict[str, Any]:
    """:func:`~stn_repro.identity.result_tree` of ``cfg`` as layout 1 wrote it: ``data.kind`` (the data class's
    task), ``data.pool`` on distorted MNIST, ``model.margin`` on co-localisation; no ``_target_``, no ``system``,
    no ``model.pool`` / ``model.family`` / ``model.family_options``."""
    tree = result_tree(cfg)
    data, model, system = tree["data"], tree["model"], tree.pop("system")
    data.pop("_target_")
    model.pop("_target_")
    data_class = components.data_class(cfg)
    data["kind"] = data_class.task
    if model.pop("pool", None) is not None:  # the distorted-MNIST classifiers: pool was a key of their data
        data["pool"] = paper_pool(components.data_module(cfg).input_shape)
    model.pop("family", None)
    model.pop("family_options", None)
    if "margin" in system:
        model["margin"] = system["margin"]
    return tree


def layout_1_hash(cfg: DictConfig, source_checksum: str) -> str:
    """The hash a layout-1 record of ``cfg`` carries (:func:`~stn_repro.identity.config_hash` of that tree)."""
    tree = {**layout_1_tree(cfg), "source_checksum": source_checksum}
    return hashlib.sha256(json.dumps(tree, sort_keys=True, default=str).encode()).hexdigest()[:16]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="?", default="results/runs", type=Path)
    parser.add_argument("--dry-run", action="store_true", help="say what would move, move nothing")
    args = parser.parse_args(argv)
    moved, current, left = 0, 0, []
    for suite in sorted(p.name for p in args.runs.iterdir() if p.is_dir()):
        for record in load_records(args.runs, suite):
            where = f"{suite}/{record.cell} seed {record.seed}"
            if record.overrides or not experiment_exists(f"{suite}/{record.cell}"):
                left.append(f"{where}: a variant (overrides {record.overrides}); re-run it to record it anew")
                continue
            profile = suite_profile_file(suite, record.profile)
            cfg = compose_config([f"experiment={suite}/{record.cell}", f"seed={record.seed}", f"profile={profile}"])
            checksum = record.data["checksum"]
            new = config_hash(cfg, checksum)
            if new == record.config_hash:
                current += 1
                continue
            if layout_1_hash(cfg, checksum) != record.config_hash:
                left.append(f"{where}: {record.config_hash} is not this cell's configuration in either layout")
                continue
            old_path = record_path(args.runs, suite, record.cell, record.seed, record.config_hash)
            print(f"{old_path.name} -> seed{record.seed}-{new}.json ({where})")
            if not args.dry_run:
                write_record(args.runs, dataclasses.replace(record, config_hash=new))
                old_path.unlink()
            moved += 1
    print(f"{moved} re-keyed{' (dry run)' if args.dry_run else ''}, {current} current, {len(left)} left as they are")
    for line in left:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

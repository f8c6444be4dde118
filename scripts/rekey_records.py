"""Re-key the run records made under an earlier layout of the configuration (layouts 1 and 2).

    .venv/bin/python scripts/rekey_records.py [results/runs] [--dry-run]

A layout change hashes every configuration to a new value with the same settings, so an older record is no longer
found by its run:

- layout 1 → 2: the data, model and system nodes got ``_target_`` (``data.kind``, ``data.pool`` and
  ``model.margin`` became the data module's class, ``model.pool: auto`` and ``system.margin``);
- layout 2 → 3: the ``optim`` node became ``system.optimizer`` (a partial of the torch optimiser, picked from
  ``conf/optimizer/``), ``system.scheduler`` (``conf/scheduler/step.yaml``), ``system.loc_lr_mult`` /
  ``system.theta_*`` and ``trainer.gradient_clip_val`` (``optim.grad_clip``).

For each record of a canonical cell (no overrides), this composes the cell as ``reproduce`` plans it (experiment,
seed, the suite's profile) and re-keys the record only if that configuration, written in an earlier layout, hashes
to the record's own hash: the proof that the record is this run. A record that matches no layout is left where it
is and listed.
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

#: Layout 2's ``optim`` keys that were left out of the hash at these values (they came after the first records).
LAYOUT_2_NEUTRAL = {"theta_target": "full", "theta_target_noise": 0.0}


def layout_2_tree(cfg: DictConfig) -> dict[str, Any]:
    """:func:`~stn_repro.identity.result_tree` of ``cfg`` as layout 2 wrote it: the optimiser, the localisation
    rate, the θ loss and the gradient clipping in one ``optim`` node (``name``: ``sgd``, ``rmsprop`` or ``adam``;
    ``momentum`` 0 for Adam; ``grad_clip`` 0: off); no ``system.optimizer`` / ``system.scheduler`` (the schedule was
    the profile's alone)."""
    tree = result_tree(cfg)
    system, trainer = tree["system"], tree["trainer"]
    optimizer = system.pop("optimizer")
    system.pop("scheduler")
    optim = {
        "name": optimizer["_target_"].rsplit(".", 1)[-1].lower(),
        "lr": optimizer["lr"],
        "momentum": optimizer.get("momentum", 0.0),
        "weight_decay": optimizer["weight_decay"],
        "loc_lr_mult": system.pop("loc_lr_mult"),
        "grad_clip": trainer.pop("gradient_clip_val") or 0.0,
        "theta_loss_weight": system.pop("theta_loss_weight"),
    }
    for key, neutral in LAYOUT_2_NEUTRAL.items():
        if system[key] != neutral:
            optim[key] = system[key]
        system.pop(key)
    return {**tree, "optim": optim}


def layout_1_tree(cfg: DictConfig) -> dict[str, Any]:
    """:func:`layout_2_tree` of ``cfg`` as layout 1 wrote it: ``data.kind`` (the data class's task),
    ``data.pool`` on distorted MNIST, ``model.margin`` on co-localisation; no ``_target_``, no ``system``, no
    ``model.pool`` / ``model.family`` / ``model.family_options``."""
    tree = layout_2_tree(cfg)
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


LAYOUTS = {"1": layout_1_tree, "2": layout_2_tree}


def layout_hash(tree: dict[str, Any], source_checksum: str) -> str:
    """The hash a record of an earlier layout carries (:func:`~stn_repro.identity.config_hash` of its ``tree``)."""
    tree = {**tree, "source_checksum": source_checksum}
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
            layout = next(
                (name for name, tree in LAYOUTS.items() if layout_hash(tree(cfg), checksum) == record.config_hash), None
            )
            if layout is None:
                left.append(f"{where}: {record.config_hash} is not this cell's configuration in any layout")
                continue
            old_path = record_path(args.runs, suite, record.cell, record.seed, record.config_hash)
            print(f"{old_path.name} -> seed{record.seed}-{new}.json ({where}, layout {layout})")
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

"""What identifies a run's result, and whether the run is a canonical cell of its suite.

- **Hash.** :func:`config_hash` covers everything that determines the result: the resolved configuration (less
  :data:`HASH_EXCLUDED`: where things go, how often it logs, on which device and how fast) and the checksum of the
  source digits. A record is stored under its hash, so runs that differ in anything that matters never share a
  file.
- **Reference.** A cell's reference configuration is what ``python -m stn_repro.reproduce suite=<suite>
  profile=<name>`` runs for it: ``experiment=<suite>/<cell>`` under the suite's profile file of that name
  (:func:`reference_overrides`).
- **Overrides.** :func:`protocol_overrides` lists, as ``key=value``, every result-determining value in which a run
  differs from its reference (or from the experiment it was started from, when ``<suite>/<cell>`` is not an
  experiment: smoke runs, renamed hand runs).
- **Canonical.** A run is canonical when ``<suite>/<cell>`` is an experiment and nothing differs: only canonical
  runs make the committed tables (``paths.runs``); every other run is a variant (``paths.variants``).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

#: Keys that do not change a run's result: outputs, logging, progress, the device and speed options (the same
#: result up to float rounding: tests/test_fast_path.py, tests/test_scaling.py), and the forced re-run switch.
HASH_EXCLUDED = (
    "paths",
    "logger",
    "callbacks",
    "progress",
    "hydra",
    "rerun",
    "data.root",
    "data.source",  # which copy of the digits: their checksum is in the hash
    "data.device_resident",
    "profile.seeds",
    "profile.budgets",  # per-model budgets: what a run trains with is in the resolved profile.iterations ...
    "profile.theta_log_every",
    "profile.image_log_every",
    "fast",
    "trainer._target_",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.strategy",
    "trainer.num_nodes",
)
#: Options added after records existed, with the value that reproduces the older behaviour: at that value a key is
#: left out of the hash, so the records made before it stay current (any other value is hashed and an override).
NEUTRAL_DEFAULTS: dict[str, Any] = {
    "model.theta_to_classifier": False,
    "trainer.sync_batchnorm": False,  # a key of the DDP trainer files only: off, a DDP run is its cell's run
}
#: Also not an override: the seed is part of a run's identity, not a change to its cell.
_NOT_OVERRIDES = ("seed",)


def result_tree(cfg: DictConfig) -> dict[str, Any]:
    """The resolved configuration without the :data:`HASH_EXCLUDED` keys and the keys at their
    :data:`NEUTRAL_DEFAULTS`, as plain containers."""
    tree = OmegaConf.to_container(cfg, resolve=True)
    for key in HASH_EXCLUDED:
        _pop(tree, key)
    for key, neutral in NEUTRAL_DEFAULTS.items():
        if OmegaConf.select(cfg, key, default=_ABSENT) == neutral:
            _pop(tree, key)
    return tree


def config_hash(cfg: DictConfig, source_checksum: str) -> str:
    """16 hex digits of the SHA-256 of :func:`result_tree` and the checksum of the source digits."""
    tree = {**result_tree(cfg), "source_checksum": source_checksum}
    return hashlib.sha256(json.dumps(tree, sort_keys=True, default=str).encode()).hexdigest()[:16]


def compose_config(overrides: list[str]) -> DictConfig:
    """``conf/train.yaml`` composed with ``overrides``, inside a running Hydra app or outside one."""
    if GlobalHydra.instance().is_initialized():
        return compose("train", overrides=overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=overrides)


def experiment_exists(name: str) -> bool:
    return (CONF_DIR / "experiment" / f"{name}.yaml").is_file()


def suite_profile_file(suite: str, profile: str) -> str | None:
    """The ``conf/profile`` file that profile ``profile`` (a name such as ``quick``) means in suite ``suite``
    (``profiles:`` in ``conf/suites/<suite>.yaml``), or the file of that name; ``None`` when there is none."""
    suite_file = CONF_DIR / "suites" / f"{suite}.yaml"
    mapping = (OmegaConf.load(suite_file).get("profiles") or {}) if suite_file.is_file() else {}
    name = mapping.get(profile, profile)
    return name if (CONF_DIR / "profile" / f"{name}.yaml").is_file() else None


def reference_overrides(cfg: DictConfig, started_from: str | None = None) -> tuple[list[str], bool]:
    """``(overrides, canonical_candidate)``: the overrides composing the reference of ``cfg``'s cell, and whether
    that reference is the cell's own experiment (``<suite>/<cell>``). ``started_from`` is the experiment the run
    was composed from (Hydra's choice), used when ``<suite>/<cell>`` is not an experiment."""
    own = f"{cfg.suite}/{cfg.cell}"
    experiment = own if experiment_exists(own) else started_from
    overrides = [f"experiment={experiment}"] if experiment else []
    profile = suite_profile_file(str(experiment or own).split("/")[0], cfg.profile.name)
    if profile is not None:
        overrides.append(f"profile={profile}")
    return overrides, experiment == own


def protocol_overrides(cfg: DictConfig, started_from: str | None = None) -> tuple[list[str], bool]:
    """``(overrides, canonical)``: the ``key=value`` leaves of ``cfg`` that differ from its cell's reference
    (sorted; ``key=<absent>`` where the run lacks a key of the reference), and whether there are none and the
    reference is the cell's own experiment."""
    reference_args, candidate = reference_overrides(cfg, started_from)
    reference = _flatten(result_tree(compose_config(reference_args)))
    ours = _flatten(result_tree(cfg))
    differ = {
        key
        for key in set(reference) | set(ours)
        if key not in _NOT_OVERRIDES and reference.get(key, _ABSENT) != ours.get(key, _ABSENT)
    }
    mirrors = _mirrors(cfg)  # e.g. system.iterations: ${profile.iterations}: listed once, as profile.iterations
    changed = [
        f"{key}={_override_value(ours.get(key, _ABSENT))}"
        for key in sorted(differ)
        if not any(_follows(key, mirror, source, differ) for mirror, source in mirrors.items())
    ]
    return changed, candidate and not changed


#: What a run's result depends on in the checkout: a change to anything else (the records and tables a suite writes
#: as it goes, the README) does not make the code ``+dirty``.
CODE_PATHS = ("stn_repro", "conf", "pyproject.toml")


def git_revision(root: Path = CONF_DIR.parent) -> str:
    """Short commit of the checkout at ``root``, ``+dirty`` when a tracked file of :data:`CODE_PATHS` differs from
    it; ``unknown`` outside git."""
    try:
        git = ["git", "-C", str(root)]
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run([*git, "diff", "--quiet", "HEAD", "--", *CODE_PATHS], capture_output=True).returncode
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty else "")


class _Absent:
    def __repr__(self) -> str:
        return "<absent>"


_ABSENT = _Absent()


def _override_value(value: Any) -> str:
    """``value`` as on a Hydra command line: plain words unquoted, anything else as JSON."""
    if isinstance(value, str) and re.fullmatch(r"[\w./-]+", value):
        return value
    return str(value) if value is _ABSENT else json.dumps(value)


def _pop(tree: dict[str, Any], dotted: str) -> None:
    parent, _, leaf = dotted.rpartition(".")
    node = tree
    for part in parent.split(".") if parent else ():
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(leaf, None)


def _mirrors(cfg: DictConfig) -> dict[str, str]:
    """``{key: source}`` for every key of ``cfg`` whose value is a plain reference ``${source}`` to another key."""
    written = _flatten(OmegaConf.to_container(cfg, resolve=False))  # interpolations as written, e.g. "${a.b}"
    return {
        key: match.group(1)
        for key, value in written.items()
        if isinstance(value, str) and (match := re.fullmatch(r"\$\{([\w.]+)\}", value))
    }


def _follows(key: str, mirror: str, source: str, differ: set[str]) -> bool:
    """Whether ``key`` is (inside) ``mirror`` and the value it mirrors differs too, so is listed in its place."""
    if key != mirror and not key.startswith(f"{mirror}."):
        return False
    return f"{source}{key[len(mirror) :]}" in differ


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b": leaf}`` for every leaf of nested dicts (lists are leaves)."""
    if not isinstance(tree, dict) or not tree:
        return {prefix: tree} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat

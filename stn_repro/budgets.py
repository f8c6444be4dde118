"""Per-model compute budgets of a profile: ``${budget:<key>}`` in ``conf/profile/*.yaml``.

A profile may plan its schedule per model kind instead of one schedule for all (``conf/profile/quick.yaml``)::

    profile:
      budgets:
        default: {iterations: 1500, batch_size: 32, by_data: {tc: {iterations: 3000}}}
        fcn: {iterations: 3000, batch_size: 256}
      iterations: ${budget:iterations}

``${budget:iterations}`` reads the entry of ``model.kind`` (else ``default``): its ``by_data.<data.name>`` value
if there is one, else its own, else ``default``'s. The resolved values (``profile.iterations`` ...) are what a run
records and hashes; ``profile.budgets`` itself is left out of the hash (``stn_repro.identity.HASH_EXCLUDED``), so a
change to one kind's budget leaves the other kinds' runs current. An override of the resolved key
(``profile.iterations=20``) wins over the budget.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf


def budget(key: str, *, _root_: DictConfig) -> Any:
    """``profile.budgets``' value of ``key`` for this run's ``model.kind`` and ``data.name`` (see the module)."""
    budgets = OmegaConf.select(_root_, "profile.budgets")
    kind, data = OmegaConf.select(_root_, "model.kind"), OmegaConf.select(_root_, "data.name")
    if budgets is None or "default" not in budgets:
        raise ValueError(f"profile.{key}: ${{budget:{key}}} needs profile.budgets with a default entry")
    entry = budgets[kind] if kind in budgets else budgets.default
    for source in ((entry.get("by_data") or {}).get(data) or {}, entry, budgets.default):
        if key in source:
            return source[key]
    raise ValueError(f"profile.budgets has no {key!r} for model.kind={kind} nor under default")


OmegaConf.register_new_resolver("budget", budget, replace=True)

"""Per-model compute budgets of a profile: ``${budget:<key>}`` in ``conf/profile/*.yaml``.

A profile may plan its schedule per model kind instead of one schedule for all (``conf/profile/quick.yaml``)::

    profile:
      budgets:
        default: {iterations: 1000, batch_size: 64}
        fcn: {iterations: 3000, batch_size: 256}
      iterations: ${budget:iterations}

``${budget:iterations}`` is ``profile.budgets.<model.kind>.iterations``, else ``profile.budgets.default.iterations``.
The resolved values (``profile.iterations`` ...) are what a run records and hashes; ``profile.budgets`` itself is
left out of the hash (``stn_repro.identity.HASH_EXCLUDED``), so a change to one kind's budget leaves the other
kinds' runs current. An override of the resolved key (``profile.iterations=20``) wins over the budget.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf


def budget(key: str, *, _root_: DictConfig) -> Any:
    """``profile.budgets[model.kind][key]``, falling back to ``profile.budgets.default[key]``."""
    budgets = OmegaConf.select(_root_, "profile.budgets")
    kind = OmegaConf.select(_root_, "model.kind")
    if budgets is None:
        raise ValueError(f"profile.{key}: ${{budget:{key}}} needs profile.budgets (per model.kind, or default)")
    for name in (kind, "default"):
        if name in budgets and key in budgets[name]:
            return budgets[name][key]
    raise ValueError(f"profile.budgets has no {key!r} for model.kind={kind} nor under default")


OmegaConf.register_new_resolver("budget", budget, replace=True)

"""The quick profile's per-model compute budgets (``${budget:<key>}``, stn_repro/budgets.py)."""

import pytest
from omegaconf import OmegaConf, open_dict
from omegaconf.errors import InterpolationResolutionError

from stn_repro.identity import compose_config, config_hash, protocol_overrides

SCHEDULE = ("iterations", "batch_size", "lr_step_every", "val_every")


def _schedule(*overrides):
    cfg = compose_config(list(overrides))
    return tuple(cfg.profile[key] for key in SCHEDULE)


def test_fully_connected_models_get_their_own_budget_and_the_others_the_default():
    cfg = compose_config(["experiment=table1/fcn_rts"])
    budgets = cfg.profile.budgets
    fc = tuple(budgets.fcn[key] for key in SCHEDULE)
    default = tuple(budgets.default[key] for key in SCHEDULE)
    assert fc != default and fc[0] > default[0]  # the cheap models train longer
    for cell in ("table1/fcn_r", "table1/st_fcn_tps_e", "cluttered/st_fcn_tc"):
        assert _schedule(f"experiment={cell}") == fc
    for cell in ("table1/cnn_rts", "table1/st_cnn_aff_p", "cluttered/cnn_tc"):
        assert _schedule(f"experiment={cell}") == default


def test_the_paper_profile_is_one_schedule_for_every_model():
    for cell in ("table1/fcn_r", "table1/st_cnn_aff_rts"):
        cfg = compose_config([f"experiment={cell}", "profile=paper"])
        assert _schedule(f"experiment={cell}", "profile=paper") == (150000, 256, 50000, 5000)
        assert (
            "budgets" not in cfg.profile and not cfg.data.resample_every_epoch and cfg.system.optimizer.momentum == 0.0
        )


def test_an_override_of_the_resolved_key_wins_and_is_the_recorded_override():
    cfg = compose_config(["experiment=table1/fcn_r", "profile.iterations=20"])
    assert cfg.profile.iterations == 20
    assert protocol_overrides(cfg) == (["profile.iterations=20"], False)
    cfg = compose_config(["experiment=table1/fcn_r", "profile.budgets.fcn.iterations=20"])
    assert cfg.profile.iterations == 20
    assert protocol_overrides(cfg) == (["profile.iterations=20"], False)


def test_one_kinds_budget_leaves_the_other_kinds_hashes_alone():
    def hashes(*overrides):
        return [
            config_hash(compose_config([f"experiment={c}", *overrides]), "x") for c in ("table1/fcn_r", "table1/cnn_r")
        ]

    fcn, cnn = hashes()
    fcn_longer, cnn_same = hashes("profile.budgets.fcn.iterations=5000")
    assert fcn_longer != fcn and cnn_same == cnn


def test_a_budget_without_the_key_names_it():
    cfg = compose_config(["experiment=table1/cnn_r"])
    with open_dict(cfg):
        del cfg.profile.budgets.default["iterations"]
    with pytest.raises(InterpolationResolutionError, match="no 'iterations' for model.kind=cnn nor under default"):
        OmegaConf.to_container(cfg, resolve=True)


def test_a_budget_can_differ_by_dataset_within_a_kind():
    base = ["+profile.budgets.default.by_data={tc: {iterations: 77}}"]
    assert compose_config(["experiment=cluttered/cnn_tc", *base]).profile.iterations == 77
    assert compose_config(["experiment=cluttered/st_cnn_tc", *base]).profile.iterations == 77
    cnn_r = compose_config(["experiment=table1/cnn_r", *base]).profile
    assert cnn_r.iterations == cnn_r.budgets.default.iterations  # another dataset: the kind's own value
    fcn_tc = compose_config(["experiment=cluttered/fcn_tc", *base]).profile
    assert fcn_tc.iterations == fcn_tc.budgets.fcn.iterations  # a kind with its own entry does not inherit it

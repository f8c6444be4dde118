"""The schemas of the shared groups (stn_repro/schema.py): every configuration the product ships fits them, and a
wrong type, an unknown key, a choice or a range out of bounds ends in one line naming the key."""

import pytest
from omegaconf import OmegaConf

from stn_repro.components import check_targets
from stn_repro.config import ConfigError
from stn_repro.identity import CONF_DIR, compose_config, suite_profile_file
from stn_repro.schema import SCHEMAS, check_groups
from stn_repro.validation import validate

SUITES = sorted(p.stem for p in (CONF_DIR / "suites").glob("*.yaml") if p.stem != "smoke")


@pytest.mark.parametrize("suite", SUITES)
def test_every_experiment_at_both_profiles_fits_the_schemas(suite):
    for cell in OmegaConf.load(CONF_DIR / "suites" / f"{suite}.yaml").cells:
        for profile in ("quick", "paper"):
            check_groups(compose_config([f"experiment={cell}", f"profile={suite_profile_file(suite, profile)}"]))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["system.optimizer.lr=abc"], "system.optimizer.lr: Value 'abc' of type 'str' could not be converted to Float"),
        (["system.optimizer.lr=0"], r"system.optimizer.lr=0.0 is invalid; expected a number > 0.0"),
        (["system.theta_target=rot"], "system.theta_target='rot' is invalid; expected one of full, rotation"),
        (["system.theta_loss_weight=-1"], r"system.theta_loss_weight=-1(\.0)? is invalid; expected a number >= 0"),
        (["profile.iterations=2.5"], "profile.iterations: Value '2.5' of type 'float' could not be converted"),
        (["profile.seeds=[]"], r"profile.seeds=\[\] is invalid"),
        (["profile.image_log_every=-1"], "profile.image_log_every=-1 is invalid; expected an integer >= 0"),
        (["trainer.precision=16"], "trainer.precision='16' is invalid; expected one of 32-true"),
        (["+trainer.gpus=1"], "trainer.gpus: Key 'gpus' not in 'Trainer'"),
        (["fast.compile=yes"], "fast.compile='yes' is invalid; expected true or false"),
        (["fast.compile_mode=fast"], "fast.compile_mode='fast' is invalid"),
        (["progress.every=0"], "progress.every=0 is invalid; expected an integer >= 1"),
        (
            ["logger=wandb", "logger.wandb.mode=cloud"],
            "logger.wandb.mode='cloud' is invalid; expected one of auto, online",
        ),
    ],
)
def test_a_value_that_does_not_fit_stops_with_one_line_naming_its_key(overrides, message):
    with pytest.raises(ConfigError, match=message) as caught:
        check_groups(compose_config(overrides))
    assert "\n" not in str(caught.value) and str(caught.value).startswith("config error: ")


def test_the_schemas_leave_the_composed_tree_as_written():
    """The hash covers the tree as composed: checking it must not coerce a value or add a default key."""
    cfg = compose_config(["experiment=table1/st_cnn_aff_rts", "system.optimizer.momentum=0"])
    before = OmegaConf.to_container(cfg, resolve=True)
    check_groups(cfg)
    optimizer = before["system"]["optimizer"]
    assert OmegaConf.to_container(cfg, resolve=True) == before and optimizer["momentum"] == 0
    assert isinstance(optimizer["momentum"], int) and set(SCHEMAS) <= set(before)


@pytest.mark.parametrize(
    ("overrides", "where"),
    [
        (["trainer._target_=no_such_module.Trainer"], "trainer._target_=no_such_module.Trainer"),
        (["logger=wandb", "logger.wandb._target_=no_such_module.Log"], "logger.wandb._target_=no_such_module.Log"),
    ],
)
def test_a_trainer_or_logger_node_naming_no_class_stops_before_anything_is_built(overrides, where):
    with pytest.raises(ConfigError, match=f"{where} is not found: ") as caught:
        check_targets(compose_config(["experiment=table1/fcn_r", *overrides]))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("experiment", "override", "message"),
    [
        ("table1/st_cnn_aff_r", "model.localisation.kind=rnn", "model.localisation.kind='rnn' is invalid"),
        ("table1/st_fcn_aff_r", "model.localisation.hidden=[32,0]", r"model.localisation.hidden=\[32, 0\] is invalid"),
        ("table1/st_cnn_aff_r", "+model.localisation.hiden=[20]", "model.localisation.hiden: Key 'hiden' not in"),
        ("table1/st_cnn_aff_r", "model.localisation.kernel_size=x", "model.localisation.kernel_size: Value 'x'"),
        ("mnist3d/st", "model.localisation.downsample=0", "model.localisation.downsample=0 is invalid"),
        ("colocalisation/t", "model.localisation.channels=[8,-1]", r"model.localisation.channels=\[8, -1\] is invalid"),
    ],
)
def test_a_localisation_node_is_checked_against_its_kinds_schema(experiment, override, message):
    suite = experiment.split("/")[0]
    cfg = compose_config([f"experiment={experiment}", f"profile={suite_profile_file(suite, 'quick')}", override])
    with pytest.raises(ConfigError, match=message) as caught:
        validate(cfg)
    assert "\n" not in str(caught.value)

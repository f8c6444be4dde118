"""The optimiser and schedule a system is given (partials: conf/optimizer/, conf/scheduler/step.yaml and
stn_repro/systems/optimisation.py), and the system's localisation rate on top of them."""

from functools import partial

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from stn_repro import components
from stn_repro.config import ConfigError
from stn_repro.identity import compose_config
from stn_repro.systems import ClassificationSystem
from stn_repro.systems.optimisation import step_schedule
from stn_repro.validation import validate


def _rates(schedule: torch.optim.lr_scheduler.LRScheduler, steps: list[int]) -> list[float]:
    rates, done = [], 0
    for step in steps:
        for _ in range(step - done):
            schedule.optimizer.step()
            schedule.step()
        done = step
        rates.append(schedule.get_last_lr()[0])
    return rates


def test_the_step_schedule_divides_the_rate_by_ten_every_interval_or_at_each_milestone():
    sgd = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.01)
    every = _rates(step_schedule(sgd, every=5, gamma=0.1), [0, 4, 5, 9, 10, 15])
    assert every == pytest.approx([0.01, 0.01, 0.001, 0.001, 1e-4, 1e-5])
    adam = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=1.0)
    milestones = _rates(step_schedule(adam, gamma=0.5, milestones=[6, 2]), [0, 1, 2, 5, 6, 20])
    assert milestones == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.25, 0.25])


@pytest.mark.parametrize("every, milestones", [(7, None), (10, [26, 3, 25])])
def test_the_step_schedule_sets_torchs_lambdalr_rates_bit_for_bit_and_keeps_its_state(every, milestones):
    def optimiser() -> torch.optim.Optimizer:
        weight, bias = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
        return torch.optim.SGD([{"params": [weight]}, {"params": [bias], "lr": 0.003}], lr=0.01)

    ours, torchs = optimiser(), optimiser()
    schedule = step_schedule(ours, every=every, gamma=0.1, milestones=milestones)
    reference = torch.optim.lr_scheduler.LambdaLR(torchs, schedule.lr_lambdas[0])
    for step in range(60):
        for optimiser_, schedule_ in ((ours, schedule), (torchs, reference)):
            optimiser_.step()
            schedule_.step()
        assert [g["lr"] for g in ours.param_groups] == [g["lr"] for g in torchs.param_groups], step
        assert schedule.get_last_lr() == reference.get_last_lr()
    assert ours.param_groups[0]["lr"] < 0.01 * 0.1**2  # the rate did change
    assert schedule.state_dict() == reference.state_dict()
    resumed = step_schedule(optimiser(), every=every, gamma=0.1, milestones=milestones)
    resumed.load_state_dict(reference.state_dict())  # a checkpoint written before StepSchedule (plain LambdaLR)
    resumed.optimizer.step()
    resumed.step()
    reference.step()
    assert resumed.get_last_lr() == reference.get_last_lr() and resumed.last_epoch == reference.last_epoch


def test_the_localisation_rate_is_scaled_before_the_schedule_and_follows_it():
    model = nn.Sequential(nn.Linear(2, 2))
    system = ClassificationSystem(model, partial(torch.optim.SGD, lr=0.1), loc_lr_mult=0.5)
    groups = [{"params": [model[0].weight]}, {"params": [model[0].bias]}]
    configured = system.optimisation(groups, localisation_groups=[1])
    schedule = configured["lr_scheduler"]["scheduler"]
    assert configured["lr_scheduler"]["interval"] == "step"
    assert _rates(schedule, [0]) == pytest.approx([0.1]) and schedule.get_last_lr()[1] == pytest.approx(0.05)


def test_the_composed_configuration_gives_the_system_its_optimiser_and_schedule():
    cfg = compose_config(["experiment=rnn_spn/rnn_spn", "profile=rnn_quick"])
    model = nn.Sequential(nn.Linear(2, 2))
    system = components.build(cfg.system, "system", model)
    assert system.loc_lr_mult == cfg.system.loc_lr_mult == 0.1
    configured = system.optimisation([{"params": list(model.parameters())}], localisation_groups=[])
    optimiser, schedule = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    assert isinstance(optimiser, torch.optim.RMSprop)
    assert optimiser.defaults["lr"] == cfg.system.optimizer.lr and optimiser.defaults["alpha"] == 0.9
    assert optimiser.defaults["eps"] == 1e-6
    lr, factor, step = cfg.system.optimizer.lr, cfg.profile.lr_gamma, cfg.profile.lr_step_every
    assert _rates(schedule, [step - 1, step]) == pytest.approx([lr, lr * factor])


@pytest.mark.parametrize(("profile", "milestones"), [("cub_quick", [400, 500]), ("quick", None)])
def test_the_scheduler_node_follows_the_profile(profile, milestones):
    cfg = compose_config([f"profile={profile}"])
    schedule = instantiate(cfg.system.scheduler)(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0))
    every, gamma = cfg.profile.lr_step_every, cfg.profile.lr_gamma
    points = milestones or [every, 2 * every]
    assert _rates(schedule, [points[0] - 1, points[0], points[1]]) == pytest.approx([1.0, gamma, gamma**2])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["optimizer=adam", "+system.optimizer.momentum=0.9"],
            r"system\.optimizer \(torch\.optim\.Adam\) does not build: .*'momentum'; remove a key",
        ),
        (["+system.optimizer.lrr=0.1"], r"SGD.* unexpected keyword argument 'lrr'; remove a key"),
        (["optimizer=rmsprop", "system.optimizer.alpha=-1"], r"Invalid alpha value: -1(\.0)?; change the value"),
        (["system.optimizer._partial_=false"], r"system\.optimizer\._partial_=False is invalid; expected true"),
        (
            ["system.optimizer._target_=torch.optim.Lbfgs"],
            r"system\.optimizer\._target_=torch\.optim\.Lbfgs is not found",
        ),
        (
            ["system.scheduler.gamma=abc"],
            r"system\.scheduler \(stn_repro\..*step_schedule\) does not build: .*change the",
        ),
        (
            ["+system.scheduler.warmup=5"],
            r"unexpected keyword argument 'warmup'; remove a key .*~system\.scheduler\.<key>$",
        ),
        (["system.loc_lr_mult=-1"], r"system\.loc_lr_mult=-1(\.0)? is invalid; expected a number >= 0"),
        (["trainer.gradient_clip_val=0"], r"trainer\.gradient_clip_val=0(\.0)? is invalid; expected a number > 0"),
    ],
)
def test_a_bad_optimiser_node_stops_with_one_line_naming_it(overrides, message):
    with pytest.raises(ConfigError, match=message) as caught:
        validate(compose_config(["experiment=table1/st_cnn_aff_r", *overrides]))
    assert "\n" not in str(caught.value)


def test_a_partial_of_your_own_optimiser_class_is_built_with_the_system_groups():
    cfg = compose_config(["experiment=table1/fcn_r", "optimizer=adam", "system.optimizer._target_=torch.optim.AdamW"])
    validate(cfg)
    model = nn.Sequential(nn.Linear(2, 2))
    system = components.build(cfg.system, "system", model)
    assert isinstance(system.configure_optimizers()["optimizer"], torch.optim.AdamW)

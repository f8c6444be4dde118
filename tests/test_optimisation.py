"""The optimiser and schedule factories a system is given (stn_repro/systems/optimisation.py), and the system's
localisation rate on top of them."""

import pytest
import torch
from torch import nn

from stn_repro import components
from stn_repro.identity import compose_config
from stn_repro.systems import ClassificationSystem
from stn_repro.systems.optimisation import optimizer_factory, step_schedule


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
    sgd = optimizer_factory("sgd", lr=0.01)([{"params": [nn.Parameter(torch.zeros(1))]}])
    every = _rates(step_schedule(sgd, every=5, gamma=0.1), [0, 4, 5, 9, 10, 15])
    assert every == pytest.approx([0.01, 0.01, 0.001, 0.001, 1e-4, 1e-5])
    adam = optimizer_factory("adam", lr=1.0)([{"params": [nn.Parameter(torch.zeros(1))]}])
    milestones = _rates(step_schedule(adam, gamma=0.5, milestones=[6, 2]), [0, 1, 2, 5, 6, 20])
    assert milestones == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.25, 0.25])


def test_the_localisation_rate_is_scaled_before_the_schedule_and_follows_it():
    model = nn.Sequential(nn.Linear(2, 2))
    system = ClassificationSystem(model, optimizer_factory("sgd", lr=0.1), loc_lr_mult=0.5)
    groups = [{"params": [model[0].weight]}, {"params": [model[0].bias]}]
    configured = system.optimisation(groups, localisation_groups=[1])
    schedule = configured["lr_scheduler"]["scheduler"]
    assert configured["lr_scheduler"]["interval"] == "step"
    assert _rates(schedule, [0]) == pytest.approx([0.1]) and schedule.get_last_lr()[1] == pytest.approx(0.05)


def test_the_composed_configuration_gives_the_system_its_optimiser_and_schedule():
    cfg = compose_config(["experiment=rnn_spn/rnn_spn", "profile=rnn_quick"])
    settings = components.system_settings(cfg)
    optimiser = settings["optimizer"]([{"params": [nn.Parameter(torch.zeros(1))]}])
    assert isinstance(optimiser, torch.optim.RMSprop)
    assert optimiser.defaults["lr"] == cfg.optim.lr and optimiser.defaults["alpha"] == 0.9
    schedule = settings["scheduler"](optimiser)
    assert settings["loc_lr_mult"] == cfg.optim.loc_lr_mult
    factor = cfg.profile.lr_gamma
    step = cfg.profile.lr_step_every
    assert _rates(schedule, [step - 1, step]) == pytest.approx([cfg.optim.lr, cfg.optim.lr * factor])
    with pytest.raises(ValueError, match="optimizer must be one of sgd, rmsprop, adam, got 'adamw'"):
        optimizer_factory("adamw")

"""A model of your own, added by a class and a YAML file only (the README's "Add your own model")."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from test_pipeline import tiny_overrides
from torch import nn

from stn_repro.cli import check_arguments
from stn_repro.config import ConfigError
from stn_repro.models import count_parameters
from stn_repro.train import run
from stn_repro.validation import validate

CONF = Path(__file__).resolve().parents[1] / "conf"

pytestmark = pytest.mark.usefixtures("offline")


class ToyNet(nn.Module):
    """The class a user writes: it takes the data's ``in_shape`` ``(C, H, W)`` and ``num_classes``, and its options."""

    def __init__(self, in_shape: tuple[int, ...], num_classes: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(in_shape).prod()), hidden), nn.ReLU())
        self.out = nn.Linear(hidden, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.out(self.layers(images))


def user_config_folder(tmp_path: Path, target: str = f"{__name__}.ToyNet") -> Path:
    """The YAML a user writes, in a folder of their own (``hydra.searchpath``): ``model/toy.yaml``."""
    folder = tmp_path / "my_conf"
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "toy.yaml").write_text(f"_target_: {target}\nkind: toy\nhidden: 24\n", encoding="utf-8")
    return folder


def _compose(folder: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=[f"hydra.searchpath=[file://{folder}]", "model=toy", *overrides])


def test_a_model_of_your_own_trains_tests_and_is_recorded(tmp_path, data_root):
    cfg = _compose(user_config_folder(tmp_path), "data=rts", "transformer=none", *tiny_overrides(tmp_path, data_root))
    validate(cfg)
    record = run(cfg, tmp_path / "out")
    assert record.status == "finished" and record.cell == "toy_none_rts" and record.iterations == 2
    assert record.params == count_parameters(ToyNet((1, 42, 42), 10, 24)) == 42 * 42 * 24 + 24 + 24 * 10 + 10
    assert f"model: {__name__}.ToyNet (your own, not one of the paper's)" in record.deviations
    assert not record.canonical and "model._target_=" + f"{__name__}.ToyNet" in record.overrides


@pytest.mark.parametrize(
    ("target", "overrides", "message"),
    [
        ("no_such_module.Net", [], "model._target_=no_such_module.Net is not found: "),
        (f"{__name__}.ToyNet", ["model.kind=st_cnn"], "model.kind='st_cnn' is invalid; expected a name for your model"),
        (f"{__name__}.ToyNet", ["+model.depth=3"], f"model._target_={__name__}.ToyNet does not build: "),
        ("collections.OrderedDict", [], "expected a torch.nn.Module class"),
    ],
)
def test_a_bad_model_of_your_own_stops_with_one_line(target, overrides, message, tmp_path, data_root):
    cfg = _compose(user_config_folder(tmp_path, target), *overrides, *tiny_overrides(tmp_path, data_root))
    with pytest.raises(ConfigError, match=message) as caught:
        run(cfg, tmp_path / "out")
    assert "\n" not in str(caught.value)


def test_the_command_line_check_composes_with_your_own_config_folder(tmp_path):
    folder = user_config_folder(tmp_path)
    check_arguments([f"hydra.searchpath=[file://{folder}]", "model=toy", "transformer=none"])  # no error
    with pytest.raises(ConfigError, match="Could not find 'model/toy'"):
        check_arguments(["model=toy"])

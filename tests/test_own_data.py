"""A dataset of your own, added by a data-module class and a YAML file only (the README's "Add your own dataset"),
trained with a model of your own (tests/test_own_model.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from test_own_model import user_config_folder

from stn_repro.config import ConfigError
from stn_repro.data.base import SplitDataModule
from stn_repro.data.batches import TensorBatches
from stn_repro.train import run
from stn_repro.validation import validate

CONF = Path(__file__).resolve().parents[1] / "conf"

pytestmark = pytest.mark.usefixtures("offline")


class StripesDataModule(SplitDataModule):
    """The class a user writes: ``size``² grey images with a bright stripe on the left half (class 0) or the right
    half (class 1); ``count`` training and ``count`` test images, generated from a fixed seed, the training ones
    drawn anew every epoch with ``resample_every_epoch`` (the ``quick`` profile's setting)."""

    def __init__(self, size: int, count: int, root: str, seed: int, batch_size: int, val_size: float = 0.25,
                 resample_every_epoch: bool = False, name: str | None = None) -> None:  # fmt: skip
        super().__init__(root, seed, val_size, batch_size, log=print, name=name)
        self.size, self.count, self.num_classes = size, count, 2
        self.resample_every_epoch = resample_every_epoch

    def source_metadata(self) -> dict:
        return {"source": "generated", "digits": "stripes", "n_train": self.count, "n_test": self.count,
                "full_dataset": True, "checksum": f"stripes-{self.size}-{self.count}"}  # fmt: skip

    def _images(self, rng: np.random.Generator, count: int) -> dict[str, np.ndarray]:
        labels = rng.integers(0, 2, count)
        images = rng.integers(0, 60, (count, self.size, self.size)).astype(np.uint8)
        half = self.size // 2
        for image, label in zip(images, labels, strict=True):
            image[:, half * label : half * (label + 1)] += 150
        return {"images": images, "labels": labels.astype(np.int64)}

    def _setup(self) -> None:
        rng = np.random.default_rng(0)
        pool, test = self._images(rng, self.count), self._images(rng, self.count)
        train_index, val_index = self._holdout(self.count, "stripes")
        self.splits = {
            "train": {k: v[train_index] for k, v in pool.items()},
            "val": {k: v[val_index] for k, v in pool.items()},
            "test": test,
        }
        self.metadata = {
            "source": self.source_metadata(),
            "sizes": {k: len(v["labels"]) for k, v in self.splits.items()},
        }

    def _regenerate(self, epoch: int) -> dict[str, np.ndarray]:
        return self._images(np.random.default_rng([self.seed, epoch]), len(self.splits["train"]["labels"]))

    def _build_loader(self, split: str, train: bool) -> TensorBatches:
        rank, world_size = self._share(train)
        regenerate = self._regenerate if train and self.resample_every_epoch else None
        return TensorBatches(self.splits[split], self.batch_size, shuffle=train, seed=self.seed, rank=rank,
                             world_size=world_size, regenerate=regenerate)  # fmt: skip

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (1, self.size, self.size)


def user_data_folder(tmp_path: Path, target: str = f"{__name__}.StripesDataModule") -> Path:
    """The YAML a user writes beside their model's: ``data/stripes.yaml``."""
    folder = user_config_folder(tmp_path)
    (folder / "data").mkdir()
    text = f"_target_: {target}\nname: stripes\nsize: 8\ncount: 64\nroot: ${{paths.data}}\n"
    (folder / "data" / "stripes.yaml").write_text(text, encoding="utf-8")
    return folder


def _compose(folder: Path, tmp_path: Path, *overrides: str):
    paths = [
        f"paths.{key}={tmp_path / key}" for key in ("data", "runs", "variants", "models", "checkpoints", "results")
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=[
            f"hydra.searchpath=[file://{folder}]", "data=stripes", "model=toy", "transformer=none",
            "profile.iterations=40", "profile.val_every=40", "profile.batch_size=16", "system.optimizer.lr=0.1", *paths,
            *overrides,
        ])  # fmt: skip


def test_a_dataset_of_your_own_trains_tests_and_is_recorded(tmp_path):
    cfg = _compose(user_data_folder(tmp_path), tmp_path)
    validate(cfg)
    record = run(cfg, tmp_path / "out")
    assert record.status == "finished" and record.cell == "toy_none_stripes" and record.iterations == 40
    assert record.data["n_train"] == 48 and record.data["n_val"] == 16 and record.data["n_test"] == 64
    assert record.metrics["test/err"] < 10  # the stripe's side is learnt: the run really trained on these data
    assert f"data: {__name__}.StripesDataModule (your own, not the paper's)" in record.deviations
    assert not record.canonical and record.outcomes is not None


def test_a_bad_dataset_of_your_own_stops_with_one_line(tmp_path):
    cfg = _compose(user_data_folder(tmp_path, "no_such_module.Data"), tmp_path)
    with pytest.raises(ConfigError, match="data._target_=no_such_module.Data is not found: ") as caught:
        validate(cfg)
    cfg = _compose(user_data_folder(tmp_path / "typo"), tmp_path, "+data.colour=red")
    with pytest.raises(ConfigError, match=f"data._target_={__name__}.StripesDataModule does not build: ") as caught:
        validate(cfg)  # before anything runs: a suite checks every cell first
    assert "\n" not in str(caught.value) and "colour" in str(caught.value)

"""Base classes of the LightningDataModules: options, the validation hold-out, set-up once, the three loaders.

:class:`SplitDataModule` holds what every data module shares: the common options (``root``, ``seed``, ``val_size``,
``batch_size``, ``device_resident``, ``log``) and their checks, :meth:`~SplitDataModule.setup` run once, the
validation split carved from the training pool (``val_size`` a count or a fraction), the device batches are built
on, each process's share of the training batches, and the train / val / test loaders. :class:`DigitSetDataModule`
adds the digits of :func:`~stn_repro.data.sources.resolve_digits` (the distorted-MNIST and the volume modules).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytorch_lightning as pl
import torch

from stn_repro.data.batches import BatchGroups, trainer_share
from stn_repro.data.distortions import split_seed
from stn_repro.data.sources import DigitSet, resolve_digits


class SplitDataModule(pl.LightningDataModule):
    """A dataset in train / val / test splits, the validation split held out of the training pool.

    Subclasses define :meth:`source_metadata`, :meth:`_setup` (builds their splits and fills :attr:`metadata`, with
    at least ``"source"`` and ``"sizes"``), :meth:`_build_loader` and :attr:`input_shape`.

    Args:
        root: data folder.
        seed: data seed (validation split, shuffling, ...).
        val_size: validation samples held out of the training pool: a count (int) or a fraction (float < 1).
        batch_size: training batch size, all processes together (evaluation batches have the same size).
        log: receives one-line progress messages (the training script replaces it: ``data.log = ...``).
        device_resident: build the batches on the trainer's device (:meth:`_device`).
        name: the dataset's name in cell names and messages (``data.name``).
    """

    #: What the messages call one sample.
    unit = "sample"
    #: The experiment family whose checks and deviation notes a run on these data follows (:mod:`stn_repro.tasks`);
    #: ``None`` for a data module of your own (the run then carries the general notes only).
    task: ClassVar[str | None] = None
    #: Whether the training loader is an :class:`~stn_repro.data.batches.EpochBatches` (resumed exactly, and handed
    #: out several batches per training step with ``fast.steps_per_call``: :meth:`train_in_groups`).
    epoch_batches: ClassVar[bool] = True

    def __init__(
        self,
        root: str | Path,
        seed: int,
        val_size: int | float,
        batch_size: int,
        log: Callable[[str], None],
        device_resident: bool = False,
        name: str | None = None,
    ) -> None:
        super().__init__()
        article = "an" if self.unit[0] in "aeiou" else "a"
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        if not (0 <= val_size < 1 or (isinstance(val_size, int) and val_size >= 0)):
            raise ValueError(
                f"data.val_size must be {article} {self.unit} count >= 0 or a fraction in [0, 1), got {val_size}"
            )
        self.root = Path(root)
        self.seed = seed
        self.val_size = val_size
        self.batch_size = batch_size
        self.log = log
        self.device_resident = device_resident
        self.name = name or type(self).__name__
        self.metadata: dict[str, Any] = {}
        self._is_set_up = False
        self._group = (1, 0)  # (batches per training step, the run's steps): train_in_groups

    def source_metadata(self) -> dict[str, Any]:
        """Where the data come from: ``source``, ``digits`` (the dataset), counts, ``checksum``, ``full_dataset``."""
        raise NotImplementedError

    @property
    def input_shape(self) -> tuple[int, ...]:
        """``(C, H, W)`` (or ``(C, D, H, W)``) of one input."""
        raise NotImplementedError

    def model_inputs(self) -> dict[str, Any]:
        """What the model's constructor is given besides its ``model`` node (:func:`stn_repro.components.model`):
        here the input shape ``in_shape`` and the class count ``num_classes``."""
        return {"in_shape": tuple(self.input_shape), "num_classes": self.num_classes}

    def system_inputs(self) -> dict[str, Any]:
        """What the Lightning system's constructor is given from the data besides the model and its settings."""
        return {}

    # -- splits --------------------------------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        """Build the splits and :attr:`metadata` (on the first call only: Lightning calls it once per stage)."""
        if not self._is_set_up:
            self._setup()
            self._is_set_up = True

    def _setup(self) -> None:
        raise NotImplementedError

    def _validation_count(self, n: int) -> int:
        """Validation samples out of a training pool of ``n``: ``val_size`` itself, or that fraction of ``n``.

        Raises:
            ValueError: none of the ``n`` would be left for training.
        """
        n_val = int(round(self.val_size * n)) if isinstance(self.val_size, float) else int(self.val_size)
        if n_val >= n:
            raise ValueError(f"data.val_size={self.val_size} leaves no training {self.unit}s out of {n}")
        return n_val

    def _holdout(self, n: int, stream: str) -> tuple[np.ndarray, np.ndarray]:
        """``(train, val)``: sorted positions in a training pool of ``n``, the validation ones the last
        :meth:`_validation_count` of a permutation seeded by ``split_seed(seed, "val", stream)``."""
        n_val = self._validation_count(n)
        order = np.random.default_rng(split_seed(self.seed, "val", stream)).permutation(n)
        return np.sort(order[: n - n_val]), np.sort(order[n - n_val :])

    # -- loaders -------------------------------------------------------------------------------------------------

    def _device(self) -> torch.device | None:
        """The trainer's device with ``device_resident``; else ``None`` (batches on the CPU; Lightning moves them)."""
        if not self.device_resident or self.trainer is None:
            return None
        return self.trainer.strategy.root_device

    def _share(self, train: bool) -> tuple[int, int]:
        """``(rank, world_size)``: this process's share of every training batch; evaluation batches are whole."""
        return trainer_share(self.trainer) if train else (0, 1)

    def _build_loader(self, split: str, train: bool) -> Iterable[Any]:
        """The batches of ``split``; ``train``: the training loader (shuffled, shared between processes)."""
        raise NotImplementedError

    def loader(self, split: str) -> Iterable[Any]:
        """The batches of ``split`` (``"train"``, ``"val"`` or ``"test"``)."""
        if not self._is_set_up:
            raise RuntimeError("call setup() before asking for a dataloader")
        return self._build_loader(split, train=split == "train")

    def train_in_groups(self, size: int, total: int) -> None:
        """Hand the training batches out ``size`` at a time (:class:`~stn_repro.data.batches.BatchGroups`), for a
        run of ``total`` optimiser steps taking ``size`` per Lightning training step (``fast.steps_per_call``, which
        decides whether the data can: :attr:`epoch_batches`)."""
        self._group = (size, total)

    def train_dataloader(self) -> Iterable[Any]:
        batches = self.loader("train")
        size, total = self._group
        return BatchGroups(batches, size, total) if size > 1 else batches

    def val_dataloader(self) -> Iterable[Any]:
        return self.loader("val")

    def test_dataloader(self) -> Iterable[Any]:
        return self.loader("test")


class DigitSetDataModule(SplitDataModule):
    """A :class:`SplitDataModule` over one digit set (MNIST or Fashion-MNIST), resolved on first use.

    Args:
        source, digits, download_timeout: where the digits come from (see
            :func:`~stn_repro.data.sources.resolve_digits`; the source is announced through ``log``).
        test_seed: seed of the test set; keep it fixed so every run is tested on the same inputs.
        resample_every_epoch: new random training inputs every epoch (else one fixed set).
        return_truth: yield the ground truth dict as a third element of each batch.
        (others): as :class:`SplitDataModule`.
    """

    def __init__(
        self,
        *,
        root: str | Path,
        source: str,
        digits: str,
        seed: int,
        test_seed: int,
        val_size: int | float,
        batch_size: int,
        resample_every_epoch: bool,
        device_resident: bool,
        return_truth: bool,
        download_timeout: float,
        log: Callable[[str], None],
        name: str | None,
    ) -> None:
        super().__init__(root, seed, val_size, batch_size, log, device_resident, name)
        self.source = source
        self.digits = digits
        self.test_seed = test_seed
        self.resample_every_epoch = resample_every_epoch
        self.return_truth = return_truth
        self.download_timeout = download_timeout
        self.digit_set: DigitSet | None = None

    def source_metadata(self) -> dict[str, Any]:
        """Where the digits come from (resolving them if needed): source, counts, checksum, full_dataset, ..."""
        return self._digits().metadata()

    def _digits(self) -> DigitSet:
        if self.digit_set is None:
            self.digit_set = resolve_digits(self.root, self.source, self.digits, self.download_timeout, self.log)
        return self.digit_set

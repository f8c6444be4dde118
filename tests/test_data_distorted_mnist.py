"""DistortedMNISTDataModule and TensorBatches on the bundled MNIST sample (no network)."""

import numpy as np
import pytest
import torch

from stn_repro.data import sources
from stn_repro.data.batches import TensorBatches
from stn_repro.data.distorted_mnist import DistortedMNISTDataModule


@pytest.fixture(autouse=True)
def no_download(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(sources, "_download_with_torchvision", refuse)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """One data folder for the whole module, so caches built by one test are reused by the next."""
    return tmp_path_factory.mktemp("data")


def _module(tmp_path, distortion="R", **kwargs):
    messages = []
    dm = DistortedMNISTDataModule(distortion, root=tmp_path, source="bundled", log=messages.append, **kwargs)
    dm.prepare_data()
    dm.setup()
    return dm, messages


def test_splits_sizes_and_batches(root):
    dm, messages = _module(root, "RTS", val_size=500, batch_size=128, device_resident=False)
    assert dm.metadata["sizes"] == {"train": 3500, "val": 500, "test": 1000}
    assert dm.metadata["source"]["source"] == "bundled" and dm.metadata["source"]["full_dataset"] is False
    assert any("BUNDLED SAMPLE" in m for m in messages)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (128, 1, 42, 42) and images.dtype == torch.float32
    assert labels.dtype == torch.int64
    assert 0.0 <= images.min().item() and images.max().item() <= 1.0
    assert dm.input_shape == (1, 42, 42)
    assert len(dm.val_dataloader()) == 4 and len(dm.test_dataloader()) == 8


def test_background_is_zero_like_the_padding(root):
    """Normalisation happens after distortion and never subtracts a mean: the canvas corners are exactly 0."""
    dm, _ = _module(root, "TC", device_resident=False)
    images, _ = next(iter(dm.test_dataloader()))
    assert (images == 0).float().mean().item() > 0.7
    assert images.min().item() == 0.0


def test_validation_and_training_are_disjoint_and_cover_the_training_set(root):
    dm, _ = _module(root, "R", val_size=0.25, device_resident=False)
    train, val = dm.splits["train"], dm.splits["val"]
    assert len(train["labels"]) == 3000 and len(val["labels"]) == 1000
    seen = {img.tobytes() for img in train["images"]}
    assert not any(img.tobytes() in seen for img in val["images"])


def test_second_module_hits_the_cache_and_gets_identical_data(tmp_path):
    first, _ = _module(tmp_path, "P")
    second, messages = _module(tmp_path, "P")
    assert all("cache hit" in m for m in messages if m.startswith("cache"))
    for split in ("train", "val", "test"):
        for key in first.splits[split]:
            assert np.array_equal(first.splits[split][key], second.splits[split][key])


def test_seed_changes_training_data_but_not_the_test_set(root):
    a, _ = _module(root, "R", seed=0)
    b, _ = _module(root, "R", seed=1)
    assert not np.array_equal(a.splits["train"]["images"], b.splits["train"]["images"])
    assert np.array_equal(a.splits["test"]["images"], b.splits["test"]["images"])


def test_truth_is_returned_and_matches_the_samples(root):
    dm, _ = _module(root, "RTS", return_truth=True, device_resident=False)
    images, labels, truth = next(iter(dm.test_dataloader()))
    assert set(truth) >= {"theta", "boxes", "angles", "scales"}
    assert truth["theta"].shape == (256, 6) and truth["boxes"].shape == (256, 4)
    assert torch.equal(truth["boxes"], torch.from_numpy(dm.splits["test"]["boxes"][:256]))


def test_resampling_every_epoch_changes_training_images_only(root):
    dm, _ = _module(root, "R", resample_every_epoch=True, device_resident=False)
    train = dm.train_dataloader()
    first = torch.cat([x for x, _ in train])
    second = torch.cat([x for x, _ in train])
    assert first.shape == second.shape == (3600, 1, 28, 28)
    assert not torch.equal(first, second)
    val = dm.val_dataloader()
    assert torch.equal(torch.cat([x for x, _ in val]), torch.cat([x for x, _ in val]))


def test_tensor_batches_shuffle_per_epoch_and_cover_every_sample():
    arrays = {"images": np.arange(10 * 4, dtype=np.uint8).reshape(10, 2, 2), "labels": np.arange(10)}
    loader = TensorBatches(arrays, batch_size=4, shuffle=True, seed=3)
    epoch1 = torch.cat([y for _, y in loader])
    epoch2 = torch.cat([y for _, y in loader])
    assert len(loader) == 3
    assert sorted(epoch1.tolist()) == list(range(10)) and sorted(epoch2.tolist()) == list(range(10))
    assert not torch.equal(epoch1, epoch2)
    assert len(TensorBatches(arrays, batch_size=4, drop_last=True)) == 2


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"distortion": "Q"}, "unknown distortion"),
        ({"params": {"angel": 3}}, "unknown parameter"),
        ({"batch_size": 0}, "batch_size"),
        ({"val_size": -1}, "val_size"),
        ({"val_size": 1.5}, "val_size"),
    ],
)
def test_bad_configuration_is_a_clear_error(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        DistortedMNISTDataModule(**{"distortion": "R", **kwargs}, root=tmp_path)

"""Tests of stn_repro.data.cub, cub_format and cub_images on tiny CUB-200-2011 trees (tests/cub_fixture.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cub_fixture import CUBTruth, write_cub
from PIL import Image

from stn_repro.data import cub_format
from stn_repro.data.cub import CUBDataModule
from stn_repro.data.cub_format import CUB_URL, check_cub_files, read_cub
from stn_repro.data.cub_images import IMAGENET_MEAN, IMAGENET_STD, CUBTransform, box_to_normalised, load_rgb
from stn_repro.data.errors import DataError

S, RESIZE = 32, 40


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CUBTruth]:
    """One read-only fixture tree for the tests that do not modify it: 3 classes × 4 images, 6 train / 6 test."""
    root = tmp_path_factory.mktemp("cub")
    return root, write_cub(root)


def _module(root: Path, **kwargs: object) -> tuple[CUBDataModule, list[str]]:
    messages: list[str] = []
    options = {"image_size": S, "resize": RESIZE, "batch_size": 4, "num_workers": 0, "log": messages.append}
    dm = CUBDataModule(root, **{**options, **kwargs})
    dm.prepare_data()
    dm.setup()
    return dm, messages


def _denormalise(image: torch.Tensor) -> torch.Tensor:
    """``(3, H, W)`` normalised → ``[0, 1]`` RGB."""
    return image * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None]


# -- reading the release -----------------------------------------------------------------------------------------


def test_read_cub_matches_the_fixture(tree: tuple[Path, CUBTruth]) -> None:
    root, truth = tree
    meta = read_cub(root)
    assert meta.folder == truth.folder
    assert meta.image_ids.tolist() == truth.image_ids.tolist()
    assert meta.paths.tolist() == truth.paths
    assert meta.labels.dtype == np.int64 and meta.labels.tolist() == truth.labels.tolist()
    assert meta.labels.min() == 0 and meta.labels.max() == 2
    assert meta.is_train.tolist() == truth.is_train.tolist() and (meta.n_train, meta.n_test) == (6, 6)
    assert meta.boxes.dtype == np.float32 and np.array_equal(meta.boxes, truth.boxes)
    assert meta.class_names == tuple(truth.class_names)
    assert not meta.full_dataset
    assert len(meta.checksum) == 64 and meta.checksum == read_cub(root).checksum


def test_checksum_covers_the_text_files(tmp_path: Path) -> None:
    write_cub(tmp_path)
    before = read_cub(tmp_path).checksum
    classes = tmp_path / "CUB_200_2011" / "classes.txt"
    classes.write_text(classes.read_text().replace("Bird_A0", "Bird_Z0"))
    assert read_cub(tmp_path).checksum != before


def test_missing_release_names_the_expected_files_folder_and_url(tmp_path: Path) -> None:
    folder = tmp_path / "CUB_200_2011"
    with pytest.raises(DataError) as error:
        check_cub_files(tmp_path)
    message = str(error.value)
    assert str(folder) in message and "images.txt" in message and "bounding_boxes.txt" in message
    assert CUB_URL in message and "CUB_200_2011.tgz" in message
    # The module reports the same error from the first call that needs the data.
    with pytest.raises(DataError, match="CUB_200_2011.tgz"):
        CUBDataModule(tmp_path, log=lambda _: None).source_metadata()


def test_missing_images_folder_and_root_pointing_inside_the_release(tmp_path: Path) -> None:
    truth = write_cub(tmp_path)
    (truth.folder / "images").rename(tmp_path / "elsewhere")
    with pytest.raises(DataError, match=r"missing images/") as error:
        read_cub(tmp_path)
    assert str(truth.folder) in str(error.value)
    with pytest.raises(DataError, match="set the data root to its parent folder"):
        check_cub_files(truth.folder)


@pytest.mark.parametrize(
    ("name", "line", "replacement", "expected"),
    [
        ("image_class_labels.txt", 5, "5 two", ["image_class_labels.txt, line 5", "'<image_id> <class_id>'"]),
        ("image_class_labels.txt", 5, "5 9", ["image_class_labels.txt, line 5", "class id 9"]),
        ("train_test_split.txt", 4, None, ["train_test_split.txt: image id(s) 4 listed", "images.txt (line 4)"]),
        ("train_test_split.txt", 2, "2 2", ["train_test_split.txt, line 2", "split flag 2"]),
        ("bounding_boxes.txt", 3, "3 1.0 2.0 nan 4.0", ["bounding_boxes.txt, line 3", "not finite"]),
        ("bounding_boxes.txt", 3, "3 1.0 2.0 0.0 4.0", ["bounding_boxes.txt, line 3", "width 0.0"]),
        ("bounding_boxes.txt", 3, "3 1.0 2.0 4.0", ["bounding_boxes.txt, line 3", "4 field(s) instead of 5"]),
        ("images.txt", 3, "2 001.Bird_A0/Bird_0001_2.jpg", ["images.txt, line 3", "id 2 repeats line 2"]),
        ("classes.txt", 2, "7 002.Bird_B1", ["classes.txt", "1..3 without gaps"]),
    ],
)
def test_inconsistent_text_files_name_the_file_and_line(
    tmp_path: Path, name: str, line: int, replacement: str | None, expected: list[str]
) -> None:
    truth = write_cub(tmp_path)
    path = truth.folder / name
    lines = path.read_text().splitlines()
    if replacement is None:
        del lines[line - 1]
    else:
        lines[line - 1] = replacement
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as error:
        read_cub(tmp_path)
    message = str(error.value)
    assert str(truth.folder) in message
    for fragment in expected:
        assert fragment in message


def test_id_missing_from_images_txt_is_reported_in_the_other_file(tmp_path: Path) -> None:
    truth = write_cub(tmp_path)
    with (truth.folder / "bounding_boxes.txt").open("a") as file:
        file.write("99 1.0 1.0 5.0 5.0\n")
    with pytest.raises(DataError, match=r"bounding_boxes\.txt, line 13: image id 99 is not listed"):
        read_cub(tmp_path)


def test_missing_jpeg_is_reported(tmp_path: Path) -> None:
    truth = write_cub(tmp_path)
    (truth.folder / "images" / truth.paths[5]).unlink()
    with pytest.raises(DataError) as error:
        read_cub(tmp_path)
    assert "1 of 12 images" in str(error.value) and truth.paths[5] in str(error.value)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_undecodable_jpeg_is_reported_by_the_loader(tmp_path: Path, damage: str) -> None:
    truth = write_cub(tmp_path)
    test_index = int(np.flatnonzero(~truth.is_train)[0])
    path = truth.folder / "images" / truth.paths[test_index]
    path.write_bytes(path.read_bytes()[:200] if damage == "truncate" else b"not a jpeg at all")
    dm, _ = _module(tmp_path)  # the text files are intact: reading them succeeds
    with pytest.raises(DataError, match="cannot decode image") as error:
        next(iter(dm.test_dataloader()))
    assert str(path) in str(error.value)


# -- boxes and transforms ----------------------------------------------------------------------------------------


def test_box_to_normalised_follows_align_corners_false() -> None:
    assert box_to_normalised(torch.tensor([0.0, 0.0, 32.0, 32.0]), 32).tolist() == [-1.0, -1.0, 1.0, 1.0]
    # Pixel centres i + 0.5 land where affine_grid(align_corners=False) samples pixel i.
    grid = F.affine_grid(torch.eye(2, 3)[None], [1, 1, 8, 8], align_corners=False)[0]
    centres = torch.arange(8) + 0.5
    boxes = torch.stack([centres, centres, centres, centres], dim=1)
    normalised = box_to_normalised(boxes, 8)
    assert torch.allclose(normalised[:, 0], grid[0, :, 0]) and torch.allclose(normalised[:, 1], grid[:, 0, 1])
    # (height, width): x is scaled by the width, y by the height; out-of-image coordinates are clipped.
    rectangular = box_to_normalised(torch.tensor([[10.0, 10.0, 30.0, 90.0]]), (40, 20))
    assert torch.allclose(rectangular, torch.tensor([[0.0, -0.5, 1.0, 1.0]]))


def test_centre_crop_box_matches_a_hand_computation() -> None:
    image = Image.new("RGB", (96, 64))
    transform = CUBTransform(image_size=32, resize=48, train=False)
    # Resize: ×0.75 → 72 × 48; box (40, 20, 24, 16) → x 30..48, y 15..27. Centre crop: left 20, top 8
    # → x 10..28, y 7..19 → 2u/32 - 1.
    tensor, box = transform(image, (40.0, 20.0, 24.0, 16.0))
    assert tensor.shape == (3, 32, 32) and tensor.dtype == torch.float32
    assert box.dtype == torch.float32
    assert torch.allclose(box, torch.tensor([-0.375, -0.5625, 0.75, 0.1875]))
    # A box larger than the crop is clipped to the image edges.
    _, whole = transform(image, (0.0, 0.0, 96.0, 64.0))
    assert whole.tolist() == [-1.0, -1.0, 1.0, 1.0]


def test_flip_mirrors_image_and_box() -> None:
    pixels = np.zeros((64, 64, 3), dtype=np.uint8)
    pixels[8:30, 4:20] = 255  # left of centre: a flip moves it to the right
    image, box_xywh = Image.fromarray(pixels), (4.0, 8.0, 16.0, 22.0)
    plain_image, plain_box = CUBTransform(32, 32, train=False)(image, box_xywh)
    flipping = CUBTransform(32, 32, train=True, random_flip=True)  # a 32 crop of a 32 image: only the flip is random
    torch.manual_seed(0)
    flipped = 0
    for _ in range(16):
        out_image, out_box = flipping(image, box_xywh)
        if torch.equal(out_box, plain_box):
            assert torch.equal(out_image, plain_image)
        else:
            x0, y0, x1, y1 = plain_box.tolist()
            assert torch.allclose(out_box, torch.tensor([-x1, y0, -x0, y1]))
            assert torch.equal(out_image, plain_image.flip(-1))
            flipped += 1
    assert 0 < flipped < 16
    never = CUBTransform(32, 32, train=True, random_flip=False)
    assert all(torch.equal(never(image, box_xywh)[1], plain_box) for _ in range(8))


def test_bird_rectangle_lies_inside_the_returned_box(tree: tuple[Path, CUBTruth]) -> None:
    """Random crops and flips (training) and centre crops (test) keep box and pixels in sync."""
    root, truth = tree
    dm, _ = _module(root)
    torch.manual_seed(0)
    centres = (2 * torch.arange(S) + 1) / S - 1
    margin = 1.5 * 2 / S  # resampling blurs the rectangle's edges by about a pixel
    checked = 0
    for split in ("train", "test"):
        for position, index in enumerate(dm.indices[split]):
            image, label, box = dm.datasets[split][position]
            assert label.item() == truth.labels[index]
            rgb = _denormalise(image)
            if truth.modes[index] == "RGB":
                bird = (rgb[0] > 0.49) & (rgb[2] < 0.39)  # red (220, 40, 40) on blue (30, 60, 160)
            else:
                bird = rgb.mean(0) > 0.5  # light on dark grey
            rows, columns = torch.nonzero(bird, as_tuple=True)
            assert len(rows) > 0
            x0, y0, x1, y1 = box.tolist()
            assert (centres[columns] >= x0 - margin).all() and (centres[columns] <= x1 + margin).all()
            assert (centres[rows] >= y0 - margin).all() and (centres[rows] <= y1 + margin).all()
            inside_x = (centres > x0 + margin) & (centres < x1 - margin)
            inside_y = (centres > y0 + margin) & (centres < y1 - margin)
            assert bird[inside_y][:, inside_x].all()
            checked += 1
    assert checked == 12


def test_grayscale_and_cmyk_jpegs_become_rgb(tree: tuple[Path, CUBTruth]) -> None:
    root, truth = tree
    dm, _ = _module(root)
    for mode in ("L", "CMYK"):
        index = truth.modes.index(mode)
        assert Image.open(truth.folder / "images" / truth.paths[index]).mode == mode
        assert load_rgb(truth.folder / "images" / truth.paths[index]).mode == "RGB"
        split = "train" if truth.is_train[index] else "test"
        image, _, _ = dm.datasets[split][int(np.flatnonzero(dm.indices[split] == index)[0])]
        assert image.shape == (3, S, S)
        rgb = _denormalise(image)
        assert (rgb.max(0).values - rgb.min(0).values).max() < 0.02  # grey: the three channels agree


# -- the data module ---------------------------------------------------------------------------------------------


def test_module_batches_metadata_and_interface(tree: tuple[Path, CUBTruth]) -> None:
    root, truth = tree
    dm, messages = _module(root)
    assert dm.input_shape == (3, S, S) and dm.num_classes == 3
    assert dm.metadata["sizes"] == {"train": 6, "val": 0, "test": 6}
    source = dm.metadata["source"]
    assert source == dm.source_metadata()
    assert source["source"] == "cub-200-2011" and source["digits"] == "cub200"
    assert (source["n_train"], source["n_test"], source["n_classes"]) == (6, 6, 3)
    assert source["checksum"] == read_cub(root).checksum and source["location"] == str(truth.folder)
    assert source["full_dataset"] is False
    assert any("NOT the full dataset" in m for m in messages)

    train = dm.train_dataloader()
    assert len(train) == 1  # 6 images, batches of 4, the incomplete one dropped
    images, labels, boxes = next(iter(train))
    assert images.shape == (4, 3, S, S) and images.dtype == torch.float32
    assert labels.shape == (4,) and labels.dtype == torch.int64
    assert boxes.shape == (4, 4) and boxes.dtype == torch.float32
    assert boxes.abs().max() <= 1 and (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()

    test = dm.test_dataloader()
    assert len(test) == 2 and dm.val_dataloader() == []
    test_labels = torch.cat([batch[1] for batch in test])
    assert test_labels.tolist() == truth.labels[~truth.is_train].tolist()  # evaluation keeps the file order


def test_full_dataset_flag(tree: tuple[Path, CUBTruth], monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = tree
    monkeypatch.setattr(cub_format, "FULL_SIZES", (6, 6))
    monkeypatch.setattr(cub_format, "FULL_CLASSES", 3)
    assert _module(root)[0].source_metadata()["full_dataset"] is True
    assert _module(root, limit=4)[0].source_metadata()["full_dataset"] is False


def test_shuffling_is_seeded(tree: tuple[Path, CUBTruth]) -> None:
    root, _ = tree
    first = _module(root, seed=0)[0].train_dataloader()
    epochs = [list(first.sampler), list(first.sampler)]
    assert epochs[0] != epochs[1] and sorted(epochs[0]) == list(range(6))
    again = _module(root, seed=0)[0].train_dataloader()
    assert [list(again.sampler), list(again.sampler)] == epochs
    other = _module(root, seed=1)[0].train_dataloader()
    assert [list(other.sampler), list(other.sampler)] != epochs


def test_workers_give_identical_batches_for_the_same_seed(tree: tuple[Path, CUBTruth]) -> None:
    """With workers, the loader's seeded generator also fixes the random crops and flips."""
    root, _ = tree

    def first_batch(seed: int) -> tuple[torch.Tensor, ...]:
        loader = _module(root, seed=seed, num_workers=1, batch_size=6)[0].train_dataloader()
        assert loader.persistent_workers
        return next(iter(loader))

    a, b, c = first_batch(0), first_batch(0), first_batch(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])


def test_undecodable_jpeg_in_a_worker_is_still_a_data_error(tmp_path: Path) -> None:
    truth = write_cub(tmp_path)
    path = truth.folder / "images" / truth.paths[1]
    path.write_bytes(b"\xff\xd8 broken")
    dm, _ = _module(tmp_path, num_workers=1)
    with pytest.raises(DataError, match="cannot decode image") as error:
        list(dm.test_dataloader())
    assert str(path) in str(error.value)


def test_limit_keeps_the_first_images_of_each_split_across_classes(tree: tuple[Path, CUBTruth]) -> None:
    root, truth = tree
    dm, messages = _module(root, limit=2)
    assert dm.metadata["sizes"] == {"train": 2, "val": 0, "test": 2}
    assert dm.metadata["source"]["limit"] == 2
    # One image of class 0 and one of class 1, each its class's first in file order.
    assert dm.indices["train"].tolist() == [0, 4] and dm.indices["test"].tolist() == [1, 5]
    assert truth.labels[dm.indices["test"]].tolist() == [0, 1]
    assert any("limited to 2 images per split" in m for m in messages)


def test_validation_split_is_seeded_stratified_and_disjoint(tmp_path: Path) -> None:
    truth = write_cub(tmp_path, n_classes=4, per_class=10)  # 5 train images per class
    dm, _ = _module(tmp_path, val_size=0.2)
    train, val = dm.indices["train"], dm.indices["val"]
    assert dm.metadata["sizes"] == {"train": 16, "val": 4, "test": 20}
    assert sorted(truth.labels[val].tolist()) == [0, 1, 2, 3]  # one per class
    assert set(train).isdisjoint(val) and set(train) | set(val) == set(np.flatnonzero(truth.is_train))
    assert len(dm.val_dataloader()) == 1
    assert np.array_equal(_module(tmp_path, val_size=4)[0].indices["val"], val)  # count = fraction here
    assert not np.array_equal(_module(tmp_path, val_size=4, seed=1)[0].indices["val"], val)
    with pytest.raises(ValueError, match="leaves no training images"):
        _module(tmp_path, val_size=20)


def test_invalid_arguments_are_rejected(tree: tuple[Path, CUBTruth]) -> None:
    root, _ = tree
    for kwargs in ({"resize": 16}, {"batch_size": 0}, {"val_size": 1.5}, {"limit": 0}, {"std": (1.0, 0.0, 1.0)}):
        with pytest.raises(ValueError):
            CUBDataModule(root, image_size=S, **kwargs)

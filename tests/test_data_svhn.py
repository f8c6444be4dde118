"""SVHN format-1 reader, preprocessing and SVHNDataModule on a tiny fixture tree written in the official layout."""

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from svhn_fixture import BACKGROUND, COLOURS, SEQUENCES, FixtureImage, layout, write_digit_struct, write_svhn

from stn_repro.data import svhn, svhn_format, svhn_preprocess
from stn_repro.data.batches import CroppedBatches, crop_batch
from stn_repro.data.errors import DataError
from stn_repro.data.svhn import SVHNDataModule
from stn_repro.data.svhn_format import SVHN_URL, check_svhn_files, read_digit_struct
from stn_repro.data.svhn_preprocess import (
    BLANK,
    MAX_DIGITS,
    build_split,
    crop_and_resize,
    crop_region,
    encode_labels,
    map_boxes,
)

SPLITS = ("train", "test", "extra")
# Processed pixels closer than this to a box edge may blend box and background (bilinear resampling).
EDGE = 3


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """``(root, truth)``: one fixture tree for the module, so caches built by one test are reused by the next."""
    root = tmp_path_factory.mktemp("data")
    return root, write_svhn(root, SPLITS)


def _module(root, **kwargs):
    messages = []
    kwargs = {"val_size": 2, "workers": 1, **kwargs}
    dm = SVHNDataModule(root=root, log=messages.append, **kwargs)
    dm.prepare_data()
    dm.setup()
    return dm, messages


def _kept(images):
    return [image for image in images if len(image.raw_labels) <= MAX_DIGITS]


# -- digitStruct.mat -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name_dtype", [np.uint16, np.uint8])
def test_reader_returns_names_digits_and_boxes_of_both_layouts(tmp_path, name_dtype):
    truth = write_svhn(tmp_path, ("train",), name_dtype=name_dtype)["train"]
    entries = read_digit_struct(tmp_path / "svhn" / "train" / "digitStruct.mat")
    assert [e.name for e in entries] == [f"{i}.png" for i in range(1, 9)]
    assert [e.digits for e in entries] == [t.digits for t in truth]
    assert [e.boxes for e in entries] == [t.boxes for t in truth]
    assert entries[0].digits == (5,) and entries[1].digits == (0,)  # scalar layout; raw label 10 is digit 0
    assert entries[3].digits == (2, 0, 3) and entries[3].boxes[1] == (54.0, 16.0, 30.0, 60.0)  # reference layout
    assert len(entries[5].digits) == 6


def test_reader_limit_and_worker_processes_give_the_same_entries(tree, monkeypatch):
    path = tree[0] / "svhn" / "train" / "digitStruct.mat"
    serial = read_digit_struct(path)
    monkeypatch.setattr(svhn_format, "_READ_CHUNK", 3)  # 3 tasks for 8 entries
    messages = []
    assert read_digit_struct(path, workers=2, log=messages.append) == serial
    assert read_digit_struct(path, limit=4, workers=2) == serial[:4]
    assert messages[-1].startswith("svhn train: reading digitStruct.mat: 8/8")


def test_garbage_digit_struct_is_a_data_error_naming_the_file(tmp_path):
    path = tmp_path / "train" / "digitStruct.mat"
    path.parent.mkdir()
    path.write_bytes(b"this is not HDF5" * 100)
    with pytest.raises(DataError, match="digitStruct.mat") as error:
        read_digit_struct(path)
    assert str(path) in str(error.value) and SVHN_URL in str(error.value) and "train.tar.gz" in str(error.value)


def test_digit_struct_without_bbox_is_a_data_error(tmp_path):
    path = tmp_path / "digitStruct.mat"
    with h5py.File(path, "w") as file:
        file.create_dataset("digitStruct/name", (2, 1), dtype=h5py.ref_dtype)
    with pytest.raises(DataError, match=r"/digitStruct/bbox is missing") as error:
        read_digit_struct(path)
    assert str(path) in str(error.value)


def test_bad_entries_are_data_errors_naming_the_entry(tmp_path):
    path = tmp_path / "digitStruct.mat"
    write_digit_struct(path, [layout(0, [1], "1.png"), layout(1, [3, 11], "2.png")])
    with pytest.raises(DataError, match=r"entry 2: .*labels \[3.0, 11.0\] outside 1..10"):
        read_digit_struct(path)
    with h5py.File(path, "r+") as file:
        del file[file["digitStruct/bbox"][0, 0]]["height"]
    with pytest.raises(DataError, match=r"digitStruct.mat: .*entry 1: KeyError"):
        read_digit_struct(path, limit=1)


# -- preprocessing -------------------------------------------------------------------------------------------------


def test_crop_region_is_the_union_expanded_about_its_centre():
    boxes = np.array([[10, 20, 10, 20], [25, 22, 10, 20]])  # union x 10..35, y 20..42
    np.testing.assert_allclose(crop_region(boxes, (100, 100), 0.3), [6.25, 16.7, 38.75, 45.3])
    np.testing.assert_allclose(crop_region(boxes, (100, 100), 0.0), [10, 20, 35, 42])
    np.testing.assert_allclose(crop_region(boxes, (100, 100), 1.0), [0, 9, 47.5, 53])


def test_crop_region_is_clipped_to_the_image_and_may_be_empty():
    np.testing.assert_allclose(crop_region(np.array([[0, 0, 10, 10]]), (11, 20), 0.3), [0, 0, 11, 11.5])
    region = crop_region(np.array([[50, 50, 5, 5]]), (20, 20), 0.3)
    assert (region[2:] <= region[:2]).all()


def test_map_boxes_scales_into_the_resized_crop():
    region = np.array([10.0, 20.0, 30.0, 60.0])
    mapped = map_boxes(np.array([[10, 20, 20, 40], [20, 40, 10, 20]]), region, 64)
    np.testing.assert_allclose(mapped, [[0, 0, 64, 64], [32, 32, 32, 32]])
    assert mapped.dtype == np.float32


def test_crop_and_resize_resamples_the_region():
    pixels = np.zeros((40, 60, 3), dtype=np.uint8)
    pixels[:, :30] = (200, 0, 0)
    pixels[:, 30:] = (0, 0, 200)
    image = Image.fromarray(pixels)
    left = crop_and_resize(image, np.array([0.0, 0.0, 30.0, 40.0]), 16)
    assert left.shape == (3, 16, 16) and left.dtype == np.uint8
    assert (left[0, :, :15] == 200).all() and (left[2, :, :15] == 0).all()
    assert 100 < left[0, 0, 15] < 200  # the filter's support reaches the blue pixels right of the region
    halves = crop_and_resize(image, np.array([20.0, 10.0, 40.0, 30.0]), 16)  # 10 px of each colour
    assert (halves[0, :, :7] == 200).all() and (halves[2, :, 9:] == 200).all()


def test_encode_labels_pads_with_blank():
    labels = encode_labels([(5,), (1, 0, 3), (1, 2, 3, 4, 5)])
    assert labels.dtype == np.int64 and labels.shape == (3, MAX_DIGITS)
    assert labels.tolist() == [[5, 10, 10, 10, 10], [1, 0, 3, 10, 10], [1, 2, 3, 4, 5]]
    assert (labels != BLANK).sum(1).tolist() == [1, 3, 5]
    with pytest.raises(ValueError, match="6 digits"):
        encode_labels([(1, 2, 3, 4, 5, 6)])


def test_build_split_labels_boxes_and_exclusions(tree):
    root, truth = tree
    messages = []
    arrays = build_split(root / "svhn" / "train", 64, 0.3, log=messages.append)
    kept = _kept(truth["train"])
    assert arrays["images"].shape == (7, 3, 64, 64) and arrays["images"].dtype == np.uint8
    assert arrays["labels"].tolist() == encode_labels([t.digits for t in kept]).tolist()
    assert arrays["index"].tolist() == [0, 1, 2, 3, 4, 6, 7] and arrays["excluded/too_long"].tolist() == [5]
    assert arrays["excluded/empty_crop"].size == 0
    assert "excluded 1 with more than 5 digits" in messages[-1]
    lengths = (arrays["labels"] != BLANK).sum(1)
    assert np.isnan(arrays["boxes"]).any(2).sum(1).tolist() == (MAX_DIGITS - lengths).tolist()
    # 1.png: one box away from the borders, expanded by 30%: it spans 0.15/1.3..1.15/1.3 of the crop.
    np.testing.assert_allclose(arrays["boxes"][0, 0], 64 * np.array([0.15, 0.15, 1, 1]) / 1.3, rtol=1e-5)
    # 2.png: box (0, 0, 30, 60) at the top-left corner: the expansion is clipped there, the box starts at 0.
    np.testing.assert_allclose(arrays["boxes"][1, 0], [0, 0, 64 * 30 / 34.5, 64 * 60 / 69], rtol=1e-5)


def test_processed_pixels_show_each_box_colour_where_the_boxes_say(tree):
    root, _ = tree
    arrays = build_split(root / "svhn" / "train", 64, 0.3, log=lambda _: None)
    centres = np.arange(64) + 0.5
    for image, boxes in zip(arrays["images"], arrays["boxes"], strict=True):
        near_any_box = np.zeros((64, 64), dtype=bool)
        for j, (left, top, width, height) in enumerate(boxes[~np.isnan(boxes).any(1)]):
            inside_x = (centres > left + EDGE) & (centres < left + width - EDGE)
            inside_y = (centres > top + EDGE) & (centres < top + height - EDGE)
            assert inside_x.sum() >= 3 and inside_y.sum() >= 3
            assert (image[:, inside_y][:, :, inside_x] == np.array(COLOURS[j])[:, None, None]).all()
            near_x = (centres > left - EDGE) & (centres < left + width + EDGE)
            near_y = (centres > top - EDGE) & (centres < top + height + EDGE)
            near_any_box |= near_y[:, None] & near_x[None, :]
        assert (~near_any_box).sum() > 50
        assert (image[:, ~near_any_box] == np.array(BACKGROUND)[:, None]).all()


def test_worker_processes_build_the_same_split(tree, monkeypatch):
    root, _ = tree
    serial = build_split(root / "svhn" / "train", 32, 0.3, log=lambda _: None)
    monkeypatch.setattr(svhn_preprocess, "_IMAGE_CHUNK", 2)
    parallel = build_split(root / "svhn" / "train", 32, 0.3, workers=2, log=lambda _: None)
    for key in serial:
        np.testing.assert_array_equal(serial[key], parallel[key])


def test_boxes_outside_the_image_give_an_empty_crop_that_is_excluded_and_counted(tmp_path):
    folder = tmp_path / "svhn" / "train"
    folder.mkdir(parents=True)
    images = [layout(0, [1], "1.png"), FixtureImage("2.png", (2,), ((20.0, 20.0, 5.0, 5.0),), (10, 10))]
    Image.new("RGB", (75, 85)).save(folder / "1.png")
    Image.new("RGB", (10, 10)).save(folder / "2.png")  # the box lies right of and below this image
    write_digit_struct(folder / "digitStruct.mat", images)
    arrays = build_split(folder, 16, 0.3, log=lambda _: None)
    assert arrays["index"].tolist() == [0] and arrays["excluded/empty_crop"].tolist() == [1]


def test_corrupt_or_missing_png_is_a_data_error_naming_it(tmp_path):
    write_svhn(tmp_path, ("test",))
    png = tmp_path / "svhn" / "test" / "2.png"
    png.write_bytes(png.read_bytes()[:60])  # truncated
    with pytest.raises(DataError, match="cannot read or decode this PNG") as error:
        build_split(tmp_path / "svhn" / "test", 16, 0.3, log=lambda _: None)
    assert str(png) in str(error.value) and "test.tar.gz" in str(error.value)
    png.unlink()
    with pytest.raises(DataError, match="2.png: cannot read"):
        build_split(tmp_path / "svhn" / "test", 16, 0.3, log=lambda _: None)


# -- batches -------------------------------------------------------------------------------------------------------


def _coordinates(batch=16, height=12, width=10):
    """``(batch, 2, height, width)``: channel 0 holds the row, channel 1 the column of each pixel."""
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return torch.stack([rows, cols]).float().expand(batch, 2, height, width).clone()


def test_random_crops_are_contiguous_windows_within_bounds_and_seeded():
    images = _coordinates()
    crops = crop_batch(images, 7, torch.Generator().manual_seed(3))
    assert crops.shape == (16, 2, 7, 7)
    tops, lefts = crops[:, 0, 0, 0].long(), crops[:, 1, 0, 0].long()
    assert tops.min() >= 0 and tops.max() <= 12 - 7 and lefts.min() >= 0 and lefts.max() <= 10 - 7
    for crop, top, left in zip(crops, tops, lefts, strict=True):
        assert torch.equal(crop, images[0, :, top : top + 7, left : left + 7])
    assert len(set(zip(tops.tolist(), lefts.tolist(), strict=True))) > 4
    assert torch.equal(crops, crop_batch(images, 7, torch.Generator().manual_seed(3)))
    assert not torch.equal(crops, crop_batch(images, 7, torch.Generator().manual_seed(4)))


def test_centre_crop_without_generator():
    crops = crop_batch(_coordinates(), 7)
    assert crops[:, 0, 0, 0].unique().tolist() == [2.0] and crops[:, 1, 0, 0].unique().tolist() == [1.0]


def test_cropped_batches_draw_new_windows_every_epoch_reproducibly():
    arrays = {"images": _coordinates(batch=10).to(torch.uint8), "labels": torch.arange(10)}

    def offsets(batches):
        images, labels = next(iter(batches))
        assert labels.tolist() == list(range(10)) and images.shape == (10, 2, 7, 7)
        return (images[:, :, 0, 0] * 255).round().long().tolist()  # (top, left) per sample

    batches = CroppedBatches(arrays, 10, crop=7, random_crop=True, seed=0)
    epoch0, epoch1 = offsets(batches), offsets(batches)
    assert epoch0 != epoch1
    again = CroppedBatches(arrays, 10, crop=7, random_crop=True, seed=0)
    assert [offsets(again), offsets(again)] == [epoch0, epoch1]
    assert offsets(CroppedBatches(arrays, 10, crop=7, random_crop=True, seed=1)) != epoch0
    assert offsets(CroppedBatches(arrays, 10, crop=7)) == [[2, 1]] * 10


# -- data module ---------------------------------------------------------------------------------------------------


def test_module_splits_batches_and_metadata(tree):
    root, truth = tree
    dm, messages = _module(root, batch_size=4)
    n_pool = len(_kept(truth["train"])) + len(_kept(truth["extra"]))
    assert dm.metadata["sizes"] == {"train": n_pool - 2, "val": 2, "test": len(_kept(truth["test"]))}
    assert dm.metadata["excluded"] == {"train": 1, "extra": 0, "test": 1}
    assert dm.metadata["empty_crop"] == {"train": 0, "extra": 0, "test": 0}
    source = dm.metadata["source"]
    assert source["source"] == "svhn-format1" and source["digits"] == "svhn" and source["full_dataset"] is False
    assert source["n_images"] == {s: len(truth[s]) for s in ("train", "extra", "test")}
    assert source["location"] == str(root / "svhn") and len(source["checksum"]) == 64
    assert dm.input_shape == (3, 54, 54)
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        images, labels = next(iter(loader))
        assert images.shape[1:] == (3, 54, 54) and images.dtype == torch.float32
        assert labels.dtype == torch.int64 and labels.shape[1:] == (MAX_DIGITS,)
        assert 0.0 <= images.min().item() and images.max().item() <= 1.0
    assert len(dm.train_dataloader()) == 3 and len(dm.test_dataloader()) == 1
    assert any("excluded with more than 5 digits: train 1, extra 0, test 1" in m for m in messages)


def _window_offsets(images, stored):
    """For each image of ``images`` ``(B, 3, 54, 54)``, the set of offsets ``(top, left)`` at which a 54×54 window
    of one of the ``stored`` ``(N, 3, 64, 64)`` images equals it."""
    windows = stored.unfold(2, 54, 1).unfold(3, 54, 1)  # (N, 3, 11, 11, 54, 54)
    found = []
    for image in images:
        equal = (windows == image[None, :, None, None]).flatten(-2).all(-1).all(1).any(0)  # (11, 11)
        found.append({tuple(offset) for offset in equal.nonzero().tolist()})
    return found


def test_evaluation_uses_centre_crops_and_training_seeded_random_crops(tree):
    dm, _ = _module(tree[0], batch_size=64)
    images, labels = next(iter(dm.test_dataloader()))
    stored = torch.from_numpy(dm.splits["test"]["images"]).float() / 255
    assert torch.equal(images, stored[:, :, 5:59, 5:59])
    assert torch.equal(labels, torch.from_numpy(dm.splits["test"]["labels"]))
    first, again = next(iter(dm.train_dataloader())), next(iter(dm.train_dataloader()))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])  # same seed, same epoch
    loader = dm.train_dataloader()
    epoch0, epoch1 = next(iter(loader)), next(iter(loader))
    assert not torch.equal(epoch0[0], epoch1[0])
    train_stored = torch.from_numpy(dm.splits["train"]["images"]).float() / 255
    offsets = _window_offsets(first[0], train_stored)
    assert all(offsets) and any((5, 5) not in found for found in offsets)
    centred, _ = _module(tree[0], batch_size=64, random_crop=False)
    images, _ = next(iter(centred.train_dataloader()))
    assert all((5, 5) in found for found in _window_offsets(images, train_stored))


def test_uncropped_set_and_overrides(tree):
    dm, _ = _module(tree[0], variant="64px", size=32, crop=32, batch_size=3)
    assert dm.input_shape == (3, 32, 32) and dm.crop is None
    images, _ = next(iter(dm.train_dataloader()))
    assert images.shape == (3, 3, 32, 32)


def test_validation_split_is_seeded_disjoint_and_covers_the_pool(tree):
    def rows(split):
        return sorted(
            image.tobytes() + label.tobytes() for image, label in zip(split["images"], split["labels"], strict=True)
        )

    a, _ = _module(tree[0], val_size=0.3)
    b, _ = _module(tree[0], val_size=0.3)
    c, _ = _module(tree[0], val_size=0.3, seed=1)
    assert a.metadata["sizes"]["val"] == round(0.3 * 11)
    assert rows(a.splits["val"]) == rows(b.splits["val"])
    assert rows(a.splits["val"]) != rows(c.splits["val"])
    assert sorted(rows(a.splits["train"]) + rows(a.splits["val"])) == sorted(
        rows(c.splits["train"]) + rows(c.splits["val"])
    )
    assert not set(rows(a.splits["train"])) & set(rows(a.splits["val"]))


def test_use_extra_false_and_limit(tree):
    root, truth = tree
    dm, _ = _module(root, use_extra=False, val_size=1)
    assert dm.metadata["sizes"]["train"] + 1 == len(_kept(truth["train"]))
    assert dm.metadata["source"]["splits"] == ["train", "test"]
    limited, _ = _module(root, limit=3, val_size=1)
    assert limited.metadata["sizes"] == {"train": 5, "val": 1, "test": 3}
    assert limited.metadata["source"]["limit"] == 3 and limited.metadata["source"]["full_dataset"] is False
    assert dm.source_metadata()["checksum"] != limited.source_metadata()["checksum"]  # extra counts in it


def test_full_dataset_when_counts_are_official_and_nothing_is_left_out(tree, monkeypatch):
    root, truth = tree
    monkeypatch.setattr(svhn, "FULL_SIZES", {s: len(truth[s]) for s in SPLITS})
    assert SVHNDataModule(root, log=lambda _: None).source_metadata()["full_dataset"] is True
    assert SVHNDataModule(root, limit=100, log=lambda _: None).source_metadata()["full_dataset"] is False
    assert SVHNDataModule(root, use_extra=False, log=lambda _: None).source_metadata()["full_dataset"] is False


def test_second_module_hits_the_cache_and_a_damaged_cache_is_rebuilt(tmp_path):
    write_svhn(tmp_path, SPLITS)
    first, built = _module(tmp_path)
    assert sum("cache miss" in m for m in built) == 3
    second, messages = _module(tmp_path)
    assert sum("cache hit" in m for m in messages) == 3 and not any("preprocessing" in m for m in messages)
    (cache,) = (tmp_path / "cache").glob("svhn-64px-test-*.h5")
    cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    third, messages = _module(tmp_path)
    assert any("rebuilding" in m and str(cache) in m for m in messages)
    for dm in (second, third):
        for key in ("images", "labels"):
            np.testing.assert_array_equal(dm.splits["test"][key], first.splits["test"][key])


def test_other_preprocessing_uses_another_cache_file(tree):
    _module(tree[0])
    _module(tree[0], expand=0.5)
    _, messages = _module(tree[0], expand=0.5)
    assert all("cache hit" in m for m in messages if m.startswith("cache"))
    assert len({p.name for p in (tree[0] / "cache").glob("svhn-64px-train-*.h5")}) >= 2


def test_missing_files_give_one_error_with_paths_and_url(tmp_path):
    with pytest.raises(DataError) as error:
        SVHNDataModule(tmp_path, log=lambda _: None).source_metadata()
    message = str(error.value)
    assert str(tmp_path / "svhn" / "train" / "digitStruct.mat") in message and SVHN_URL in message
    assert all(f"{s}.tar.gz" in message for s in SPLITS) and "use_extra=false" not in message
    write_svhn(tmp_path, ("train", "test"))
    with pytest.raises(DataError, match="use_extra=false") as error:
        check_svhn_files(tmp_path, use_extra=True)
    assert "extra.tar.gz" in str(error.value) and "train.tar.gz" not in str(error.value)
    assert str(tmp_path / "svhn" / "extra" / "digitStruct.mat") in str(error.value)
    check_svhn_files(tmp_path, use_extra=False)


def test_bad_configuration_is_rejected():
    with pytest.raises(ValueError, match="variant"):
        SVHNDataModule(variant="32px")
    with pytest.raises(ValueError, match="crop"):
        SVHNDataModule(crop=80)
    with pytest.raises(ValueError, match="val_size"):
        SVHNDataModule(val_size=-1)


def test_named_sets_match_the_protocol():
    assert svhn.SVHN_SETS["64px"] == {"size": 64, "expand": 0.3, "crop": 54}
    assert svhn.SVHN_SETS["128px"]["size"] == 128 and svhn.SVHN_SETS["128px"]["crop"] == 110
    assert SEQUENCES["train"][5] == [1, 2, 3, 4, 5, 6]  # the fixture holds a number the reader must exclude

"""Tests of stn_repro.data.cache: HDF5 round trip, cache keys, hit / miss, corruption and atomic writes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np
import pytest

import stn_repro
from stn_repro.data import cache
from stn_repro.data.cache import (
    CACHE_FORMAT_VERSION,
    CacheError,
    cache_key,
    cache_path,
    load_or_build,
    read_arrays,
    read_metadata,
    write_arrays,
)
from stn_repro.data.errors import DataError

PROTOCOL = {"task": "rts", "seed": 0, "canvas": 42, "rotation_deg": [-90, 90], "scale": [0.7, 1.2]}
CHECKSUM = "0123abcd" * 8


def dataset(seed: int = 0, n: int = 300) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, size in (("train", n), ("test", n // 3)):
        arrays[f"{split}/images"] = rng.integers(0, 256, (size, 42, 42), dtype=np.uint8)
        arrays[f"{split}/labels"] = rng.integers(0, 10, size).astype(np.int64)
        arrays[f"{split}/theta"] = rng.normal(size=(size, 6)).astype(np.float32)
        arrays[f"{split}/boxes"] = rng.uniform(0, 42, (size, 4)).astype(np.float32)
    return arrays


class Builder:
    """A build callable that counts its calls."""

    def __init__(self, arrays: Mapping[str, np.ndarray] | None = None) -> None:
        self.arrays = dict(arrays if arrays is not None else dataset())
        self.calls = 0

    def __call__(self) -> dict[str, np.ndarray]:
        self.calls += 1
        return self.arrays


class Log(list):
    def __call__(self, message: str) -> None:
        self.append(message)


def assert_arrays_equal(got: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(expected)
    for name, array in expected.items():
        assert got[name].dtype == np.asarray(array).dtype and got[name].shape == np.shape(array), name
        np.testing.assert_array_equal(got[name], array)


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def flip_bytes_in_dataset(path: Path, name: str, offset: int = 100) -> None:
    with h5py.File(path, "r") as file:
        dataset = file[name]
        start = dataset.id.get_chunk_info(0).byte_offset if dataset.chunks else dataset.id.get_offset()
    with open(path, "r+b") as raw:
        raw.seek(start + offset)
        byte = raw.read(1)
        raw.seek(start + offset)
        raw.write(bytes([byte[0] ^ 0xFF]))


# ---------------------------------------------------------------- keys and paths


def test_cache_key_is_stable_and_canonical() -> None:
    key = cache_key(PROTOCOL, CHECKSUM)
    assert len(key) == 16 and int(key, 16) >= 0
    reordered = dict(reversed(list(PROTOCOL.items())))
    assert cache_key(reordered, CHECKSUM) == key
    assert cache_key({**PROTOCOL, "scale": (0.7, 1.2), "seed": np.int64(0)}, CHECKSUM) == key
    assert cache_key({**PROTOCOL, "seed": 1}, CHECKSUM) != key
    assert cache_key(PROTOCOL, CHECKSUM[::-1]) != key


def test_cache_key_depends_on_format_version(monkeypatch: pytest.MonkeyPatch) -> None:
    key = cache_key(PROTOCOL, CHECKSUM)
    monkeypatch.setattr(cache, "CACHE_FORMAT_VERSION", CACHE_FORMAT_VERSION + 1)
    assert cache_key(PROTOCOL, CHECKSUM) != key


def test_cache_key_rejects_unserialisable_protocol() -> None:
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        cache_key({"transform": object()}, CHECKSUM)


def test_cache_path(tmp_path: Path) -> None:
    assert cache_path(tmp_path, "mnist_rts", "abc123") == tmp_path / "cache" / "mnist_rts-abc123.h5"
    with pytest.raises(ValueError, match="may only contain"):
        cache_path(tmp_path, "../escape", "abc123")


# ---------------------------------------------------------------- write / read


def test_round_trip_arrays_and_metadata(tmp_path: Path) -> None:
    arrays = {
        **dataset(),
        "train/mask": np.array([[True, False], [False, True]]),
        "float_images": np.random.default_rng(0).random((5, 42, 42), dtype=np.float32),
        "count": np.int64(7),
        "empty": np.zeros((0, 4), np.float32),
        "big_endian": np.arange(5, dtype=">i4"),
    }
    metadata = {"seed": 3, "source": {"digits": "mnist", "n_train": 4000}, "rates": [0.5, 1.5], "ok": True}
    path = tmp_path / "sub" / "data.h5"
    write_arrays(path, arrays, metadata)
    got = read_arrays(path, {"seed": 3, "source": metadata["source"]})
    native = {**arrays, "count": np.asarray(7), "big_endian": np.arange(5, dtype=np.int32)}
    assert_arrays_equal(got, native)
    stored = read_metadata(path)
    assert {k: stored[k] for k in metadata} == metadata
    assert stored["format_version"] == CACHE_FORMAT_VERSION and stored["code_version"] == stn_repro.__version__
    assert stored["complete"] is True and stored["created"].endswith("+00:00")
    assert stored["arrays"] == sorted(arrays)
    with h5py.File(path, "r") as file:  # plain HDF5 layout, readable by any tool
        assert isinstance(file["train"], h5py.Group) and file["train/images"].compression == "gzip"
        assert file["train/images"].shape == (300, 42, 42)


def test_write_rejects_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "x.h5"
    with pytest.raises(TypeError, match="'names'.*dtype"):
        write_arrays(path, {"names": np.array(["a", "b"])}, {})
    with pytest.raises(ValueError, match="invalid array name"):
        write_arrays(path, {"train//images": np.zeros(3)}, {})
    with pytest.raises(ValueError, match="also the group"):
        write_arrays(path, {"train": np.zeros(3), "train/images": np.zeros(3)}, {})
    with pytest.raises(ValueError, match="reserved"):
        write_arrays(path, {"a": np.zeros(3)}, {"complete": True})
    assert not path.exists() and not temp_files(tmp_path)


def test_read_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CacheError, match="no such cache file"):
        read_arrays(tmp_path / "absent.h5", {})


def test_read_detects_metadata_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "x.h5"
    write_arrays(path, {"a": np.arange(3)}, {"protocol": PROTOCOL})
    with pytest.raises(CacheError, match="metadata 'protocol' is") as info:
        read_arrays(path, {"protocol": {**PROTOCOL, "seed": 1}})
    assert str(info.value).startswith(str(path))
    with pytest.raises(CacheError, match="metadata 'seed' is null"):
        read_arrays(path, {"seed": 0})


def test_read_detects_format_version_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "x.h5"
    write_arrays(path, {"a": np.arange(3)}, {})
    monkeypatch.setattr(cache, "CACHE_FORMAT_VERSION", CACHE_FORMAT_VERSION + 1)
    with pytest.raises(CacheError, match=f"format version {CACHE_FORMAT_VERSION}, expected"):
        read_arrays(path, {})


def test_read_detects_checksum_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "x.h5"
    arrays = dataset()
    write_arrays(path, arrays, {})
    with h5py.File(path, "r+") as file:  # same-size overwrite: the file stays valid HDF5, the data differ
        images = file["train/images"]
        images[0, 0, 0] = images[0, 0, 0] ^ 1
    with pytest.raises(CacheError, match="'train/images' fails its CRC-32 check"):
        read_arrays(path, {})


def test_read_detects_flipped_bytes_in_file(tmp_path: Path) -> None:
    path = tmp_path / "x.h5"
    write_arrays(path, dataset(), {})
    flip_bytes_in_dataset(path, "test/images")
    with pytest.raises(CacheError) as info:
        read_arrays(path, {})
    assert str(info.value).startswith(str(path))


def test_read_detects_missing_marker_and_missing_array(tmp_path: Path) -> None:
    path = tmp_path / "x.h5"
    write_arrays(path, dataset(), {})
    with h5py.File(path, "r+") as file:
        del file["train/theta"]
    with pytest.raises(CacheError, match="'train/theta' is missing"):
        read_arrays(path, {})
    with h5py.File(path, "r+") as file:
        del file.attrs["complete"]
    with pytest.raises(CacheError, match="incomplete"):
        read_arrays(path, {})


@pytest.mark.parametrize("keep", [0, 100, 2000, 0.5])
def test_read_detects_truncation(tmp_path: Path, keep: float) -> None:
    path = tmp_path / "x.h5"
    write_arrays(path, dataset(), {})
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])
    with pytest.raises(CacheError) as info:
        read_arrays(path, {})
    assert str(info.value).startswith(str(path))


def test_failed_write_leaves_no_temp_and_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "x.h5"
    write_arrays(path, {"a": np.arange(3)}, {"version": 1})
    calls = []

    def crash_on_second_array(array: np.ndarray) -> dict:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return {}

    monkeypatch.setattr(cache, "_storage_options", crash_on_second_array)
    with pytest.raises(KeyboardInterrupt):
        write_arrays(path, dataset(), {"version": 2})
    assert len(calls) == 2 and not temp_files(tmp_path)
    np.testing.assert_array_equal(read_arrays(path, {"version": 1})["a"], np.arange(3))


def test_unwritable_destination_is_a_data_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DataError, match="cannot write cache file") as info:
        write_arrays(blocker / "x.h5", {"a": np.arange(3)}, {})
    assert str(blocker / "x.h5") in str(info.value)


# ---------------------------------------------------------------- load_or_build


def test_miss_then_hit(tmp_path: Path) -> None:
    build, log = Builder(), Log()
    first, first_meta = load_or_build(tmp_path, "rts", PROTOCOL, CHECKSUM, build, {"seed": 0}, log=log)
    second, second_meta = load_or_build(tmp_path, "rts", PROTOCOL, CHECKSUM, build, {"seed": 0}, log=log)
    path = cache_path(tmp_path, "rts", cache_key(PROTOCOL, CHECKSUM))
    assert build.calls == 1 and path.is_file()
    assert_arrays_equal(first, build.arrays)
    assert_arrays_equal(second, build.arrays)
    assert first_meta == second_meta
    assert second_meta["protocol"] == PROTOCOL and second_meta["source_checksum"] == CHECKSUM
    assert second_meta["seed"] == 0 and second_meta["name"] == "rts"
    assert log[-1] == f"cache hit: {path}"
    assert log[0].startswith("cache miss") and log[1].startswith(f"cache written: {path}")
    assert all("\n" not in line for line in log)


def test_protocol_change_is_a_miss(tmp_path: Path) -> None:
    build = Builder()
    load_or_build(tmp_path, "rts", PROTOCOL, CHECKSUM, build, log=Log())
    load_or_build(tmp_path, "rts", {**PROTOCOL, "seed": 1}, CHECKSUM, build, log=Log())
    load_or_build(tmp_path, "rts", PROTOCOL, "f" * 64, build, log=Log())
    assert build.calls == 3
    assert len(list((tmp_path / "cache").glob("rts-*.h5"))) == 3


@pytest.mark.parametrize("damage", ["truncate", "flip", "crc", "metadata", "empty"])
def test_bad_file_is_rebuilt_with_one_notice(tmp_path: Path, damage: str) -> None:
    build = Builder()
    load_or_build(tmp_path, "rts", PROTOCOL, CHECKSUM, build, log=Log())
    path = cache_path(tmp_path, "rts", cache_key(PROTOCOL, CHECKSUM))
    expected_reason = {
        "truncate": "unreadable, truncated or corrupt",
        "flip": "corrupt",
        "crc": "fails its CRC-32 check",
        "metadata": "metadata 'protocol'",
        "empty": "unreadable, truncated or corrupt",
    }[damage]
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "flip":
        flip_bytes_in_dataset(path, "train/images")
    elif damage == "crc":
        with h5py.File(path, "r+") as file:
            file["train/labels"].attrs["crc32"] = np.uint32(12345)
    elif damage == "metadata":  # a file for another protocol at this path (e.g. copied or renamed by hand)
        write_arrays(path, build.arrays, {"name": "rts", "protocol": {"other": 1}})
    else:
        path.write_bytes(b"")
    log = Log()
    arrays, _ = load_or_build(tmp_path, "rts", PROTOCOL, CHECKSUM, build, log=log)
    assert build.calls == 2
    assert_arrays_equal(arrays, build.arrays)
    notices = [line for line in log if "rebuilding" in line]
    assert len(notices) == 1 and str(path) in notices[0] and expected_reason in notices[0]
    assert all("\n" not in line and "Traceback" not in line for line in log)
    assert_arrays_equal(read_arrays(path, {"protocol": PROTOCOL}), build.arrays)
    load_or_build(tmp_path, "rts", PROTOCOL, CHECKSUM, build, log=Log())
    assert build.calls == 2


def test_failing_build_leaves_nothing(tmp_path: Path) -> None:
    def build() -> dict[str, np.ndarray]:
        raise RuntimeError("generator bug")

    with pytest.raises(RuntimeError, match="generator bug"):
        load_or_build(tmp_path, "rts", PROTOCOL, CHECKSUM, build, log=Log())
    folder = tmp_path / "cache"
    assert not cache_path(tmp_path, "rts", cache_key(PROTOCOL, CHECKSUM)).exists()
    assert list(folder.iterdir()) == []


def test_unwritable_cache_folder_fails_before_building(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.write_text("a file where the data folder should be")
    build = Builder()
    with pytest.raises(DataError, match="is not writable") as info:
        load_or_build(root, "rts", PROTOCOL, CHECKSUM, build, log=Log())
    assert str(root / "cache") in str(info.value) and build.calls == 0


def test_reserved_metadata_keys(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="reserved"):
        load_or_build(tmp_path, "rts", PROTOCOL, CHECKSUM, Builder(), {"protocol": {}}, log=Log())


@pytest.mark.slow
def test_full_size_round_trip_is_fast(tmp_path: Path) -> None:
    """60,000 × 42 × 42 uint8 images: write and verified read well under the training budget."""
    import time

    images = np.zeros((60_000, 42, 42), np.uint8)
    images[:, 7:35, 7:35] = np.random.default_rng(0).integers(0, 256, (60_000, 28, 28), dtype=np.uint8)
    build = Builder({"train/images": images})
    start = time.perf_counter()
    load_or_build(tmp_path, "big", PROTOCOL, CHECKSUM, build, log=Log())
    written = time.perf_counter()
    arrays, _ = load_or_build(tmp_path, "big", PROTOCOL, CHECKSUM, build, log=Log())
    read = time.perf_counter()
    np.testing.assert_array_equal(arrays["train/images"], images)
    assert written - start < 10 and read - written < 5

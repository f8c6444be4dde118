"""Uncertainty of test errors and paired comparisons of two models tested on the same images.

- :func:`wilson_interval`: the 95% Wilson score interval of an error rate measured on ``n`` test images.
- :func:`mcnemar_p`: the exact (binomial) McNemar test of two models' per-sample outcomes on the same test images:
  only the images exactly one of them gets wrong count.
- :func:`pack_outcomes` / :func:`unpack_outcomes`: per-sample outcomes stored small in a run record
  (``{"n": N, "wrong": <base64 of the packed bits>}``: 1,000 images take 168 characters).
"""

from __future__ import annotations

import base64
import math
from typing import Any

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson_interval(errors: int, n: int, z: float = Z95) -> tuple[float, float]:
    """``(low, high)`` in percent: the Wilson score interval of ``errors`` wrong out of ``n`` (95% by default)."""
    if n <= 0 or not 0 <= errors <= n:
        raise ValueError(f"need 0 <= errors <= n and n > 0, got errors={errors}, n={n}")
    p = errors / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if errors == 0 else max(0.0, centre - half)  # exact ends: 0 errors give 0 (not 2e-17), n give 1
    high = 1.0 if errors == n else min(1.0, centre + half)
    return 100.0 * low, 100.0 * high


def mcnemar_p(wrong_a: np.ndarray, wrong_b: np.ndarray) -> tuple[float, int, int]:
    """``(p, b, c)``: the two-sided exact McNemar p-value of per-sample outcomes ``wrong_a`` and ``wrong_b``
    (bool ``(N,)``, the same test images in the same order), with ``b`` the images only A gets wrong and ``c`` those
    only B gets wrong. ``p = min(1, 2 · P(X <= min(b, c)))`` for ``X ~ Binomial(b + c, 1/2)``; 1 when ``b = c = 0``."""
    wrong_a, wrong_b = np.asarray(wrong_a, bool), np.asarray(wrong_b, bool)
    if wrong_a.shape != wrong_b.shape:
        raise ValueError(f"outcomes of different test sets: {wrong_a.shape} vs {wrong_b.shape}")
    b, c = int(np.sum(wrong_a & ~wrong_b)), int(np.sum(~wrong_a & wrong_b))
    n = b + c
    if n == 0:
        return 1.0, b, c
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n), b, c


def pack_outcomes(wrong: np.ndarray) -> dict[str, Any]:
    """``{"n": N, "wrong": base64}`` of the bool ``(N,)`` per-sample outcomes (True: wrong), in test-set order."""
    wrong = np.asarray(wrong, bool).reshape(-1)
    return {"n": int(wrong.size), "wrong": base64.b64encode(np.packbits(wrong).tobytes()).decode("ascii")}


def unpack_outcomes(packed: dict[str, Any]) -> np.ndarray:
    """The bool ``(N,)`` outcomes of :func:`pack_outcomes`."""
    bits = np.frombuffer(base64.b64decode(packed["wrong"]), dtype=np.uint8)
    return np.unpackbits(bits)[: packed["n"]].astype(bool)

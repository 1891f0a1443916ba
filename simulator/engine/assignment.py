"""Randomisation: a salted hash of the user id picks the arm (stable across runs and machines).

``bucket(user_ids, salt)`` maps each user to a uniform number in [0, 1) via SplitMix64 of
(user id XOR a SHA-256 of the salt); arms own consecutive ranges proportional to weights.
"""

from __future__ import annotations

import hashlib

import numpy as np

_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def bucket(user_ids: np.ndarray, salt: str) -> np.ndarray:
    s = np.uint64(int.from_bytes(hashlib.sha256(salt.encode()).digest()[:8], "little"))
    h = _splitmix64(np.asarray(user_ids, dtype=np.uint64) ^ s)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def assign(user_ids: np.ndarray, weights: list[float], salt: str) -> np.ndarray:
    """Arm index per user (same user, salt and weights -> same arm, always)."""
    w = np.asarray(weights, dtype=np.float64)
    edges = np.cumsum(w / w.sum())
    edges[-1] = 1.0 + 1e-12
    return np.searchsorted(edges, bucket(user_ids, salt), side="right").astype(np.int64)

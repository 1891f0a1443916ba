"""Small tensor helpers shared by the sequence models, their training loop and HLLM: left-padded
id/time batches, next-event times, the compute device. (Leaf module: imports nothing of the project.)"""

from __future__ import annotations

import numpy as np
import torch


def pad_left(histories, max_len: int, timestamps=None) -> tuple[np.ndarray, np.ndarray]:
    """Right-aligned (B, T) arrays of shifted ids (0 = pad) and timestamps, last max_len items."""
    B = len(histories)
    ids = np.zeros((B, max_len), dtype=np.int64)
    ts = np.zeros((B, max_len), dtype=np.float64)
    for b, h in enumerate(histories):
        h = np.asarray(h)[-max_len:]
        if len(h):
            ids[b, max_len - len(h):] = h + 1
            if timestamps is not None:
                ts[b, max_len - len(h):] = np.asarray(timestamps[b])[-max_len:]
    return ids, ts


def next_times(ts: torch.Tensor, now: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T) time each position predicts for: the next input's time; the last position gets ``now``
    (B,) where given and finite, else its own time (the official code's fallback)."""
    last = ts[:, -1:] if now is None else torch.where(torch.isfinite(now), now, ts[:, -1])[:, None]
    return torch.cat([ts[:, 1:], last.to(ts.dtype)], 1)


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")

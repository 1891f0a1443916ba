"""Serving the user LLM: one computation per user, a user-state cache, incremental extension.

Training scores users in left-padded batches (``HLLMModel.user_states``), where a user's floats
can depend on the batch (the padding, the small-matrix paths of a GEMM). Serving computes each
user's state from that user's window alone (:class:`UserLLMRunner`):

- the window is the last ``max_len`` (P) items of the history, at positions 0..L-1 (RoPE is
  relative: the same function as the padded forward, equal within float tolerance); with a
  ``window_step`` S > 1 a full window drops its oldest items S at a time (it holds P - S + 1 to P
  items), so it grows by extension between two drops instead of being recomputed on every item;
- every GEMM (the fused q/k/v, o, fused gate/up and down projections) runs on blocks of exactly
  ``ROWS`` token rows (``rowwise``); the elementwise and per-row ops (RMSNorm, RoPE from a
  per-position cos/sin table, SiLU, residuals) run on all rows at once; attention is one fused
  ``scaled_dot_product_attention`` call per query chunk (``QB`` positions) over the (user, chunk)
  pairs, each pair's QB queries against the keys they can see (the first QB (c+1) positions of its
  user, causally masked): a pair's shape is a function of its chunk alone, so a row's floats
  never depend on its neighbours or on the batch;
- so extending a state by appended items (their rows only, the earlier positions' keys and
  values from the cache: the transformer is causal) gives, bit for bit, the state of a full pass
  over the new window; the last layer runs its query, attention and MLP for the last item only.

:class:`UserStates` keeps per user the window a state was computed for (the key: a state is
reused only for the identical window and timestamps, and extended only when its window is a
prefix of the new one, so runs, resumed runs and the oracle's counterfactual passes can share
it safely), the embedding and, while the window can still grow, every layer's keys and values;
the least recently used users go beyond a byte budget. Two states per user: the latest and the
user's first one that can grow (its ``root``, mostly the history the run started from): every
counterfactual pass of the oracle starts each user from that history again, so a pass continues
from the root where the latest state belongs to another pass's trajectory. Nothing else is cached: the recompute
mode runs the same function, which is what makes "identical with or without the cache" hold.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from transformers.models.llama.modeling_llama import repeat_kv

from hllm.modeling_hllm import HLLMModel, time_gap_buckets

ROWS = 64  # token rows per block of every row-wise op
QB = 8  # query positions per attention chunk
ITEM_PROJ_MAX_BYTES = 2**30  # layer 0's per-item projections are precomputed up to this size


@dataclass
class UserState:
    """A user's served state: the window it was computed from, its embedding, its keys/values."""

    window: np.ndarray  # (L,) item ids: the last max_len items of the history
    times: np.ndarray | None  # (L,) their timestamps (use_time), else None
    emb: torch.Tensor  # (D,) last position's final state (before ``HLLMModel.unit``)
    kv: torch.Tensor | None  # (n_layers, 2, L, Hkv*hd) keys (RoPE'd) and values; None: the window is full

    @property
    def nbytes(self) -> int:
        times = 0 if self.times is None else self.times.nbytes
        return self.emb.nbytes + self.window.nbytes + times + (0 if self.kv is None else self.kv.nbytes) + 200

    def same(self, window: np.ndarray, times: np.ndarray | None) -> bool:
        return np.array_equal(self.window, window) and (times is None or np.array_equal(self.times, times))

    def prefix_of(self, window: np.ndarray, times: np.ndarray | None) -> bool:
        n = len(self.window)
        return (self.kv is not None and n < len(window) and np.array_equal(self.window, window[:n])
                and (times is None or np.array_equal(self.times, times[:n])))


class _Layer:
    """One decoder layer's weights as the runner uses them: q/k/v and gate/up fused into one GEMM each."""

    def __init__(self, layer) -> None:
        att, mlp = layer.self_attn, layer.mlp
        self.norm1, self.norm2, self.act = layer.input_layernorm, layer.post_attention_layernorm, mlp.act_fn
        self.scaling = att.scaling
        self.qkv = _fused(att.q_proj, att.k_proj, att.v_proj)
        self.q, self.kv = _fused(att.q_proj), _fused(att.k_proj, att.v_proj)  # the last layer's
        self.o = _fused(att.o_proj)
        self.gate_up = _fused(mlp.gate_proj, mlp.up_proj)
        self.down = _fused(mlp.down_proj)


def _fused(*lins) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(in, out) weight (transposed once) and bias of linears applied to the same input, side by side."""
    w = torch.cat([lin.weight for lin in lins]).detach()
    b = None if lins[0].bias is None else torch.cat([lin.bias for lin in lins]).detach()
    return w.t(), b


def rowwise(x: torch.Tensor, lin: tuple[torch.Tensor, torch.Tensor | None], rows: int = ROWS) -> torch.Tensor:
    """``x @ W (+ b)`` for x (R, in) in GEMMs of exactly ``rows`` rows (the last block zero-padded):
    every product has one shape, so a row's result depends on that row only."""
    w, b = lin
    n = x.shape[0]
    pad = -n % rows or (rows if n == 0 else 0)
    if pad:
        x = torch.cat([x, x.new_zeros(pad, x.shape[1])])
    out = x.new_empty(x.shape[0], w.shape[1])
    for s in range(0, x.shape[0], rows):
        torch.mm(x[s:s + rows], w, out=out[s:s + rows])
    out = out[:n]
    return out if b is None else out + b


class UserLLMRunner:
    """The user LLM's serving computation (module doc) over a fitted model and its item table (N, D)."""

    def __init__(self, model: HLLMModel, table: torch.Tensor, empty: torch.Tensor | None = None) -> None:
        user = model.user_llm
        self.llama, self.table, self.P = user.model, table, model.config.max_len
        self.layers = [_Layer(layer) for layer in self.llama.layers]
        self.time_emb, self.time_buckets = user.time_emb, user.time_buckets
        c = self.llama.config
        self.H, self.Hkv = c.num_attention_heads, c.num_key_value_heads
        self.hd = self.llama.layers[0].self_attn.head_dim
        self.chunks = -(-self.P // QB)  # query chunks per window
        # RoPE's cos/sin of every window position (elementwise in the position: the floats of computing
        # them per row)
        self.cos, self.sin = (t[0] for t in self.llama.rotary_emb(table, torch.arange(self.P, device=table.device)[None]))
        if empty is None:  # an empty history: what the padded forward gives for a window of padding only
            x = table.new_zeros(1, self.P, table.shape[1])
            mask = torch.zeros(1, self.P, dtype=torch.bool, device=table.device)
            empty = model.user_states(x, mask, torch.zeros(1, self.P, dtype=torch.float64, device=table.device))[0, -1]
        self.empty = empty
        # without time embeddings layer 0 reads item embeddings only: its normed q/k/v projections are
        # per item, computed once (in the same blocks of rows: the floats of computing them per row)
        self.items: torch.Tensor | None = None  # (N, (H + 2 Hkv) hd)
        width = (self.H + 2 * self.Hkv) * self.hd
        if self.time_emb is None and len(table) * width * table.element_size() <= ITEM_PROJ_MAX_BYTES:
            with torch.no_grad():
                self.items = rowwise(self.layers[0].norm1(table), self.layers[0].qkv)

    def _rope(self, x: torch.Tensor, pos: torch.Tensor, heads: int) -> torch.Tensor:
        """x (R, heads*hd) at positions pos (R,) -> rotated (R, heads*hd), as ``apply_rotary_pos_emb``."""
        h = x.view(len(x), heads, self.hd)
        cos, sin = self.cos[pos][:, None], self.sin[pos][:, None]  # (R, 1, hd)
        half = self.hd // 2
        out = h * cos  # + rotate_half(h) * sin in place: the same floats (a + (-b) c == a - b c)
        out[..., :half] -= h[..., half:] * sin[..., :half]
        out[..., half:] += h[..., :half] * sin[..., half:]
        return out.reshape(len(x), heads * self.hd)

    def _qkv(self, i: int, x: torch.Tensor, ids: torch.Tensor, last: torch.Tensor | None):
        """Layer i's normed projections of rows x (items ``ids``), before RoPE: q (R, H*hd), k, v
        (R, Hkv*hd); ``last`` (the last layer): q of those rows only."""
        hq, hk = self.H * self.hd, self.Hkv * self.hd
        if i == 0 and self.items is not None:
            out = self.items[ids]
            q, k, v = out[:, :hq], out[:, hq:hq + hk], out[:, hq + hk:]
            return (q if last is None else q[last]), k, v
        layer = self.layers[i]
        a = layer.norm1(x)
        if last is not None:
            kv = rowwise(a, layer.kv)
            return rowwise(a[last], layer.q), kv[:, :hk], kv[:, hk:]
        out = rowwise(a, layer.qkv)
        return out[:, :hq], out[:, hq:hq + hk], out[:, hq + hk:]

    def _attention(self, layer: _Layer, q: torch.Tensor, owner: torch.Tensor, pos: torch.Tensor, K: torch.Tensor,
                   V: torch.Tensor) -> torch.Tensor:
        """Causal attention of query rows q (S, H*hd) of users ``owner`` at ``pos`` over the users'
        keys/values K, V (U, P, Hkv*hd) -> (S, H*hd), by (user, query chunk) pairs (module doc): chunk
        c's QB queries against the first min(P, QB (c+1)) keys of its user (the ones they can see),
        one fused attention call per chunk index."""
        H, Hkv, hd = self.H, self.Hkv, self.hd
        out = q.new_empty(len(q), H * hd)
        chunk = pos // QB
        for c in torch.unique(chunk).tolist():
            rows = torch.nonzero(chunk == c).squeeze(1)  # (Sc,)
            users, slot = torch.unique(owner[rows], return_inverse=True)  # (G,), (Sc,)
            G, n, at = len(users), min(self.P, QB * (c + 1)), pos[rows] % QB
            Q = q.new_zeros(G, QB, H * hd)
            Q[slot, at] = q[rows]
            qpos = c * QB + torch.arange(QB, device=q.device)  # (QB,)
            see = torch.arange(n, device=q.device) <= qpos[:, None]  # (QB, n) keys a query may see
            k, v = (repeat_kv(X[:, :n].index_select(0, users).view(G, n, Hkv, hd).transpose(1, 2), H // Hkv)
                    for X in (K, V))  # (G, H, n, hd) each
            o = F.scaled_dot_product_attention(Q.view(G, QB, H, hd).transpose(1, 2), k, v, attn_mask=see,
                                               scale=layer.scaling)  # (G, H, QB, hd)
            out[rows] = o.transpose(1, 2).reshape(G, QB, H * hd)[slot, at]
        return out

    def _post(self, layer: _Layer, x: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
        h = x + rowwise(att, layer.o)  # (R, D)
        gu = rowwise(layer.norm2(h), layer.gate_up)  # (R, 2F)
        F_ = gu.shape[1] // 2
        return h + rowwise(layer.act(gu[:, :F_]) * gu[:, F_:], layer.down)

    def _inputs(self, windows: list[np.ndarray], times: list[np.ndarray] | None, start: np.ndarray):
        """Embeddings (Nt, D), item ids, positions and owners (Nt,) of each window's items from ``start``."""
        dev = self.table.device
        ids = np.concatenate([w[s:] for w, s in zip(windows, start, strict=True)])
        pos = np.concatenate([np.arange(s, len(w)) for w, s in zip(windows, start, strict=True)])
        owner = np.repeat(np.arange(len(windows)), [len(w) - s for w, s in zip(windows, start, strict=True)])
        ids = torch.from_numpy(ids).to(dev)
        x = self.table[ids]  # (Nt, D)
        if self.time_emb is not None:
            buckets = [time_gap_buckets(torch.from_numpy(np.asarray(t, np.float64))[None],
                                        torch.ones(1, len(t), dtype=torch.bool), self.time_buckets)[0, s:]
                       for t, s in zip(times, start, strict=True)]
            x = x + self.time_emb(torch.cat(buckets).to(dev))
        return x, ids, torch.from_numpy(pos).to(dev), torch.from_numpy(owner).to(dev)

    def _prefix_kv(self, prefixes: list[UserState | None]) -> torch.Tensor:
        """(n_layers, 2, U, P, Hkv*hd) keys/values (each layer's keys and values contiguous: the
        attention gathers them per query chunk): the prefixes' cached ones, zeros elsewhere."""
        kv = self.table.new_zeros(len(self.layers), 2, len(prefixes), self.P, self.Hkv * self.hd)
        for u, p in enumerate(prefixes):
            if p is not None:
                kv[:, :, u, :len(p.window)] = p.kv
        return kv

    @torch.no_grad()
    def extend(self, prefixes: list[UserState | None], windows: list[np.ndarray], times: list[np.ndarray] | None,
               keep_kv: bool) -> list[UserState]:
        """States of non-empty ``windows``, each continuing its prefix state (None: from scratch)."""
        start = np.array([0 if p is None else len(p.window) for p in prefixes], np.int64)
        lengths = np.array([len(w) for w in windows], np.int64)
        x, ids, pos, owner = self._inputs(windows, times, start)  # (Nt, D), (Nt,) x3
        last = torch.from_numpy(np.cumsum(lengths - start) - 1).to(x.device)  # (U,) row of each last item
        kv = self._prefix_kv(prefixes)  # (n_layers, 2, U, P, Hkv*hd)
        U = len(prefixes)
        for i, layer in enumerate(self.layers):
            final = i == len(self.layers) - 1  # the last layer: only the last item's state is read
            q, k, v = self._qkv(i, x, ids, last if final else None)
            at = (i * 2 * U + owner) * self.P + pos  # rows of kv.view(-1, Hkv*hd): layer i's keys
            flat = kv.view(-1, kv.shape[-1])
            flat.index_copy_(0, at, self._rope(k, pos, self.Hkv))
            flat.index_copy_(0, at + U * self.P, v)
            if final:
                x, pos, owner = x[last], pos[last], owner[last]
            att = self._attention(layer, self._rope(q, pos, self.H), owner, pos, kv[i, 0], kv[i, 1])  # (S, H*hd)
            x = self._post(layer, x, att)
        emb = self.llama.norm(x)  # (U, D)
        grow = keep_kv & (lengths < self.P)  # a full window slides when it grows: nothing to extend
        return [UserState(windows[u], None if times is None else times[u], emb[u].clone(),
                          kv[:, :, u, :lengths[u]].clone() if grow[u] else None) for u in range(len(windows))]


SERVING_MODES = ("online", "tables")


class UserStateConfig(BaseModel):
    """How HLLM serves user embeddings (a serving setting: not part of the trained model's config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    serving: Literal[SERVING_MODES] = Field(
        "online", description="online: each request's user embedding from the user's current history (the "
        "user LLM in the request path, through the cache below); tables: from a user-embedding table "
        "refreshed on a schedule (refresh_s, refresh_items): the request path is a lookup")
    mode: Literal["incremental", "cached", "recompute"] = Field(
        "incremental", description="incremental: reuse a user's state for the same window and extend it when "
        "items were appended; cached: reuse, recompute on any change; recompute: no cache (every request runs "
        "the whole window; the path the other two equal bit for bit)")
    window_step: int = Field(1, ge=1, description="a full window drops its oldest items this many at a time "
                             "(at most max_len): a user's window holds between max_len - step + 1 and max_len "
                             "items, and grows item by item (an incremental extension) between two drops, where "
                             "1 (exact: always the last max_len items) recomputes the whole window on every new "
                             "item of a full one (dropping an item changes every later position's state)")
    max_bytes: int = Field(256 * 2**20, ge=0, description="cache budget per policy instance; least recently "
                                                          "used users go first")
    refresh_s: float | None = Field(3600.0, gt=0, description="tables: the table is rebuilt every this many "
                                    "simulated seconds (a request sees the history as of the last rebuild)")
    refresh_items: int | None = Field(10, ge=1, description="tables: a user's row is also refreshed each time "
                                      "they have this many new items")

    def window_start(self, n: int, max_len: int) -> int:
        """Where the served window of a history of ``n`` items starts (``window_step``): the last
        ``max_len`` items, the start moved on ``window_step`` items at a time."""
        step = min(self.window_step, max_len)
        return 0 if n <= max_len else -(-(n - max_len) // step) * step

    def served_prefix(self, times: np.ndarray | None, n: int, now: float | None) -> tuple[int, float]:
        """tables: how many of a user's ``n`` items their table row was computed from, and the
        simulated time of that refresh (nan: unknown). online: all of them, now."""
        if self.serving == "online":
            return n, np.nan if now is None else now
        cut, at = 0, -np.inf
        if self.refresh_items is not None:
            cut = n // self.refresh_items * self.refresh_items
            at = times[cut - 1] if cut and times is not None else -np.inf
        if self.refresh_s is not None and now is not None and times is not None:
            built = np.floor(now / self.refresh_s) * self.refresh_s  # the last rebuild
            k = int(np.searchsorted(times, built, side="right"))  # the items logged before it
            if k >= cut:
                cut, at = k, built
        if self.refresh_items is None and (self.refresh_s is None or now is None or times is None):
            return n, np.nan if now is None else now  # no schedule that can apply: always fresh
        return cut, float(at) if np.isfinite(at) else np.nan


class UserStates:
    """User embeddings for serving: a :class:`UserLLMRunner` behind a bounded user-state cache
    (``UserStateConfig``)."""

    def __init__(self, runner: UserLLMRunner, cfg: UserStateConfig, use_time: bool) -> None:
        self.runner, self.mode, self.max_bytes, self.use_time = runner, cfg.mode, cfg.max_bytes, use_time
        self.cfg = cfg
        self.cache: OrderedDict[int, UserState] = OrderedDict()  # the latest state per user
        self.roots: dict[int, UserState] = {}  # per cached user: the first state with keys and values
        self.bytes = 0
        self.stats = {"hit": 0, "extend": 0, "full": 0, "evicted": 0, "warm": 0}
        self.compute_s = 0.0  # wall time in the user LLM (tables: the refresh job's, run inline at first use)
        self.warm_s = 0.0  # wall time of ``warm`` (the table built before the run; not in compute_s)
        self.behind: list[np.ndarray] = []  # per request: items the served embedding has not seen
        self.age_s: list[np.ndarray] = []  # per request: simulated seconds since its row was computed

    def served(self, histories, timestamps, now, record: bool = True) -> tuple[list, list | None]:
        """The histories (and times) the served embeddings are computed from: all of each one online,
        the part before the row's last refresh with tables (``UserStateConfig.served_prefix``);
        records each request's staleness (``record``)."""
        if self.cfg.serving == "online" or now is None:  # no request time: offline use, the whole history
            return list(histories), None if timestamps is None else list(timestamps)
        hs, ts, behind, age = [], [] if timestamps is not None else None, [], []
        for b, h in enumerate(histories):
            t = None if timestamps is None else np.asarray(timestamps[b], np.float64)
            nb = None if now is None else float(now[b])
            n, at = self.cfg.served_prefix(t, len(h), nb)
            hs.append(np.asarray(h)[:n])
            if ts is not None:
                ts.append(t[:n])
            behind.append(len(h) - n)
            age.append(np.nan if nb is None else nb - at)
        if record:
            self.behind.append(np.asarray(behind, np.int64))
            self.age_s.append(np.asarray(age, np.float64))
        return hs, ts

    def _get(self, uid: int, window: np.ndarray, times: np.ndarray | None) -> tuple[UserState | None, bool]:
        """The user's cached state to serve ``window`` from, and whether it is that window's (a hit)
        rather than a prefix to extend (incremental mode); (None, False) when neither state fits."""
        st = self.cache.get(uid)
        if st is None:
            return None, False
        self.cache.move_to_end(uid)
        root = self.roots.get(uid)
        for cand in (st,) if root is None or root is st else (st, root):
            if cand.same(window, times):
                return cand, True
        if self.mode == "incremental":
            for cand in (st,) if root is None or root is st else (st, root):
                if cand.prefix_of(window, times):
                    return cand, False
        return None, False

    def _drop(self, uid: int) -> None:
        old, root = self.cache.pop(uid, None), self.roots.pop(uid, None)
        self.bytes -= (0 if old is None else old.nbytes) + (0 if root is None or root is old else root.nbytes)

    def _put(self, uid: int, st: UserState) -> None:
        root = self.roots.get(uid)
        if root is None and st.kv is not None:
            root = st
        self._drop(uid)
        size = st.nbytes + (0 if root is None or root is st else root.nbytes)
        if size > self.max_bytes:
            return
        self.cache[uid] = st
        if root is not None:
            self.roots[uid] = root
        self.bytes += size
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self.cache)))
            self.stats["evicted"] += 1

    def report(self) -> dict:
        """What serving did so far (counts, cache size)."""
        out = {"serving": self.cfg.serving, **self.stats, "user_llm_s": round(self.compute_s, 3),
               "warm_s": round(self.warm_s, 3),
               "cached_users": len(self.cache),
               "cached_mib": round(self.bytes / 2**20, 1)}
        if self.behind:
            behind, age = np.concatenate(self.behind), np.concatenate(self.age_s)
            age = age[np.isfinite(age)]
            out["staleness"] = {
                "requests": len(behind), "stale_share": round(float((behind > 0).mean()), 4),
                "items_behind_mean": round(float(behind.mean()), 3), "items_behind_max": int(behind.max()),
                "age_s_median": round(float(np.median(age)), 1) if len(age) else None,
                "age_s_p90": round(float(np.quantile(age, 0.9)), 1) if len(age) else None}
        return out

    def warm(self, user_ids: np.ndarray, histories, timestamps, now: np.ndarray, chunk: int = 256) -> int:
        """Compute the rows these users would be served at ``now`` (B,) ahead of their requests: a
        deployment's user-embedding table, built before traffic arrives. Their requests then find
        them in the cache (the same floats as computed at the request: ``UserLLMRunner``). Stops
        before the cache would evict a warmed user; no request is recorded. Returns the users warmed."""
        t0, done, evicted = time.perf_counter(), 0, self.stats["evicted"]
        while done < len(user_ids):
            room = chunk  # after the first chunk: as many as the cache's room holds at the mean size so far
            if self.cache:
                room = min(chunk, int((self.max_bytes - self.bytes) / (self.bytes / len(self.cache))))
            if room <= 0:
                break
            sl = slice(done, done + room)
            self.embeddings(user_ids[sl], histories[sl], None if timestamps is None else timestamps[sl],
                            now[sl], record=False)
            done = min(done + room, len(user_ids))
            if self.stats["evicted"] > evicted:  # sizes vary: the estimate was too high
                break
        self.stats["warm"] += done
        self.warm_s += time.perf_counter() - t0
        return done

    def embeddings(self, user_ids: np.ndarray, histories, timestamps, now=None,
                   record: bool = True) -> torch.Tensor:
        """(B, D) final states of the users' served windows (before ``HLLMModel.unit``); ``now``
        (B,) the request times (the tables schedule); ``record``: count them as requests (the
        cache's statistics, staleness, ``compute_s``)."""
        P = self.runner.P
        histories, timestamps = self.served(histories, timestamps, now, record)
        counts = self.stats if record else {"hit": 0, "extend": 0, "full": 0}
        starts = [self.cfg.window_start(len(h), P) for h in histories]
        windows = [np.asarray(h, np.int64)[s:] for h, s in zip(histories, starts, strict=True)]
        times = None
        if self.use_time:  # no timestamps: zeros, as the padded forward (every gap in bucket 0)
            times = [np.zeros(len(w)) if timestamps is None else np.asarray(timestamps[b], np.float64)[starts[b]:]
                     for b, w in enumerate(windows)]
        out = self.runner.table.new_empty(len(windows), self.runner.table.shape[1])
        todo: list[tuple[int, UserState | None]] = []
        for b, w in enumerate(windows):
            t = None if times is None else times[b]
            st, hit = (None, False) if self.mode == "recompute" or len(w) == 0 else self._get(int(user_ids[b]), w, t)
            if len(w) == 0:
                out[b] = self.runner.empty
            elif hit:
                out[b] = st.emb
                counts["hit"] += 1
            else:
                todo.append((b, st))
        if todo:
            rows, t0 = [b for b, _ in todo], time.perf_counter()
            new = self.runner.extend([p for _, p in todo], [windows[b] for b in rows],
                                     None if times is None else [times[b] for b in rows], self.mode == "incremental")
            if record:
                self.compute_s += time.perf_counter() - t0
            for (b, prefix), st in zip(todo, new, strict=True):
                out[b] = st.emb
                counts["extend" if prefix is not None else "full"] += 1
                if self.mode != "recompute":
                    self._put(int(user_ids[b]), st)
        return out

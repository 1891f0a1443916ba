"""The event log of a run: request ids, first-seen times, and the four event tables.

:class:`EventLog` numbers requests in serving order (a function of the simulated clock, so ids
are identical in every runtime and on resume), remembers when each user was first seen, and
writes ``assignments``, ``requests``, ``exposures`` (with the logging propensities of a sampled
slate, NULL for a deterministic one), ``feedback`` and ``ope_slates`` (the target arms' slates on
the exploring arms' requests, never shown) through the keyed
:class:`~simulator.engine.store.EventSink` (a replayed batch overwrites itself, never duplicates).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from simulator.engine.design import SlateBatch
from simulator.engine.store import EventSink
from simulator.engine.users import Response


class EventLog:
    def __init__(self, sink: EventSink, arm_names: tuple[str, ...], feedback_delay_s: float,
                 consume_delay_s: float) -> None:
        self.sink = sink
        self.arm_names = np.array(arm_names, dtype=object)
        self.feedback_delay_s, self.consume_delay_s = feedback_delay_s, consume_delay_s
        self.next_id = 0
        self.first_seen: dict[int, float] = {}

    def new_requests(self, n: int) -> np.ndarray:
        rid = self.next_id + np.arange(n, dtype=np.int64)
        self.next_id += n
        return rid

    def record(self, batch_no: int, rid: np.ndarray, users: np.ndarray, now: np.ndarray, sess: np.ndarray,
               labels: np.ndarray, slates: SlateBatch, resp: Response, history_len: np.ndarray) -> None:
        """Write one served batch. ``labels`` is what the design records for each request's user
        (A/B: the user's arm); exposures and feedback carry the arm that produced each position
        (the same arm in an A/B test; the team in interleaving). ``history_len`` (B,): the history
        items the arms were given with each request (the latency test's load covariate)."""
        self._assignments(users, now, labels)
        origin = self.arm_names[np.clip(slates.arm, 0, None)]  # (B, K) arm name of each position
        near = np.zeros(len(rid)) if slates.nearline_ms is None else slates.nearline_ms
        self.sink.add("requests", request_id=rid, user_id=users, arm=list(labels), ts=now, session_id=sess,
                      latency_ms=slates.latency_ms, batch_no=np.full(len(rid), batch_no, np.int64),
                      nearline_ms=near, history_len=np.asarray(history_len, np.int64))
        r_i, p_i = np.nonzero(slates.item_ids >= 0)
        self.sink.add("exposures", request_id=rid[r_i], user_id=users[r_i], arm=origin[r_i, p_i].tolist(),
                      position=p_i.astype(np.int32), item_id=slates.item_ids[r_i, p_i],
                      channel=slates.channel[r_i, p_i].tolist(), found_by=_found_by(slates, r_i, p_i), score=slates.scores[r_i, p_i].astype(np.float64),
                      latency_ms=slates.latency_ms[r_i], ts=now[r_i], **_propensities(slates, r_i, p_i))
        self._shadows(rid, slates)
        hit = np.flatnonzero(resp.position >= 0)
        if not len(hit):
            return
        pos = resp.position[hit]
        common = dict(request_id=rid[hit], user_id=users[hit], arm=origin[hit, pos].tolist(),
                      item_id=slates.item_ids[hit, pos], position=pos.astype(np.int32))
        self.sink.add("feedback", **common, event="click", value=1.0, ts=now[hit] + self.feedback_delay_s)
        self.sink.add("feedback", **common, event="consume", value=resp.value[hit].astype(np.float64),
                      ts=now[hit] + self.feedback_delay_s + self.consume_delay_s)

    def _shadows(self, rid: np.ndarray, slates: SlateBatch) -> None:
        for a, (rows, ids) in (slates.shadow or {}).items():
            r_i, p_i = np.nonzero(ids >= 0)
            self.sink.add("ope_slates", request_id=rid[rows[r_i]], arm=str(self.arm_names[a]),
                          position=p_i.astype(np.int32), item_id=ids[r_i, p_i])

    def _assignments(self, users: np.ndarray, now: np.ndarray, labels: np.ndarray) -> None:
        uniq, first_row, inverse = np.unique(users, return_index=True, return_inverse=True)
        first = np.full(len(uniq), np.inf)
        np.minimum.at(first, inverse, now)  # each user's earliest request time in this batch
        keep = np.array([int(u) not in self.first_seen for u in uniq], bool)
        if not keep.any():
            return
        nu, first = uniq[keep].astype(np.int64), first[keep]
        self.first_seen.update(zip(nu.tolist(), first.tolist(), strict=True))
        self.sink.add("assignments", user_id=nu, arm=list(labels[first_row[keep]]), first_ts=first)

    def flush(self) -> None:
        self.sink.flush()


def _nullable(v: np.ndarray) -> pa.Array:
    return pa.array(v, mask=np.isnan(v), type=pa.float64())


def _propensities(slates: SlateBatch, r_i: np.ndarray, p_i: np.ndarray) -> dict[str, pa.Array]:
    """The exposures' propensity columns: NULL where the slate was not sampled."""
    p = slates.propensity
    if p is None:
        none = _nullable(np.full(len(r_i), np.nan))
        return {"pscore": none, "pscore_cascade": none, "pscore_slate": none}
    return {"pscore": _nullable(p.position[r_i, p_i]), "pscore_cascade": _nullable(p.cascade[r_i, p_i]),
            "pscore_slate": _nullable(p.slate[r_i])}


def _found_by(slates: SlateBatch, r_i: np.ndarray, p_i: np.ndarray) -> list:
    """Every channel that retrieved each shown item ('a,b'); the credited channel when not tracked."""
    src = slates.channel if slates.found_by is None else slates.found_by
    return src[r_i, p_i].tolist()

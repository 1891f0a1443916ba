"""HLLM model, loss and policy on tiny random HF configs (fast)."""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _tinydata import tiny_dataset, tiny_hf_config  # noqa: E402

from hllm.configuration_hllm import HLLMConfig  # noqa: E402
from hllm.modeling_hllm import HLLMModel  # noqa: E402
from hllm.policy import HLLMPolicy, HLLMPolicyConfig  # noqa: E402
from hllm.train import encode_items  # noqa: E402
from policies import registry  # noqa: E402
from policies.base import UserBatch  # noqa: E402
from policies.evaluate import evaluate  # noqa: E402


@pytest.fixture(scope="module")
def data():
    ds = tiny_dataset()
    return ds, ds.leave_one_out()


@pytest.fixture(scope="module")
def fitted(data):
    ds, split = data
    torch.set_num_threads(1)
    pol = registry.create("hllm", {"preset": "tiny", "stage2_epochs": 12})
    pol.fit(ds, split, progress=False)
    return pol


def tiny_model(**kw) -> HLLMModel:
    torch.manual_seed(0)
    return HLLMModel(tiny_hf_config(**kw)).eval()


def test_registered_with_tiny_config_and_extra_forbid():
    assert "hllm" in registry.names()
    assert HLLMPolicyConfig.tiny().preset == "tiny"
    from simulator.core.errors import ConfigError

    with pytest.raises(ConfigError, match="epochz"):
        registry.create("hllm", {"epochz": 3})


@pytest.mark.parametrize("field, value, message", [
    ("pooling", "cls", "HLLM config pooling='cls': Input should be 'item_token' or 'mean'"),
    ("proj", "MLP", "HLLM config proj='MLP': Input should be 'linear' or 'mlp'"),
    ("similarity", "cosine", "HLLM config similarity='cosine': Input should be 'cos' or 'dot'"),
    ("max_text_len", 2, "HLLM config max_text_len=2: Input should be greater than or equal to 4"),
    ("user_init", "bogus", "HLLM config user_init='bogus': Input should be 'scratch' or 'pretrained'"),
])
def test_hf_config_rejects_unknown_choices(field, value, message):
    from simulator.core.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        HLLMConfig(**{field: value})
    assert str(e.value) == message


def test_loss_decreases_and_beats_random(fitted, data):
    ds, split = data
    s1 = [h for h in fitted.history if h["stage"] == "hllm stage 1"]
    s2 = [h for h in fitted.history if h["stage"] == "hllm stage 2"]
    assert s1 and s2
    assert s2[-1]["loss"] < s2[0]["loss"] - 0.5
    assert s2[-1]["loss"] < math.log(s2[0]["unmasked_negatives"] + 1)  # below the uniform-guess loss
    assert all(h["unmasked_negatives"] >= 1 for h in fitted.history)  # collapse guard logged
    # history kept as candidates: the model must predict the next step of each user's walk
    ev = evaluate(fitted, split, which="test", ks=(10,), exclude_history=False).summary
    assert ev["hr@10"] > 2 * 10 / ds.n_items, ev  # random retrieval: 10 / n_items


def test_causal_mask_respected():
    m = tiny_model()
    x = torch.randn(2, 6, m.config.user_hidden)
    mask = torch.ones(2, 6, dtype=torch.bool)
    h1 = m.user_states(x, mask)
    x2 = x.clone()
    x2[:, 4:] = torch.randn(2, 2, m.config.user_hidden)  # change the future
    h2 = m.user_states(x2, mask)
    torch.testing.assert_close(h1[:, :4], h2[:, :4])
    assert not torch.allclose(h1[:, 4:], h2[:, 4:])


def test_same_id_negatives_excluded():
    m = tiny_model(false_negative_cos=1.0)
    D = m.config.user_hidden
    g = torch.Generator().manual_seed(0)
    pred, pos = torch.randn(3, D, generator=g), torch.randn(3, D, generator=g)
    pos_ids = torch.tensor([0, 1, 2])
    neg = torch.randn(5, D, generator=g)
    neg_ids = torch.tensor([10, 11, 12, 13, 14])
    # row i's pool = neg + the other rows' positives: what the shared pool gives after masking
    want = torch.stack([m.info_nce(pred[i:i + 1], pos[i:i + 1], pos_ids[i:i + 1],
                                   torch.cat([neg, pos[torch.arange(3) != i]]),
                                   torch.cat([neg_ids, pos_ids[torch.arange(3) != i]])).loss for i in range(3)]).mean()
    # shared pool holding every positive (in-batch negatives): each row's own id is masked
    out = m.info_nce(pred, pos, pos_ids, torch.cat([neg, pos]), torch.cat([neg_ids, pos_ids]))
    torch.testing.assert_close(out.loss, want)
    assert out.unmasked_negatives == 5 + 2


def test_false_negative_filter_and_collapse_guard():
    m = tiny_model(false_negative_cos=0.99)
    D = m.config.user_hidden
    pred, pos = torch.randn(2, D), torch.randn(2, D)
    neg = torch.cat([pos[:1] * 2.0, torch.randn(3, D)])  # a near-duplicate of positive 0 (cos = 1)
    out = m.info_nce(pred, pos, torch.tensor([0, 1]), neg, torch.tensor([5, 6, 7, 8]))
    assert out.unmasked_negatives == pytest.approx((3 + 4) / 2)
    same = pos[:1].repeat(4, 1)  # collapsed pool: every negative is a near-duplicate
    out = m.info_nce(pred[:1], pos[:1], torch.tensor([0]), same, torch.tensor([5, 6, 7, 8]))
    assert out.guarded_rows == 1.0 and out.unmasked_negatives == 4 and torch.isfinite(out.loss)


def test_temperature_init_and_floor():
    m = tiny_model()
    assert float(m.scale()) == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        m.logit_scale.fill_(10.0)
    assert float(m.scale()) == pytest.approx(100.0, rel=1e-5)  # temperature >= 0.01


@pytest.mark.parametrize("pooling", ["item_token", "mean"])
def test_item_embedding_ignores_padding_and_batch(pooling):
    m = tiny_model(pooling=pooling)
    tok = m.item_encoder.tokenize(["short", "a much longer item title with many words in it"])
    both = m.item_features(tok["input_ids"], tok["attention_mask"])
    one = m.item_features(tok["input_ids"][:1], tok["attention_mask"][:1])
    torch.testing.assert_close(both[:1], one, atol=1e-5, rtol=1e-5)
    assert both.shape == (2, m.item_encoder.hidden)


def test_embedding_cache_equals_recomputed(fitted, data):
    ds, _ = data
    pol = copy.deepcopy(fitted)  # add_items grows the tables: the shared fixture stays as fitted
    tok = pol.model.item_encoder.tokenize(list(ds.item_text))
    torch.testing.assert_close(encode_items(pol.model, tok, batch_size=7), pol.features.cpu())
    table = pol.item_table().copy()
    new_ids = pol.add_items(ds.item_text[:3])  # incremental: same text -> same embedding
    assert list(new_ids) == [ds.n_items, ds.n_items + 1, ds.n_items + 2]
    np.testing.assert_allclose(pol.item_table()[new_ids], table[:3], atol=1e-6)
    assert fitted.n_items == len(fitted.item_table()) == ds.n_items


def test_save_load_round_trip_identical(fitted, data, tmp_path):
    ds, split = data
    fitted.save(tmp_path / "m")
    again = HLLMPolicy.load(tmp_path / "m")
    batch = UserBatch.from_sequences(split.train, np.arange(10))
    np.testing.assert_array_equal(again.score_all(batch), fitted.score_all(batch))
    assert again.history == fitted.history


def test_a_user_without_history_gets_the_average_training_user(fitted, data, tmp_path):
    """An empty window embeds to zero: without the prior every item would score the same and the
    slate would be the first item ids."""
    ds, split = data
    users = np.flatnonzero(split.train.lengths > 0)
    trained = fitted.embed_users(UserBatch(users, [split.train.seq(int(u)) for u in users]))
    mean = trained.mean(0)
    expected = mean / np.linalg.norm(mean)  # cos similarity: unit length
    batch = UserBatch(np.array([0, 1]), [np.zeros(0, np.int64), split.train.seq(1)])
    emb = fitted.embed_users(batch)
    np.testing.assert_allclose(emb[0], expected, atol=1e-5)
    assert np.array_equal(emb[1], fitted.embed_users(UserBatch(np.array([1]), [split.train.seq(1)]))[0])
    scores = fitted.score_all(batch)[0]
    assert scores.std() > 1e-3 and not np.array_equal(np.argsort(-scores)[:5], np.arange(5))
    fitted.save(tmp_path / "m")
    np.testing.assert_array_equal(HLLMPolicy.load(tmp_path / "m").score_all(batch), fitted.score_all(batch))


def test_same_seed_same_model(data):
    ds, split = data
    a = registry.create("hllm", {"preset": "tiny", "stage1_epochs": 0}).fit(ds, split, progress=False)
    b = registry.create("hllm", {"preset": "tiny", "stage1_epochs": 0}).fit(ds, split, progress=False)
    batch = UserBatch.from_sequences(split.train, np.arange(5))
    np.testing.assert_array_equal(a.score_all(batch), b.score_all(batch))


def test_time_gaps_are_bucketed_as_documented():
    """A gap of g seconds since the previous item is bucket floor(log2(max(g, 1))), at most
    time_buckets; the first item and padding are bucket 0."""
    from hllm.modeling_hllm import time_gap_buckets

    gaps = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 1023.0, 1024.0, 2.0**40]
    ts = torch.tensor([[0.0, 0.0] + list(np.cumsum(gaps))], dtype=torch.float64) + 1.7e9  # epoch seconds
    mask = torch.tensor([[False] + [True] * (len(gaps) + 1)])  # a pad, then items
    want = [0, 0] + [0, 0, 0, 0, 1, 1, 2, 9, 10, 32]
    assert time_gap_buckets(ts, mask, 32).tolist() == [want]
    assert time_gap_buckets(ts, mask, 8).tolist() == [[min(b, 8) for b in want]]


def _same_items_other_gaps(split, users: int = 6) -> tuple[UserBatch, UserBatch]:
    """The same histories twice: their own times (an item a minute), and an item a day (same last time)."""
    a = UserBatch.from_sequences(split.train, np.arange(users))
    assert all((np.diff(t) == 60.0).all() for t in a.timestamps)
    days = [t[-1] - 86400.0 * np.arange(len(t))[::-1] for t in a.timestamps]
    return a, UserBatch(a.user_ids, a.histories, days)


def test_time_embedding_option_uses_the_gaps(data, fitted):
    ds, split = data
    pol = registry.create("hllm", {"preset": "tiny", "use_time": True, "stage1_epochs": 0}).fit(ds, split, progress=False)
    own, days = _same_items_other_gaps(split)
    assert not np.allclose(pol.embed_users(own), pol.embed_users(days), atol=1e-3)  # gaps change the user
    shifted = UserBatch(own.user_ids, own.histories, [t + 86400.0 for t in own.timestamps])
    np.testing.assert_allclose(pol.embed_users(shifted), pol.embed_users(own), atol=1e-6)  # only gaps matter
    np.testing.assert_array_equal(fitted.embed_users(own), fitted.embed_users(days))  # use_time off: ignored


def test_stage1_with_gradient_checkpointing_and_mean_pooling(data):
    ds, split = data
    pol = registry.create("hllm", {"preset": "tiny", "grad_checkpointing": True, "pooling": "mean",
                                   "stage2_epochs": 1}).fit(ds, split, progress=False)
    bb = pol.model.item_encoder.backbone
    assert getattr(bb, "is_activation_checkpointing", None) or bb.is_gradient_checkpointing
    assert [h["stage"] for h in pol.history][0] == "hllm stage 1"


def test_retriever_and_scorer_contracts(fitted, data):
    ds, split = data
    batch = UserBatch.from_sequences(split.train, np.arange(6))
    cand = fitted.retrieve(batch, 5, exclude=batch.histories)
    assert cand.item_ids.shape == (6, 5)
    assert not any(np.isin(cand.item_ids[b], batch.histories[b]).any() for b in range(6))
    sc = fitted.score(batch, np.array([[0, 1, -1]] * 6))
    assert sc.shape == (6, 3) and np.isneginf(sc[:, 2]).all()


def test_bad_item_text_is_a_clear_error(data):
    from simulator.core.errors import DataError

    ds, split = data
    bad = type(ds)(ds.name, ds.n_users, ds.n_items, ds.sequences, ds.item_text[:-1])
    with pytest.raises(DataError, match="item_text"):
        registry.create("hllm", {"preset": "tiny"}).fit(bad, split, progress=False)

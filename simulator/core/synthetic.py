"""A seeded synthetic world: catalog, users, logs, and the ground-truth user model.

- Items: a latent vector near one of ``n_topics`` topic centres, a quality (log-normal, so
  popularity has a long tail), a release time (``new_item_frac`` arrive during the log: cold
  start; ``arrivals`` after it, during the simulated window), and generated text whose words
  carry the topic (topic vocabularies + shared filler), so a text model can learn from it. With
  ``text_signal`` RHO the text also carries descriptive words whose latent meanings make up the
  share RHO of what distinguishes an item within its topic (offset and quality), and its topic
  words name the item's own topic with probability sqrt(RHO) (``World.text_topics``), so at RHO 0
  the text says nothing about the item and at RHO 1 everything.
- Users: tastes mixed from 1-3 topics, drifting linearly over time; sessions arrive as a
  Poisson process; each session is a run of consecutive choices.
- Choice: multinomial logit over a slate with a no-click option, position bias and fatigue
  (recently consumed items lose utility). The logs are drawn from this model over
  popularity-sampled candidate sets; the simulator asks the same model about slates that were
  never logged (``utility``, ``choose``, ``update``).
Everything is a deterministic function of :class:`WorldConfig` (vectorised numpy).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

DAY = 86400.0
_CONS = "bcdfghjklmnprstvz"
_VOW = "aeiou"


# descriptive words whose (seeded) latent meanings carry the text signal (``WorldConfig.text_signal``)
SIGNAL_VOCAB = tuple("""
amber ancient angry bitter blazing bold brave breezy bright brisk broken calm candid careful cheerful
chilly clever cloudy cold cosmic cozy crisp cruel curious daring dark dazzling deep delicate dense
distant dreamy dusty eager earthy eerie elegant electric empty endless epic exotic faded fierce fiery
fragile frantic fresh frosty gentle gloomy golden graceful grim gritty hazy heavy hidden hollow humble
icy idle intimate ironic jagged jolly lavish lazy lively lonely loud lucky lunar lush magnetic mellow
merry misty modern moody mystic narrow noble noisy nostalgic ornate pale patient peaceful playful
polished proud quiet radiant rapid raw restless rich rigid romantic rough royal rustic sacred salty
savage scarlet serene shadowy sharp shiny silent silky sleek slow smoky smooth soft solar solemn sour
spicy steady stormy strange sturdy subtle sunny sweet swift tender tense thorny tidal timid tranquil
tropical twisted urban vast velvet vibrant vivid wandering warm weary wicked wild windy wintry wise
witty wooden young zealous
""".split())


class WorldConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    n_users: int = Field(2000, ge=2)
    n_items: int = Field(1000, ge=10)
    n_topics: int = Field(20, ge=1)
    dim: int = Field(16, ge=2)
    seed: int = 0
    days: float = Field(60.0, gt=0, description="length of the logged period")
    sessions_per_user: float = Field(4.0, gt=0, description="mean sessions per user over the period")
    choices_per_session: float = Field(6.0, gt=0, description="mean consumed items per session")
    candidates_per_choice: int = Field(30, ge=2)
    new_item_frac: float = Field(0.2, ge=0, le=1, description="share of items released during the period")
    drift: float = Field(0.3, ge=0, description="taste drift over the whole period (in taste-norm units)")
    temperature: float = Field(1.0, gt=0)
    no_click_utility: float = Field(4.0, description="utility of not clicking (higher: fewer clicks)")
    position_decay: float = Field(0.3, ge=0, description="log-utility lost per slate position")
    fatigue: float = Field(2.0, ge=0, description="utility penalty for an item already consumed")
    scale: float = Field(1.0, gt=0, description="multiplies users and items (scale 20 gives ~1M+ interactions)")
    text_signal: float | None = Field(None, ge=0, le=1, description="share of the utility variance (topic and "
                                      "within-topic) that the item text explains (None: text carries only the topic)")
    signal_words: int = Field(8, ge=1, le=40, description="descriptive words per item that carry the text signal")
    arrivals: float = Field(0.0, ge=0, lt=1, description="share of the catalog released after the logged period, "
                            "during the simulated window (new items, with their text)")
    source: str | None = Field(None, description="semi-synthetic: the catalog dataset whose real items, texts and "
                               "users' histories the world is built on (SourcedWorld)")
    arrival_window_s: float = Field(3600.0, gt=0, description="the arrivals are released uniformly over this "
                                    "many seconds after the logged period")

    @property
    def users(self) -> int:
        return int(round(self.n_users * self.scale))

    @property
    def items(self) -> int:
        return int(round(self.n_items * self.scale))


def _words(rng: np.random.Generator, n: int, syllables: int) -> list[str]:
    out: set[str] = set()
    while len(out) < n:
        w = "".join(rng.choice(list(_CONS)) + rng.choice(list(_VOW)) for _ in range(syllables))
        out.add(w)
    return sorted(out)


class Consumption:
    """How many times each user consumed each item in the simulation (the world's fatigue): sorted
    keys ``user * n_items + item`` and their counts, so a batch of slates is looked up at once."""

    def __init__(self, n_items: int) -> None:
        self.n_items = n_items
        self.keys = np.zeros(0, np.int64)
        self.n = np.zeros(0, np.int64)

    def __bool__(self) -> bool:
        return len(self.keys) > 0

    def add(self, users: np.ndarray, items: np.ndarray) -> None:
        """One more consumption of ``items[i]`` by ``users[i]`` (items < 0: nothing consumed)."""
        ok = items >= 0
        new = users[ok] * self.n_items + items[ok]
        if len(new):
            self.keys, at = np.unique(np.concatenate([self.keys, new]), return_inverse=True)
            self.n = np.bincount(at, np.concatenate([self.n, np.ones(len(new), np.int64)])).astype(np.int64)

    def counts(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(B, K) times each user of ``users`` (B,) consumed each item of ``items`` (B, K); 0 at items < 0."""
        q = users[:, None] * self.n_items + np.clip(items, 0, None)
        at = np.minimum(np.searchsorted(self.keys, q), len(self.keys) - 1)
        return np.where((self.keys[at] == q) & (items >= 0), self.n[at], 0)


class World:
    """Ground truth of the synthetic world (see module doc)."""

    def __init__(self, cfg: WorldConfig | None = None) -> None:
        self.cfg = cfg = cfg or WorldConfig()
        rng = np.random.default_rng(cfg.seed)
        U, NI, T, D = cfg.users, cfg.items, cfg.n_topics, cfg.dim
        self.n_users, self.n_items = U, NI
        self.topic_centres = rng.normal(size=(T, D)) / np.sqrt(D) * 2.0
        self.item_topic = rng.integers(0, T, size=NI)
        self.item_vec = self.topic_centres[self.item_topic] + rng.normal(size=(NI, D)) / np.sqrt(D) * 0.6
        self.item_quality = rng.normal(0.0, 0.8, size=NI)
        released_late = rng.random(NI) < cfg.new_item_frac
        self.item_release = np.where(released_late, rng.uniform(0, cfg.days * DAY, NI), 0.0)
        mix = rng.dirichlet(np.full(T, 0.15), size=U)
        self.user_taste = mix @ self.topic_centres + rng.normal(size=(U, D)) / np.sqrt(D) * 0.3
        self.user_drift = rng.normal(size=(U, D)) / np.sqrt(D) * cfg.drift
        self.topic_names = _words(rng, T, 3)
        self.topic_vocab = [_words(rng, 12, 2) for _ in range(T)]
        self.filler = _words(rng, 40, 2)
        self._text_rng_seed = cfg.seed + 1
        self.item_words: np.ndarray | None = None  # (NI, signal_words) indices into SIGNAL_VOCAB
        if cfg.text_signal is not None:
            self._mix_text_signal(cfg.text_signal)
        self._release_arrivals()
        # simulator-time state: consumption counts for fatigue (sparse, per user)
        self._consumed = Consumption(NI)

    def _release_arrivals(self) -> None:
        """``arrivals`` of the items are released after the log, during the simulated window (own stream)."""
        cfg = self.cfg
        if cfg.arrivals > 0:
            arng = np.random.default_rng([cfg.seed, 29])
            new = arng.choice(self.n_items, int(round(cfg.arrivals * self.n_items)), replace=False)
            self.item_release[new] = cfg.days * DAY + arng.uniform(0, cfg.arrival_window_s, len(new))

    def _mix_text_signal(self, rho: float) -> None:
        """Each item's within-topic offset and quality become ``sqrt(rho) * text part + sqrt(1 - rho)
        * ID-only part``: the text part is the sum of the latent vectors of the item's descriptive
        words (written into its text), the ID-only part the offset and quality drawn above. Both parts
        have the same distribution, so ``rho`` is the share of the within-topic utility variance the
        text explains; the quality stays normal (popularity ``exp(quality)`` keeps its long tail)."""
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, 23])  # its own stream: the rest of the world is unchanged
        NI, D, m = cfg.items, cfg.dim, cfg.signal_words
        V = len(SIGNAL_VOCAB)
        word_vec = rng.normal(size=(V, D)) / np.sqrt(D) * 0.6  # like the ID offsets' scale
        word_q = rng.normal(0.0, 0.8, size=V)
        self.item_words = np.stack([rng.choice(V, m, replace=False) for _ in range(NI)])
        text_off = word_vec[self.item_words].sum(1) / np.sqrt(m)
        text_q = word_q[self.item_words].sum(1) / np.sqrt(m)
        centre = self.topic_centres[self.item_topic]
        id_off = self.item_vec - centre
        self.item_vec = centre + np.sqrt(rho) * text_off + np.sqrt(1.0 - rho) * id_off
        self.item_quality = np.sqrt(rho) * text_q + np.sqrt(1.0 - rho) * self.item_quality

    # ------------------------------------------------------------------ ground truth
    def taste(self, user_ids: np.ndarray, now: np.ndarray) -> np.ndarray:
        frac = np.clip(np.asarray(now, dtype=np.float64) / (self.cfg.days * DAY), 0.0, 2.0)
        return self.user_taste[user_ids] + frac[:, None] * self.user_drift[user_ids]  # (B, D)

    def utility(self, user_ids: np.ndarray, item_ids: np.ndarray, now: np.ndarray) -> np.ndarray:
        """Latent utility (B, K) of each slate item for each user at time ``now`` (B,)."""
        user_ids = np.asarray(user_ids, dtype=np.int64)
        items = np.asarray(item_ids, dtype=np.int64)
        safe = np.clip(items, 0, None)
        taste = self.taste(user_ids, now)  # (B, D)
        u = np.einsum("bd,bkd->bk", taste, self.item_vec[safe]) + self.item_quality[safe]
        if self._consumed:
            u -= self.cfg.fatigue * self._consumed.counts(user_ids, items)
        u[items < 0] = -np.inf
        unreleased = self.item_release[safe] > np.asarray(now, dtype=np.float64)[:, None]
        u[unreleased] = -np.inf
        return u

    def choice_probs(self, user_ids: np.ndarray, item_ids: np.ndarray, now: np.ndarray) -> np.ndarray:
        """MNL probabilities (B, K+1): slate positions then the no-click option (last column)."""
        u = self.utility(user_ids, item_ids, now) / self.cfg.temperature
        u = u - self.cfg.position_decay * np.arange(u.shape[1])[None, :]
        logits = np.concatenate([u, np.full((u.shape[0], 1), self.cfg.no_click_utility / self.cfg.temperature)], 1)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def choose(self, user_ids: np.ndarray, item_ids: np.ndarray, now: np.ndarray,
               rng: np.random.Generator) -> np.ndarray:
        """Index of the chosen slate position per user (B,), -1 for no click."""
        return self.sample(self.choice_probs(user_ids, item_ids, now), rng)

    @staticmethod
    def sample(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A draw from choice probabilities ``p`` (B, K+1): the slate position, -1 for no click."""
        cdf = np.cumsum(p, axis=1)
        r = rng.random((p.shape[0], 1)) * cdf[:, -1:]
        idx = (cdf < r).sum(axis=1)
        return np.where(idx >= p.shape[1] - 1, -1, idx).astype(np.int64)

    def update(self, user_ids: np.ndarray, item_ids: np.ndarray, now: np.ndarray | None = None) -> None:
        """Record consumption (fatigue); ``item_ids`` < 0 are ignored."""
        self._consumed.add(np.asarray(user_ids, np.int64), np.asarray(item_ids, np.int64))

    def reset_state(self) -> None:
        self._consumed = Consumption(self.n_items)

    # ------------------------------------------------------------------ catalog and logs
    def text_topics(self) -> np.ndarray:
        """The topic each item's text speaks of: its own, except in a ``text_signal`` world, where
        it is the own topic with probability sqrt(RHO) and a uniformly drawn one otherwise, so
        the text explains about the share RHO of the topic's part of the utility too (RHO 0: the
        text says nothing of the item; own stream, so the rest of the text is unchanged)."""
        rho = self.cfg.text_signal
        if rho is None or rho >= 1:
            return self.item_topic
        rng = np.random.default_rng([self.cfg.seed, 31])
        keep = rng.random(self.n_items) < np.sqrt(rho)
        return np.where(keep, self.item_topic, rng.integers(0, self.cfg.n_topics, self.n_items))

    def item_table(self) -> pd.DataFrame:
        rng = np.random.default_rng(self._text_rng_seed)
        NI = self.cfg.items
        text_topic = self.text_topics()
        titles, descs = [], []
        for i in range(NI):
            t = text_topic[i]
            vocab = self.topic_vocab[t]
            tw = [vocab[j] for j in rng.choice(len(vocab), 2, replace=False)]
            titles.append(" ".join(w.capitalize() for w in tw + [self.filler[rng.integers(len(self.filler))]]))
            words = [vocab[j] for j in rng.choice(len(vocab), 4)] + [self.filler[j] for j in rng.choice(len(self.filler), 4)]
            rng.shuffle(words)
            if self.item_words is not None:  # the descriptive words that carry the text signal
                words += [SIGNAL_VOCAB[j] for j in self.item_words[i]]
            descs.append(" ".join(words))
        genres = [self.topic_names[t] if rng.random() < 0.7 else None for t in text_topic]
        return pd.DataFrame({"item": [str(i) for i in range(NI)], "title": titles, "genres": genres,
                             "description": descs, "topic": self.item_topic.astype(np.int64),
                             "release_ts": self.item_release, "quality": self.item_quality})

    def logs(self) -> pd.DataFrame:
        """Logged interactions: users choose from popularity-sampled candidate sets (no-click
        draws are not logged)."""
        cfg = self.cfg
        rng = np.random.default_rng(cfg.seed + 2)
        U, NI = self.n_users, self.n_items
        n_sess = rng.poisson(cfg.sessions_per_user, size=U) + 1
        su = np.repeat(np.arange(U), n_sess)
        st = rng.uniform(0, cfg.days * DAY, size=len(su))
        n_ch = rng.geometric(1.0 / cfg.choices_per_session, size=len(su))
        eu = np.repeat(su, n_ch)
        step = np.arange(n_ch.sum()) - np.repeat(np.cumsum(n_ch) - n_ch, n_ch)
        et = np.repeat(st, n_ch) + step * 120.0 + rng.uniform(0, 60, size=len(eu))
        pop = np.exp(self.item_quality)
        cdf = np.cumsum(pop / pop.sum())
        chosen = np.empty(len(eu), dtype=np.int64)
        C = cfg.candidates_per_choice
        for s in range(0, len(eu), 50_000):  # chunks bound memory at (50k, C)
            sl = slice(s, s + 50_000)
            cand = np.minimum(np.searchsorted(cdf, rng.random((len(eu[sl]), C))), NI - 1)
            taste = self.taste(eu[sl], et[sl])
            ut = np.einsum("bd,bkd->bk", taste, self.item_vec[cand]) + self.item_quality[cand]
            ut[self.item_release[cand] > et[sl][:, None]] = -np.inf
            g = rng.gumbel(size=ut.shape)
            chosen[sl] = cand[np.arange(len(cand)), np.argmax(ut / cfg.temperature + g, axis=1)]
        ok = self.item_release[chosen] <= et
        df = pd.DataFrame({"user": eu[ok].astype(str), "item": chosen[ok].astype(str), "ts": et[ok],
                           "value": 1.0, "event": "consume"})
        df = df.sort_values(["ts"], kind="stable").reset_index(drop=True)
        df["seq"] = np.arange(len(df), dtype=np.int64)
        return df


# ---------------------------------------------------------------------- semi-synthetic worlds
# A semi-synthetic world on a real catalog (``sim data synth --from DATASET``).
#
# Items are the dataset's real items with their real texts; users are its real users. Each item's
# latent vector (and quality) is ``sqrt(RHO) * text part + sqrt(1 - RHO) * ID-only part``: the text
# part is a projection of an *independent* text representation of the item's real text (TF-IDF +
# truncated SVD with scikit-learn, never the HLLM item LLM, so the world does not favour the model
# under test), standardised to the ID part's scale, so RHO (``text_signal``, 0.5 when unset) is the
# share of the item-specific utility variance the text explains. Quality is normal, so popularity
# ``exp(quality)`` keeps a long tail. A user's taste is the mean latent vector of the items of the
# user's real history (plus noise), so tastes live in the item space and follow real co-consumption.
# The logs, choices and state are the synthetic world's (:class:`~simulator.core.synthetic.World`).

ITEM_SCALE = 2.0  # latent scale of an item vector's coordinates (x 1/sqrt(dim)), like the topic centres
QUALITY_SD = 0.8


def text_representation(texts: list[str], dim: int, seed: int) -> np.ndarray:
    """(N, dim) TF-IDF (words and word pairs) -> truncated SVD, each column standardised."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    X = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1).fit_transform(texts)
    k = max(1, min(dim, X.shape[1] - 1, X.shape[0] - 1))
    Z = TruncatedSVD(k, random_state=seed).fit_transform(X)
    if k < dim:  # a tiny vocabulary: the missing directions carry no text
        Z = np.pad(Z, ((0, 0), (0, dim - k)))
    sd = Z.std(0)
    return (Z - Z.mean(0)) / np.where(sd > 0, sd, 1.0)


class SourcedWorld(World):
    """The synthetic world's ground truth on a real catalog (see module doc)."""

    def __init__(self, cfg: WorldConfig, texts: list[str], histories: list[np.ndarray],
                 attrs: dict | None = None) -> None:
        self.cfg = cfg
        rng = np.random.default_rng([cfg.seed, 31])
        NI, U, D = len(texts), len(histories), cfg.dim
        self.n_users, self.n_items = U, NI
        rho = 0.5 if cfg.text_signal is None else cfg.text_signal
        text = text_representation(list(texts), D, cfg.seed)
        ids = rng.normal(size=(NI, D))
        self.item_vec = (np.sqrt(rho) * text + np.sqrt(1 - rho) * ids) * ITEM_SCALE / np.sqrt(D)
        q_text = text @ rng.normal(size=D)
        q_text = (q_text - q_text.mean()) / max(q_text.std(), 1e-9)
        self.item_quality = QUALITY_SD * (np.sqrt(rho) * q_text + np.sqrt(1 - rho) * rng.normal(size=NI))
        self.item_topic = np.zeros(NI, np.int64)
        self.attrs = {k: list(v) for k, v in (attrs or {}).items()
                      if k not in ("topic", "release_ts", "quality", "text", "item")}
        self.texts = list(texts)
        self.item_release = np.zeros(NI)
        self._release_arrivals()
        mean = np.stack([self.item_vec[h].mean(0) if len(h) else np.zeros(D) for h in histories])
        mean /= max(float(np.sqrt((mean ** 2).sum(1)).mean()), 1e-9)  # unit mean norm, then a taste's scale
        self.user_taste = mean * ITEM_SCALE + rng.normal(size=(U, D)) / np.sqrt(D) * 0.3
        self.user_drift = rng.normal(size=(U, D)) / np.sqrt(D) * cfg.drift
        self.item_words = None
        self._consumed = Consumption(NI)

    @classmethod
    def from_catalog(cls, catalog, cfg: WorldConfig) -> SourcedWorld:
        ds = catalog.load_dataset(cfg.source)
        hist = [ds.sequences.seq(u) for u in range(ds.n_users)]
        return cls(cfg, [str(t) for t in ds.item_text], hist, ds.item_attrs)

    def item_table(self) -> pd.DataFrame:
        """The real items with their attributes and texts; world ids '0'..'N-1' in the source's id order."""
        return pd.DataFrame({"item": [str(i) for i in range(self.n_items)], **self.attrs, "text": self.texts,
                             "topic": self.item_topic, "release_ts": self.item_release,
                             "quality": self.item_quality})


def write_world(catalog, name: str, cfg: WorldConfig, replace: bool = False) -> object:
    """Generate the world's catalog and logs and write them as dataset ``name`` (an existing
    ``name`` only with ``replace``)."""
    catalog.check_new_name(name, replace)
    w = make_world(catalog, cfg)
    items = w.item_table()
    from simulator.core.preprocess import item_text_sql

    con = catalog.con
    con.register("_world_items", items)
    text = "" if "text" in items else f", {item_text_sql(['title', 'genres', 'description'])} AS text"
    items_txt = con.sql(f"SELECT *{text} FROM _world_items")
    logs = w.logs()
    users = pd.DataFrame({"user": [str(u) for u in range(w.n_users)]})
    info = catalog.write_dataset(name, interactions=logs, items=items_txt.df(), users=users, source="synthetic",
                                 format="synthetic", meta={"world": json.loads(cfg.model_dump_json())},
                                 keep_all_users=True, replace=replace)
    con.unregister("_world_items")
    return info


def world_for(catalog, name: str) -> World:
    """Rebuild the ground-truth World of a synthetic dataset from its stored config."""
    info = catalog.info(name)
    if "world" not in info.meta:
        from simulator.core.errors import SimError

        raise SimError(f"dataset {name!r} is not a synthetic world (no ground-truth user model)")
    return make_world(catalog, WorldConfig(**info.meta["world"]))


def make_world(catalog, cfg: WorldConfig) -> World:
    """The world of ``cfg``: generated, or semi-synthetic on the catalog dataset ``cfg.source``."""
    if cfg.source is None:
        return World(cfg)
    return SourcedWorld.from_catalog(catalog, cfg)

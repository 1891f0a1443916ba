"""A semi-synthetic world on a real catalog (``sim data synth --from DATASET``).

Items are the dataset's real items with their real texts; users are its real users. Each item's
latent vector (and quality) is ``sqrt(RHO) * text part + sqrt(1 - RHO) * ID-only part``: the text
part is a projection of an *independent* text representation of the item's real text (TF-IDF +
truncated SVD with scikit-learn, never the HLLM item LLM, so the world does not favour the model
under test), standardised to the ID part's scale, so RHO (``text_signal``, 0.5 when unset) is the
share of the item-specific utility variance the text explains. Quality is normal, so popularity
``exp(quality)`` keeps a long tail. A user's taste is the mean latent vector of the items of the
user's real history (plus noise), so tastes live in the item space and follow real co-consumption.
The logs, choices and state are the synthetic world's (:class:`~simulator.core.synthetic.World`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from simulator.core.synthetic import DAY, World, WorldConfig

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
        self._consumed: dict[int, dict[int, int]] = {}

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


__all__ = ["DAY", "SourcedWorld", "text_representation"]

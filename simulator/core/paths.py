"""Where real datasets live on this machine (never inside the repository)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def find_ml100k() -> Path | None:
    """Locate MovieLens-100K in RecBole atomic format, or None.

    Looks at ``$HLLM_SIM_ML100K``, then ``../shared/data/ml-100k`` beside the checkout, then the
    copy shipped in the ``recbole`` wheel (``pip install --no-deps recbole==1.2.1``).
    """
    cands: list[Path] = []
    if os.environ.get("HLLM_SIM_ML100K"):
        cands.append(Path(os.environ["HLLM_SIM_ML100K"]))
    cands.append(REPO_ROOT.parent / "shared" / "data" / "ml-100k")
    cands.append(Path.cwd().parent / "shared" / "data" / "ml-100k")
    spec = importlib.util.find_spec("recbole")
    if spec is not None and spec.submodule_search_locations:
        cands.append(Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / "ml-100k")
    for c in cands:
        if (c / "ml-100k.inter").is_file():
            return c
    return None

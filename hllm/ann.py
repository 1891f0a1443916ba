"""ANN retrieval lives in :mod:`policies.ann` (ID models and HLLM share it); re-exported here for
the HLLM modules and configs that name it."""

from policies.ann import (  # noqa: F401
    ANN_MIN_ITEMS,
    BUILD_FIELDS,
    INDEX_KINDS,
    RetrievalConfig,
    TableIndex,
    build_index,
    coded,
    recall_at_k,
    rerank,
    retrieval_config,
    search,
    set_search_params,
)

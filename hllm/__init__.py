"""HLLM (Chen et al., 2024): hierarchical item LLM + user LLM, trained on CPU, served from tables.

Public API
- ``hllm.policy.HLLMPolicy`` / ``HLLMPolicyConfig``: registered as ``"hllm"`` (retriever + scorer);
  ``registry.create("hllm", {"preset": "fast"})``; ``fit(dataset, split)``, ``save``, ``load``,
  ``score_all``, ``add_items(texts)`` (cold start), ``embed_texts``, ``embed_users``, ``item_table``.
- ``hllm.recipe``: the training recipe (``HLLMRecipe``), ``PRESETS`` (fast = the policy's default,
  quick = `sim run`'s budget, paper = paper-faithful two-stage recipe, tiny = tests) and
  ``HLLMPolicyConfig`` (architecture + recipe, one default each).
- ``hllm.configuration_hllm.HLLMConfig`` (architecture only) and ``hllm.modeling_hllm.HLLMModel``
  (HF PreTrainedModel).
- ``hllm.user_state``: serving the user LLM per user (batch-independent floats), a bounded
  user-state cache and incremental extension by appended items (``UserStateConfig``; set with
  ``HLLMPolicy.set_serving``).
- ``hllm.ranking``: early / late fusion ranking heads (``fit_ranker``).
- ``hllm.serving``: item table (npy memmap + parquet, DuckDB mirror), ``append_items``, exact
  batched ``topk_inner_product`` (the reference), ``search_table`` (exact or ANN), the table's
  persisted ANN index (``build_table_index``, ``load_table_index``, ``ensure_table_index``).
- ``hllm.ann``: ``RetrievalConfig`` (exact below ``ann_min_items``, faiss IVF / HNSW above) and
  ``search`` with the exact path's contract; ``HLLMPolicy.retrieve`` uses it for large catalogs.
- ``simulator.commands.hllm.app``: ``sim hllm train | embed-items | export | presets``.
"""

"""The HLLM recipe presets: named overrides of ``hllm.recipe``'s defaults, in a module that imports
nothing heavy (``sim hllm presets`` prints them without loading torch)."""

from __future__ import annotations

from typing import Any

_FAST = dict(pooling="mean", prompt="", stage1_epochs=0, batch_size=64)
PRESETS: dict[str, dict[str, Any]] = {  # named overrides of the defaults above (none restates one)
    "fast": _FAST,
    "quick": {**_FAST, "stage2_epochs": 10, "patience": 2},  # the ID models' quick budget (sim run)
    # the official stage 1: the item LLM fine-tuned at 1e-4 (item token + head at lr) for 5 epochs
    "paper": dict(stage1_epochs=5, item_lr=1e-4),
    "tiny": dict(item_llm="tiny", prompt="", max_text_len=16, user_hidden=32, user_layers=1, user_heads=2,
                 proj_hidden=32, max_len=8, stage1_epochs=1, stage1_max_len=5, stage1_negatives=16,
                 stage2_epochs=2, n_negatives=16, batch_size=16),
}

# what each preset is, in the words tables and reports use (one place)
PRESET_LABELS: dict[str, str] = {
    "fast": "frozen MiniLM sentence encoder + MLP adapter + user transformer (not the paper's fine-tuned item LLM)",
    "quick": "preset fast on the `sim run` default budget (at most 10 stage-2 epochs, patience 2, as the ID models)",
    "paper": "the paper's recipe on CPU: MiniLM item LLM fine-tuned end to end with the user LLM (stage 1), then stage 2",
    "tiny": "tests only: tiny random item LLM",
}

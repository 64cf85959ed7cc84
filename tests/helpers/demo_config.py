"""The demo model's config.json numbers, as the planner reads them."""
from __future__ import annotations

DEMO = {"model_type": "llama", "hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 259, "tie_word_embeddings": False,
        "max_position_embeddings": 512}

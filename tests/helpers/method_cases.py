"""Option sets the model cannot take, one list for every place that must refuse them.

Each case is (method, method_config, seq_len, field, says): `field` is the
option the refusal names, `says` a part of its message. The model is the demo
architecture (`tests.helpers.demo_config.DEMO`: hidden size 256, 4 layers,
512 positions). The list includes the cases where submission and the planner
once disagreed: prefix virtual tokens past the model's positions, module names
checked against the architecture, the GaLore rank.
"""
from __future__ import annotations

from typing import Any, NamedTuple


class BadOptions(NamedTuple):
    method: str
    options: dict[str, Any]
    seq_len: int
    field: str | None  # None: the options as a whole (a cross-field check)
    says: str


BAD_OPTIONS: list[BadOptions] = [
    BadOptions("full", {"optimizer": "lion"}, 128, "optimizer", "adafactor"),
    BadOptions("freeze", {"trainable_layers": 9}, 128, "trainable_layers", "4 decoder layers"),
    BadOptions("freeze", {"trainable_layers": 0}, 128, "trainable_layers", "greater than or equal to 1"),
    BadOptions("lora", {"r": 0}, 128, "r", "greater than or equal to 1"),
    BadOptions("lora", {"dropout": 1.5}, 128, "dropout", "less than 1"),
    BadOptions("lora", {"target_modules": "everything"}, 128, "target_modules", "unknown preset"),
    BadOptions("lora", {"target_modules": ["q_proj", "qkv_proj"]}, 128, "target_modules", "no module named qkv_proj"),
    BadOptions("dora", {"target_modules": ["wq"]}, 128, "target_modules", "no module named wq"),
    BadOptions("qlora", {"quant_type": "int3"}, 128, "quant_type", "nf4"),
    BadOptions("qlora", {"optimizer": "sgd"}, 128, "optimizer", "paged_adamw_8bit"),
    BadOptions("qlora", {"target_modules": ["gate_up_proj"]}, 128, "target_modules", "no module named gate_up_proj"),
    BadOptions("galore", {"rank": 1024}, 128, "rank", "hidden size 256"),
    BadOptions("galore", {"target_modules": ["embed_tokens"]}, 128, "target_modules", "no module named embed_tokens"),
    BadOptions("adapters", {"reduction_factor": 512}, 128, "reduction_factor", "hidden size 256"),
    BadOptions("adapters", {"config": "lora"}, 128, "config", "houlsby"),
    BadOptions("prefix", {"num_virtual_tokens": 64}, 500, "num_virtual_tokens", "limit of 512"),
    BadOptions("prefix", {"num_virtual_tokens": 0}, 128, "num_virtual_tokens", "greater than or equal to 1"),
    BadOptions("prompt", {"num_virtual_tokens": 100}, 480, "num_virtual_tokens", "at most 32 virtual tokens"),
    BadOptions("prompt", {"init": "text"}, 128, None, "init_text is required"),
    BadOptions("lora", {"rank": 8}, 128, "rank", "Extra inputs are not permitted"),
]

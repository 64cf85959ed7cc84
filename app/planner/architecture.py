"""A model's architecture by its numbers, read from a Hugging Face `config.json`.

Why a model of our own rather than `transformers.AutoConfig`: the instant
estimator must not import torch or transformers (it answers as the user
types), and it needs only a dozen numbers. Reading them here also gives one
place that says which field is missing or wrong, by its config.json name.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from app.field_problem import FieldProblem
from app.planner.moe import MoeShape, parse_moe

# Model types whose decoder layer is Llama's (RMSNorm, SwiGLU MLP with gate/up/down,
# separate q/k/v/o projections). Qwen2 adds q/k/v biases; Mistral a sliding window.
LLAMA_LIKE = frozenset({"llama", "mistral", "qwen2", "qwen3", "olmo2", "granite"})
Family = Literal["llama", "phi3", "gemma2"]

# config.json spellings, first match wins (GPT-2-style names as fallbacks).
ALIASES: dict[str, tuple[str, ...]] = {
    "hidden_size": ("hidden_size", "n_embd", "d_model"),
    "num_layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "num_heads": ("num_attention_heads", "n_head"),
    "intermediate_size": ("intermediate_size", "n_inner", "ffn_dim"),
    "vocab_size": ("vocab_size",),
    "max_positions": ("max_position_embeddings", "n_positions", "max_sequence_length"),
}
# Far above any real model; they keep a hostile config from making the estimator loop for ever.
LIMITS: dict[str, int] = {"num_hidden_layers": 4096, "n_layer": 4096, "num_layers": 4096}
DEFAULT_LIMIT = 1 << 24
# Defaults of the transformers config classes when config.json leaves the field out.
TIED_BY_DEFAULT: dict[str, bool] = {"gemma2": True}
# Per-head RMSNorms on q and k (head_dim weights each, before RoPE): Qwen3, Qwen3-MoE, Gemma 3.
QK_NORM = frozenset({"qwen3", "qwen3_moe", "gemma3_text"})
# Projections a config's attention_bias puts a bias on (gpt-oss: o_proj too; Qwen2: q/k/v always).
BIASED = {"gpt_oss": ("q_proj", "k_proj", "v_proj", "o_proj")}
# Keys the planner never prices: it plans every weight in the training dtype (bf16 or fp32).
NOT_PLANNED = ("quantization_config",)


class ArchitectureError(FieldProblem):
    """A config.json the estimator cannot use; `field` is the config.json key to fix."""


class Architecture(BaseModel):
    """The numbers the estimator needs, plus the raw config the tracer rebuilds the model from."""

    model_config = ConfigDict(frozen=True, protected_namespaces=())

    model_type: str
    family: Family
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_embeddings: bool
    max_positions: int | None
    attention_bias: bool = False
    qk_norm: bool = False  # q_norm/k_norm over head_dim (Qwen3, Gemma 3)
    attention_sinks: bool = False  # gpt-oss: one learned sink logit per head and layer
    moe: MoeShape | None = None  # sparse MoE block in place of the dense MLP (app.planner.moe)
    config: dict[str, Any] = {}

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def norms_per_layer(self) -> int:
        return 4 if self.family == "gemma2" or self.model_type == "gemma3_text" else 2  # pre/post, both blocks

    @property
    def biased_modules(self) -> tuple[str, ...]:
        """The Linear modules with a bias (`attention_bias`)."""
        if not self.attention_bias:
            return ()
        return BIASED.get(self.model_type, ("q_proj", "k_proj", "v_proj"))

    @property
    def mlp_width(self) -> int:
        """The MLP's width per token: f, or k·f over the k experts a token is routed to."""
        return self.moe.top_k * self.moe.intermediate if self.moe else self.intermediate_size

    def expert_modules(self) -> tuple[str, ...]:
        """MLP names that are fused 3-D expert parameters here, not Linear modules (MoE only)."""
        return ("gate_proj", "up_proj", "down_proj", "gate_up_proj") if self.moe else ()

    def linear_modules(self) -> dict[str, tuple[int, int]]:
        """Each decoder layer's Linear modules by name, as (in_features, out_features).

        An MoE layer's experts are 3-D parameters and its router a bare weight: only the attention
        projections are Linear modules (what peft's target_modules can wrap, what 4-bit replaces)."""
        h, f = self.hidden_size, self.intermediate_size
        if self.moe is not None:
            return {"q_proj": (h, self.q_dim), "k_proj": (h, self.kv_dim), "v_proj": (h, self.kv_dim),
                    "o_proj": (self.q_dim, h)}
        if self.family == "phi3":
            return {
                "qkv_proj": (h, self.q_dim + 2 * self.kv_dim),
                "o_proj": (self.q_dim, h),
                "gate_up_proj": (h, 2 * f),
                "down_proj": (f, h),
            }
        return {
            "q_proj": (h, self.q_dim), "k_proj": (h, self.kv_dim), "v_proj": (h, self.kv_dim),
            "o_proj": (self.q_dim, h), "gate_proj": (h, f), "up_proj": (h, f), "down_proj": (f, h),
        }

    def hf_config(self) -> dict[str, Any]:
        """A config.json dict transformers can build the model from (the tracer's input)."""
        config = {k: v for k, v in self.config.items() if k not in NOT_PLANNED}
        return {**config, "model_type": self.model_type}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Architecture":
        """Read a config.json dict; `ArchitectureError` names the first unusable field."""
        if not isinstance(config, dict):
            raise ArchitectureError("config", "must be a config.json object")
        model_type = config.get("model_type")
        if not isinstance(model_type, str) or not model_type:
            raise ArchitectureError("model_type", "is required (e.g. 'llama', 'qwen2', 'mistral', 'gemma2', 'phi3')")
        family: Family = "phi3" if model_type == "phi3" else "gemma2" if model_type == "gemma2" else "llama"
        values = {name: _positive_int(config, keys) for name, keys in ALIASES.items() if name != "max_positions"}
        heads = values["num_heads"]
        kv_heads = _optional_int(config, "num_key_value_heads", default=heads)
        if heads % kv_heads:
            raise ArchitectureError("num_key_value_heads", f"{kv_heads} does not divide num_attention_heads={heads}")
        head_dim = _optional_int(config, "head_dim", default=0)
        if not head_dim:
            if values["hidden_size"] % heads:
                raise ArchitectureError(
                    "head_dim", "is required when hidden_size is not a multiple of num_attention_heads")
            head_dim = values["hidden_size"] // heads
        max_positions = None
        for key in ALIASES["max_positions"]:
            if key in config:
                max_positions = _positive_int(config, (key,))
                break
        tied = config.get("tie_word_embeddings", TIED_BY_DEFAULT.get(model_type, False))
        if not isinstance(tied, bool):
            raise ArchitectureError("tie_word_embeddings", "must be true or false")
        bias = config.get("attention_bias")
        bias = model_type in {"qwen2", "gpt_oss"} if bias is None else bias
        if not isinstance(bias, bool):
            raise ArchitectureError("attention_bias", "must be true or false")
        return cls(
            model_type=model_type, family=family, num_kv_heads=kv_heads, head_dim=head_dim,
            tie_embeddings=tied, max_positions=max_positions, attention_bias=bias, config=dict(config),
            qk_norm=model_type in QK_NORM, attention_sinks=model_type == "gpt_oss",
            moe=parse_moe(config, model_type), **values,
        )


def _positive_int(config: dict[str, Any], keys: tuple[str, ...]) -> int:
    for key in keys:
        if key in config:
            value = config[key]
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ArchitectureError(key, f"must be a positive integer, got {value!r}")
            if value > LIMITS.get(key, DEFAULT_LIMIT):
                raise ArchitectureError(key, f"{value} is beyond any model the planner can estimate")
            return value
    raise ArchitectureError(keys[0], "is missing from config.json")


def _optional_int(config: dict[str, Any], key: str, default: int) -> int:
    value = config.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value > DEFAULT_LIMIT:
        raise ArchitectureError(key, f"must be a positive integer (at most {DEFAULT_LIMIT}), got {value!r}")
    return value

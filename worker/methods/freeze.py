"""Freeze: only the last N decoder layers train (plus, optionally, the head and embeddings).

Everything is frozen first, then the last `trainable_layers` decoder layers
and the final norm (which sits right after them) are unfrozen, then the LM
head and the input embeddings if asked. With tied word embeddings the head
and the embeddings are one tensor: if either is asked to train, it trains,
and so both change; the parameter count counts it once.

With gradient checkpointing, transformers makes the input embeddings' output
require a gradient (`enable_input_require_grads`, for reentrant checkpointing
and adapters behind frozen embeddings). Freeze needs none of that: below the
first trainable layer nothing needs a gradient, and non-reentrant
checkpointing (the only kind the trainer uses) recomputes a layer only when
its backward runs. Left in place, that hook made every frozen layer run its
backward (input gradients through 30 of Llama-3.1-8B's 32 layers: 2.2x the
FLOPs the planner counts, issue 14 finding 2), so `build` removes it.
A trainable embedding still gets its gradient: its weight requires one.

The artifact is a full model folder, as for `full`.
"""
from __future__ import annotations

import torch
from transformers import PreTrainedModel

from app.methods.freeze import FreezeOptions

from worker.methods.full import save  # noqa: F401 - the same model folder as `full`


def build(model: PreTrainedModel, options: FreezeOptions) -> torch.nn.Module:
    n_layers = options.trainable_layers
    decoder = model.get_decoder()
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__} has no list of decoder `layers`; freeze cannot pick the last ones")
    if n_layers > len(layers):
        raise ValueError(
            f"trainable_layers={n_layers} but the model has only {len(layers)} decoder layers; "
            f"pick at most {len(layers)} (or use the full method)"
        )
    model.requires_grad_(False)
    if hasattr(model, "disable_input_require_grads"):
        model.disable_input_require_grads()  # no backward below the first trainable layer (docstring)
    for layer in layers[-n_layers:]:
        layer.requires_grad_(True)
    norm = getattr(decoder, "norm", None)
    if norm is not None:
        norm.requires_grad_(True)
    if options.train_lm_head:
        model.get_output_embeddings().requires_grad_(True)
    if options.train_embeddings:
        model.get_input_embeddings().requires_grad_(True)
    return model

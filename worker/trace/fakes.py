"""What makes a step on fake tensors allocate what a real GPU step allocates (worker.trace.step uses them).

Fake tensors carry shapes, not values: transformers cannot tell from them
that a batch is unpadded, a boolean pick cannot know its size, and the CPU's
dropout is not the GPU's. Each context manager here supplies what the real
run would have decided from real values, and nothing more.
"""
from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from worker.train import loss as worker_loss
from worker.train.data import IGNORE_INDEX, Batch
from worker.trace.memory import LiveBytes

aten = torch.ops.aten


@contextlib.contextmanager
def _patched(owner: Any, **values: Any) -> Iterator[None]:
    """`owner`'s attributes set to `values` for the block, then put back whatever happens."""
    originals = {name: getattr(owner, name) for name in values}
    for name, value in values.items():
        setattr(owner, name, value)
    try:
        yield
    finally:
        for name, value in originals.items():
            setattr(owner, name, value)


@contextlib.contextmanager
def _unpacked_batches() -> Iterator[None]:
    """Tell transformers the batch is neither packed nor padded, as it concludes from real values.

    On fake tensors it cannot read the position ids, assumes packing, and
    materialises an s×s mask per layer (which also expands k/v to every head);
    nor can it read the all-ones attention mask the worker's loss passes, so it
    builds a (batch, 1, s, s) mask and hands SDPA an explicit mask instead of
    `is_causal`: memory a real run of the same unpadded batch never allocates.
    The planner's worst-case batch pads nothing (`worst_case_batch`).
    """
    from torch._subclasses.fake_tensor import is_fake
    from transformers import masking_utils

    original_skip = masking_utils._ignore_causal_mask_sdpa

    def skip(padding_mask: torch.Tensor | None, *args: Any, **kwargs: Any) -> bool:
        if padding_mask is not None and is_fake(padding_mask):
            padding_mask = None  # all ones: the trace's batches have no padding
        return original_skip(padding_mask, *args, **kwargs)

    with _patched(masking_utils, find_packed_sequence_indices=lambda position_ids: None,
                  _ignore_causal_mask_sdpa=skip):
        yield


@contextlib.contextmanager
def _fused_dropout() -> Iterator[None]:
    """Route `F.dropout` to `native_dropout`, as CUDA does (bool mask, not float noise)."""
    def dropout(input: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> torch.Tensor:
        if not training or p == 0.0:
            return input
        return torch.native_dropout(input, p, True)[0]

    with _patched(F, dropout=dropout):
        yield


class _GroupedMmAnyDtype(TorchDispatchMode):
    """Give `aten._grouped_mm` in float32 its output shape, as the CPU and CUDA kernels compute it.

    Why: MoE experts in fp32 (mixed precision, fp32, QLoRA's fp32-cast experts) run transformers'
    default `grouped_mm` experts in fp32. The kernels take fp32 (a real CPU call here does), but the
    meta function fake tensors use still checks the CUDA fast path's bf16-only rule and refuses. The
    output is what the kernel returns: (S, N) for (S, K) × (E, K, N), (E, K, N) for the weight
    gradient's (K, S) × (S, N), in the inputs' dtype; autograd then calls this op for the backward too.
    """

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is aten._grouped_mm.default and args[0].dtype != torch.bfloat16:
            a, b = args[0], args[1]
            offs = args[2] if len(args) > 2 else kwargs.get("offs")
            dtype = kwargs.get("out_dtype") or a.dtype
            if a.dim() == 2 and b.dim() == 2:
                shape: tuple[int, ...] = (offs.shape[0], a.shape[0], b.shape[1])
            elif a.dim() == 2:
                shape = (a.shape[0], b.shape[-1])
            else:
                shape = (*a.shape[:-1], b.shape[-1])
            return torch.empty(shape, dtype=dtype, device=a.device)
        return func(*args, **kwargs)


def _storage_key(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage()._cdata


class _AllTargets(TorchDispatchMode):
    """Resolve the loss's boolean picks (`hidden[picked]`, `targets[picked]`) on fake tensors.

    Why: `summed_loss` keeps the positions whose label is not IGNORE_INDEX with
    a boolean mask; indexing by a mask needs its values (`nonzero`), which a
    fake tensor does not have, so FakeTensorMode refuses. Here the values are
    known: the trace made the labels, every one a target. A mask made by
    `labels[...] != IGNORE_INDEX` from those labels is therefore all true, and
    an index by it (forward, and the `index_put` of its backward) is replaced
    by the index by its `nonzero()` columns, as ATen itself does: same output
    shapes, and the (positions × dims) int64 `nonzero` result is allocated as a
    real run allocates it. Any other mask is left alone (and would still fail
    loudly rather than be guessed).
    """

    INDEXING = frozenset({aten.index.Tensor, aten.index_put.default, aten.index_put_.default,
                          aten._index_put_impl_.default})

    def __init__(self, labels: torch.Tensor) -> None:
        super().__init__()
        self.labels = _storage_key(labels)
        self.all_true: set[int] = set()

    def _forget(self, key: int) -> None:
        self.all_true.discard(key)

    def _resolved(self, indices: list[torch.Tensor | None]) -> list[torch.Tensor | None] | None:
        out: list[torch.Tensor | None] = []
        changed = False
        for index in indices:
            if index is not None and index.dtype == torch.bool and _storage_key(index) in self.all_true:
                nonzero = torch.empty((index.numel(), index.dim()), dtype=torch.long, device=index.device)
                out += list(nonzero.unbind(1))
                changed = True
            else:
                out.append(index)
        return out if changed else None

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in self.INDEXING:
            resolved = self._resolved(list(args[1]))
            if resolved is not None:
                args = (args[0], resolved, *args[2:])
            return func(*args, **kwargs)
        out = func(*args, **kwargs)
        if func is aten.ne.Scalar and args[1] == IGNORE_INDEX and _storage_key(args[0]) == self.labels:
            key = _storage_key(out)
            self.all_true.add(key)
            weakref.finalize(out.untyped_storage(), self._forget, key)
        return out


@contextlib.contextmanager
def _loss_category(live: LiveBytes) -> Iterator[None]:
    """File the targets-only loss's tensors as "logits", as the output layer's hook does on the full path.

    Why a wrapper: `linear_cross_entropy` multiplies by the output layer's
    weight with `F.linear` inside its autograd Function, so the head module
    (whose forward pre-hook switches the category on the full-logits path) is
    never called. Everything it makes (a chunk's fp32 logits, the input
    gradient, the weight gradient when the head trains) is loss memory, until
    the gradient reaches the decoder's output again.
    """
    original = worker_loss.linear_cross_entropy

    def tracked(hidden: torch.Tensor, head: torch.nn.Linear, targets: torch.Tensor,
                chunk: int = worker_loss.CHUNK) -> torch.Tensor:
        live.category = "logits"
        if hidden.requires_grad:
            hidden.register_hook(lambda g: setattr(live, "category", "activations"))
        return original(hidden, head, targets, chunk)

    with _patched(worker_loss, linear_cross_entropy=tracked):
        yield


def worst_case_batch(ids: torch.Tensor) -> Batch:
    """The planner's micro-batch: batch_size × seq_len real tokens, every position after the first a target.

    Why every position: the loss's memory grows with its targets; a job's
    batch has at most this many (grouped batches pad to their longest row, a
    padding-free one packs at most as many tokens).
    """
    b, s = ids.shape
    return Batch(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids.clone(),
                 n_tokens=b * s, n_targets=b * (s - 1))

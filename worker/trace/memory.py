"""Count live tensor bytes during a fake training step, by category and phase.

Why a dispatch mode and not `torch.cuda.max_memory_allocated`: the trace runs
under `FakeTensorMode` on the CPU, where no allocator exists. Every operator
output passes through `__torch_dispatch__`; we record its untyped storage once
(views share storage, so they are not counted twice) and subtract it in a
`weakref.finalize` callback when the storage dies. The running sum is what a
caching allocator would hold as "allocated", without rounding.

Each storage is filed under the category current when it was made (weights,
optimizer, activations, logits...); a few are moved later (a gradient once
autograd has accumulated it, an optimiser state once it is known to be paged).
At every new peak the per-category totals are copied, so the answer can say
what the peak was made of.

FLOPs are counted here too, with `torch.utils.flop_counter`'s formulas, rather
than by stacking `FlopCounterMode`: its module tracker registers multi-grad
hooks whose closures form reference cycles with autograd nodes, which keeps
saved tensors alive until the garbage collector runs and inflates the
backward peak of a checkpointed model by whole layers. `torch.distributed._tools.mem_tracker.MemTracker`
is not used: it hooks every parameter and fails on frozen ones (every PEFT
model).
"""
from __future__ import annotations

import weakref
from collections import defaultdict
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import addmm_flop, flop_registry, sdpa_backward_flop, sdpa_flop, shape_wrapper

aten = torch.ops.aten


@shape_wrapper
def grouped_mm_flop(a_shape: Any, b_shape: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """FLOPs of `aten._grouped_mm`, the matmul of transformers' default MoE experts (`grouped_mm`).

    Each row of a 2-D operand belongs to one group (`offs`), so a group-split product costs what one
    dense product of the same rows costs: 2 × (output elements) × (contracted size). The three
    layouts a training step runs: (S, K) × (E, K, N) -> (S, N), the forward and the input gradient;
    (K, S) × (S, N) -> (E, K, N), the weight gradient, whose S rows are split among the E groups
    (so one group's K × N, not E of them); (E, M, K) × (E, K, N), a plain batched product.
    """
    contracted = a_shape[-1]
    out_numel = 1
    for size in out_shape:
        out_numel *= size
    if len(a_shape) == 2 and len(b_shape) == 2:
        out_numel //= out_shape[0]  # the groups split the contracted rows, not the output
    return 2 * out_numel * contracted


# The CPU flash-attention kernel we trace with is missing from the registry (it knows the CUDA ones), and
# so is the in-place addmm_ the worker's loss accumulates the output layer's weight gradient with, and
# the grouped matmul of MoE experts.
FLOP_FORMULAS: dict[Any, Any] = {
    **flop_registry,
    aten.addmm_: addmm_flop,
    aten._scaled_dot_product_flash_attention_for_cpu: sdpa_flop,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: sdpa_backward_flop,
    aten._grouped_mm: grouped_mm_flop,
}

# Categories that are not on the device: kept for the record, left out of totals.
OFF_DEVICE = frozenset({"paged"})


class LiveBytes(TorchDispatchMode):
    """A dispatch mode whose `live` is the bytes of every storage still alive."""

    def __init__(self) -> None:
        super().__init__()
        self.category = "weights"
        self.phase = "setup"
        self._owner: dict[int, str] = {}
        self._size: dict[int, int] = {}
        self.by_category: dict[str, int] = defaultdict(int)
        self.live = 0
        self.peak = 0
        self.peak_breakdown: dict[str, int] = {}
        self.peak_phase = "setup"
        self.phase_peaks: dict[str, int] = {}
        self.count_flops = False
        self.flops = 0
        self.marks: dict[str, int] = {}

    # -- bookkeeping -----------------------------------------------------
    def _free(self, key: int) -> None:
        category = self._owner.pop(key, None)
        size = self._size.pop(key, 0)
        if category is None:
            return
        self.by_category[category] -= size
        if category not in OFF_DEVICE:
            self.live -= size

    def track(self, tensor: torch.Tensor, category: str | None = None) -> None:
        """Count `tensor`'s storage (once) under `category` (default: the current one)."""
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self._owner:
            return
        size = storage.nbytes()
        category = category or self.category
        self._owner[key] = category
        self._size[key] = size
        self.by_category[category] += size
        if category not in OFF_DEVICE:
            self.live += size
        weakref.finalize(storage, self._free, key)
        self._note_peak()

    def move(self, tensor: torch.Tensor, category: str) -> None:
        """File an already counted storage under another category (a grad, a paged state)."""
        key = tensor.untyped_storage()._cdata
        old = self._owner.get(key)
        if old is None:
            self.track(tensor, category)
            return
        if old == category:
            return
        size = self._size[key]
        self.by_category[old] -= size
        self.by_category[category] += size
        if old in OFF_DEVICE and category not in OFF_DEVICE:
            self.live += size
        elif category in OFF_DEVICE and old not in OFF_DEVICE:
            self.live -= size
        self._owner[key] = category

    def _note_peak(self) -> None:
        if self.live > self.phase_peaks.get(self.phase, -1):
            self.phase_peaks[self.phase] = self.live
        if self.live > self.peak:
            self.peak = self.live
            self.peak_phase = self.phase
            self.peak_breakdown = {k: v for k, v in self.by_category.items() if v and k not in OFF_DEVICE}

    def mark(self, name: str) -> None:
        """Remember the live bytes at a named point of the step (e.g. the end of the forward pass)."""
        self.marks[name] = self.live

    def reset_peak(self) -> None:
        """Forget the peak so far: the warm-up that created optimiser states is not the step we measure."""
        self.peak = self.live
        self.peak_breakdown = {k: v for k, v in self.by_category.items() if v and k not in OFF_DEVICE}
        self.phase_peaks = {}

    # -- the dispatch hook -------------------------------------------------
    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.count_flops:
            formula = FLOP_FORMULAS.get(func._overloadpacket)
            if formula is not None:
                self.flops += int(formula(*args, **kwargs, out_val=out))
        self._track_all(out)
        return out

    def _track_all(self, out: Any) -> None:
        """Track every tensor in an op's output (a tensor, or a tuple/list of them, possibly nested)."""
        if isinstance(out, torch.Tensor):
            self.track(out)
        elif isinstance(out, (tuple, list)):
            for item in out:
                self._track_all(item)

"""Make it fit plans with a GPU's calibrated figures, as the plan's row for that GPU does.

Calibration (tests/test_calibration.py) scales a GPU's tensor peak and replaces its utilisation
from measured runs; a "fits" from Make it fit that the row beside it contradicts would cost the
page its credibility (issue 14).
"""
from __future__ import annotations

import pytest

from app.planner.catalog import GpuCalibration, load_catalog
from app.planner.compute import flops_per_step, seconds_for
from app.planner.estimate import calibrated_peak, runtime_overhead
from app.planner.fit import make_it_fit
from app.planner.memory import estimate_memory
from app.planner.setup import TrainingSetup

pytestmark = pytest.mark.unit


def _shape() -> TrainingSetup:
    return TrainingSetup.build("lora", {}, seq_len=2048, batch_size=8, gradient_accumulation=1,
                               gradient_checkpointing=True)


def test_make_it_fit_uses_the_calibrated_peak_and_utilisation_of_the_gpu() -> None:
    catalog = load_catalog()
    arch, runtime = catalog.architecture("llama-3.1-8b"), catalog.runtime
    seeded = catalog.gpu("RTX 4090")
    assert seeded is not None
    calibrated = seeded.model_copy(update={"calibration": GpuCalibration(
        tensor_ratio=1.1, memory_runs=3, utilisation={"lora": 0.2}, utilisation_runs={"lora": 3})})
    plain, tuned = make_it_fit(arch, _shape(), seeded, runtime), make_it_fit(arch, _shape(), calibrated, runtime)
    assert plain.fits and tuned.fits
    assert tuned.batch_size < plain.batch_size  # measured runs need more memory: a smaller micro-batch
    fitted = TrainingSetup.build("lora", {}, seq_len=2048, batch_size=tuned.batch_size,
                                 gradient_accumulation=tuned.gradient_accumulation, gradient_checkpointing=True)
    tensors = estimate_memory(arch, fitted).peak
    assert tuned.peak_bytes == calibrated_peak(tensors + runtime_overhead(tensors, runtime), runtime, calibrated)
    expected = seconds_for(flops_per_step(arch, fitted), calibrated.bf16_tflops, 0.2)
    assert tuned.seconds_per_step == pytest.approx(expected, rel=1e-3)

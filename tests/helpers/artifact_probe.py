"""Load a download the way a user would, in a fresh Python process, and print its next-token logits.

Shared by the trainer-level and the API-level method tests: the artifact is
loaded by the standard libraries (transformers, peft) or, for bottleneck
adapters, by our documented public loader, never by the trainer's code.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]

PROBE_SCRIPT = textwrap.dedent(
    """
    import json, logging, sys, torch
    from pathlib import Path
    from transformers import AutoModelForCausalLM, AutoTokenizer
    kind, artifact, prompt, options = sys.argv[1], Path(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
    tokenizer = AutoTokenizer.from_pretrained(artifact)
    if kind == "model":
        model = AutoModelForCausalLM.from_pretrained(artifact, dtype=torch.float32)
    elif kind == "bottleneck":
        # Our public loader; the base is the one adapter_config.json names.
        from worker.bottleneck import from_pretrained
        model = from_pretrained(artifact)
    else:
        from peft import PeftModel
        base = json.loads((artifact / "adapter_config.json").read_text())["base_model_name_or_path"]
        if kind == "qlora":
            # The base quantised as in training (the job's options), then the adapter, as peft documents.
            from transformers import BitsAndBytesConfig
            logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
            quantization = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type=options["quant_type"],
                bnb_4bit_use_double_quant=options["double_quant"],
                bnb_4bit_compute_dtype=getattr(torch, options["compute_dtype"]),
            )
            base_model = AutoModelForCausalLM.from_pretrained(
                base, quantization_config=quantization, dtype=torch.float32, device_map="cpu"
            )
            # On CPUs with AVX512-BF16, bitsandbytes repacks 4-bit weights for a CPU inference kernel
            # that needs out_features % 32 == 0 (the demo MLP has 688); the trainer keeps it off
            # (worker.methods.qlora.without_cpu_packed_inference), and so does this load.
            for module in base_model.modules():
                if hasattr(module, "support_avx512bf16_for_cpu"):
                    module.support_avx512bf16_for_cpu = False
        else:
            base_model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        model = PeftModel.from_pretrained(base_model, artifact)
    model.eval()
    with torch.no_grad():
        logits = model(**tokenizer(prompt, return_tensors="pt")).logits
    print(json.dumps(logits[0, -1].tolist()))
    """
)


def probe_in_fresh_process(
    kind: str, artifact: Path, prompt: str, options: Mapping[str, Any], env: Mapping[str, str] | None = None
) -> list[float]:
    """`kind`: "model" (save_pretrained folder), "peft", "qlora" (PEFT folder for a 4-bit base), "bottleneck"."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE_SCRIPT, kind, str(artifact), prompt, json.dumps(dict(options))],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=dict(env) if env is not None else None,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])

"""The README's "Loading the adapter" example, verbatim, and a fresh Python process that runs it.

Only the two quoted values (the adapter folder and the question) are replaced before it runs.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

README_SNIPPET = '''\
import json

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

adapter = "adapter"  # the unzipped "adapter" download of a finished job
# The base model the job trained (a folder under var/models, or your own copy of it)
base = json.load(open(f"{adapter}/adapter_config.json"))["base_model_name_or_path"]

# The adapter's tokenizer is saved with the chat template of the job's prompt format
# (tunedeck_training.json says which), so apply_chat_template builds the prompt it trained on.
tokenizer = AutoTokenizer.from_pretrained(adapter)
model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter).eval()

messages = [{"role": "user", "content": "What is the capital of France?"}]
inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
with torch.no_grad():
    output = model.generate(**inputs, max_new_tokens=64, do_sample=False)
print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
'''


def run_readme_snippet(adapter: Path, question: str, cwd: Path) -> str:
    """What the README's example prints for `adapter` and `question`, in a process of its own."""
    code = README_SNIPPET.replace('"adapter"  #', f"{str(adapter)!r}  #").replace(
        '"What is the capital of France?"', repr(question))
    assert str(adapter) in code and repr(question) in code
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONIOENCODING": "utf-8"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          encoding="utf-8", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.rstrip("\n")

"""`tunedeck generate`: load a downloaded artifact onto its base and continue a prompt.

Accepts what the job page offers: a PEFT adapter folder, a full model folder
(`save_pretrained`), or the zip of either.
"""
from __future__ import annotations

import json
import tempfile
import zipfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel


class ArtifactError(ValueError):
    """The folder is not an artifact Tunedeck knows how to load."""


def _unpacked(path: Path, scratch: Path) -> Path:
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if member.startswith("/") or ".." in Path(member).parts:
                    raise ArtifactError(f"refusing zip member {member!r}")
            archive.extractall(scratch)
        return scratch
    if not path.is_dir():
        raise ArtifactError(f"{path} is neither a folder nor a zip")
    return path


def load_artifact(folder: Path, base: str | None = None) -> tuple[PreTrainedModel, Path]:
    """The model ready for inference and the folder its tokenizer comes from."""
    adapter_config = folder / "adapter_config.json"
    if adapter_config.is_file():
        config = json.loads(adapter_config.read_text())
        base_ref = base or config.get("base_model_name_or_path")
        if not base_ref:
            raise ArtifactError("the adapter does not name its base model: pass --base")
        if "peft_type" in config:
            from peft import PeftModel

            model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_ref), str(folder))
            tokenizer_dir = folder if (folder / "tokenizer_config.json").is_file() else Path(base_ref)
            return model.eval(), tokenizer_dir
        raise ArtifactError(f"unknown adapter type in {adapter_config}")
    if (folder / "config.json").is_file():
        return AutoModelForCausalLM.from_pretrained(str(folder)).eval(), folder
    raise ArtifactError(f"{folder} has neither adapter_config.json nor config.json")


def generate_text(artifact: str, base: str | None, prompt: str, max_new_tokens: int = 32) -> str:
    with tempfile.TemporaryDirectory() as scratch:
        folder = _unpacked(Path(artifact), Path(scratch))
        model, tokenizer_dir = load_artifact(folder, base)
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        inputs = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        return tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

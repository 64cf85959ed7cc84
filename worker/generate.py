"""`tunedeck generate`: load a downloaded artifact onto its base and continue a prompt.

Accepts every download the job page offers, as a folder or as its zip:

- a PEFT adapter folder (lora, dora, qlora, prefix, prompt): `adapter_config.json`
  with a `peft_type`, loaded with `PeftModel.from_pretrained` onto its base.
  A QLoRA adapter goes onto the base quantised to 4 bits as in training (the
  settings are in the folder's `tunedeck_training.json`), so it continues the
  prompt as the trained model did; with no record, without bitsandbytes, or
  with `quantize=False`, onto the float32 base (as its merged download is);
- a bottleneck-adapter folder (adapters): `adapter_config.json` with
  `"adapter_type": "bottleneck"` and no `peft_type`, loaded with our public
  loader `worker.bottleneck.load_bottleneck_adapter`;
- a model folder (full, freeze, galore, and every merged download):
  `config.json`, loaded with `AutoModelForCausalLM.from_pretrained`.

`--base` overrides the base model an adapter names.

The prompt is a plain user message: a download records the prompt format it
was trained with (`prompt_format` in `tunedeck_training.json`, and the chat
template its tokenizer is saved with: the model's own, or Alpaca's or plain's,
see app.prompts.recorded), so the message goes through that chat template with
its generation prompt, exactly as the README's loading example does. A folder
without that record (older downloads) continues the prompt text as given, as
does `raw=True`.
"""
from __future__ import annotations

import json
import logging
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from app.methods import missing_requirements, recorded_spec
from worker.merge import training_record

log = logging.getLogger(__name__)
# bitsandbytes (imported by peft) logs at import that an optional CPU kernels package is
# missing; it changes nothing here and would only confuse someone trying a download.
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


class ArtifactError(ValueError):
    """The folder is not an artifact Tunedeck knows how to load."""


def _unpacked(path: Path, scratch: Path) -> Path:
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if member.startswith("/") or ".." in Path(member).parts:
                    raise ArtifactError(f"refusing zip member {member!r}")
            archive.extractall(scratch)
        # A zip made by hand often holds one top-level folder rather than the files themselves.
        entries = list(scratch.iterdir())
        if len(entries) == 1 and entries[0].is_dir() and not _looks_like_artifact(scratch):
            return entries[0]
        return scratch
    if not path.is_dir():
        raise ArtifactError(f"{path} is neither a folder nor a zip")
    return path


def _looks_like_artifact(folder: Path) -> bool:
    return (folder / "adapter_config.json").is_file() or (folder / "config.json").is_file()


def _tokenizer_dir(folder: Path, base_ref: str) -> Path | str:
    return folder if (folder / "tokenizer_config.json").is_file() else base_ref


def _load_peft(folder: Path, base_ref: str, quantize: bool) -> torch.nn.Module:
    from peft import PeftModel

    config = training_record(folder).get("config") or {}
    spec = recorded_spec(config)
    if quantize and spec is not None and spec.quantized_base and not missing_requirements(spec.name):
        from worker.methods.qlora import load_quantized

        base_model = load_quantized(base_ref, config.get("method_config") or {})
    else:
        if quantize and spec is not None and spec.quantized_base:
            log.warning(
                "%s is not available: loading the QLoRA adapter onto the float32 base, "
                "whose outputs differ slightly from the 4-bit base it was trained on",
                ", ".join(spec.requires),
            )
        base_model = AutoModelForCausalLM.from_pretrained(base_ref, dtype=torch.float32)
    with warnings.catch_warnings():
        # peft 0.21 reads transformers' deprecated `is_gradient_checkpointing`; not the user's concern.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return PeftModel.from_pretrained(base_model, str(folder))


def load_artifact(
    folder: Path, base: str | None = None, *, quantize: bool = True
) -> tuple[torch.nn.Module, Path | str]:
    """The model ready for inference (eval mode) and where its tokenizer comes from."""
    adapter_config = folder / "adapter_config.json"
    if adapter_config.is_file():
        try:
            config = json.loads(adapter_config.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ArtifactError(f"{adapter_config} is not valid JSON: {exc}") from None
        base_ref = base or config.get("base_model_name_or_path")
        if not base_ref:
            raise ArtifactError("the adapter does not name its base model: pass --base")
        if "peft_type" in config:
            return _load_peft(folder, base_ref, quantize).eval(), _tokenizer_dir(folder, base_ref)
        if config.get("adapter_type") == "bottleneck":
            from worker.bottleneck import from_pretrained

            return from_pretrained(folder, base=base_ref), _tokenizer_dir(folder, base_ref)
        raise ArtifactError(
            f"unknown adapter type in {adapter_config}: neither a PEFT adapter (peft_type) "
            "nor a bottleneck adapter (adapter_type)"
        )
    if (folder / "config.json").is_file():
        return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval(), folder
    raise ArtifactError(f"{folder} has neither adapter_config.json nor config.json")


def prompt_inputs(folder: Path, tokenizer: PreTrainedTokenizerBase, message: str, raw: bool = False) -> Any:
    """The model's input for a user message: through the recorded format's chat template, or as text."""
    if raw or not training_record(folder).get("prompt_format") or not tokenizer.chat_template:
        return tokenizer(message, return_tensors="pt")
    return tokenizer.apply_chat_template([{"role": "user", "content": message}], add_generation_prompt=True,
                                         return_tensors="pt", return_dict=True)


def generate_text(artifact: str, base: str | None, prompt: str, max_new_tokens: int = 32, raw: bool = False) -> str:
    """The greedy answer to `prompt` (a user message in the recorded format; the text itself with `raw`)."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = _unpacked(Path(artifact), Path(scratch))
        model, tokenizer_dir = load_artifact(folder, base)
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        device = next(model.parameters()).device
        inputs = prompt_inputs(folder, tokenizer, prompt, raw).to(device)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id)
        return tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

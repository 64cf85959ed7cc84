"""What a serve process holds: each base model once, adapters loaded into it on demand, least recently used out.

Why one PeftModel per base: peft loads any number of LoRA adapters beside the same frozen weights
(`load_adapter`) and runs rows of different adapters in one forward pass (`adapter_names=`, with
"__base__" for the plain model), which is the LoRAX / S-LoRA way of serving many fine-tunes on one
GPU. An adapter costs its own few MB, not a base. DoRA adapters load the same way but peft cannot
mix them in a batch: their rows run as a batch of their own (`Slot.exclusive`). Anything that is not
a LoRA-family adapter (a full/freeze/GaLore model, a merged download, a prefix, prompt or bottleneck
adapter) is a `standalone` model: loaded whole, with `worker.generate.load_artifact`, and counted
against the same limit (`TUNEDECK_SERVE_MAX_ADAPTERS`) as adapters.
"""
from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from app.prompts.recorded import PLAIN_CHAT_TEMPLATE
from app.prompts.tokenizer import chat_template_of
from app.serving.protocol import ServedModel

log = logging.getLogger(__name__)
BASE = "__base__"  # peft's name for "no adapter" in a mixed batch


@dataclass
class Slot:
    """Where one request's rows run: a model, the peft adapter name of the row (None: none), the tokenizer."""

    key: str  # rows with the same key can share a batch
    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    chat_template: str  # the folder's own (an adapter's records its prompt format): passed per request
    adapter: str | None = None  # peft adapter name, or BASE on a PeftModel
    exclusive: bool = False  # DoRA: a batch of this adapter alone, selected with set_adapter


@dataclass
class _Base:
    path: str
    model: torch.nn.Module  # a PeftModel once the first adapter is loaded
    adapters: OrderedDict[str, tuple[str, bool]] = field(default_factory=OrderedDict)  # id -> (peft name, dora)


def _adapter_name(model_id: str) -> str:
    """peft adapter names become module attribute names: no dots or colons."""
    return "a" + hashlib.sha1(model_id.encode()).hexdigest()[:16]


def _tokenizer_key(path: str) -> str:
    """What makes two tokenizer folders the same tokenizer: vocabulary, merges and configuration, the chat
    template aside (a hub id, or a folder without tokenizer.json, is its own key)."""
    folder = Path(path)
    if not (folder / "tokenizer.json").is_file():
        return path
    try:  # parsed, so that two serialisations of one vocabulary (a save_pretrained copy) are one tokenizer
        digest = hashlib.sha1(json.dumps(json.loads((folder / "tokenizer.json").read_bytes()), sort_keys=True).encode())
    except ValueError:
        return path
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        try:
            config = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(config, dict):
            config.pop("chat_template", None)
        digest.update(json.dumps(config, sort_keys=True).encode())
    return digest.hexdigest()


def uses_dora(folder: str) -> bool:
    try:
        return bool(json.loads((Path(folder) / "adapter_config.json").read_text(encoding="utf-8")).get("use_dora"))
    except (OSError, ValueError):
        return False


class ModelHolder:
    """Loads on first use and keeps: bases for good, adapters and standalone models up to `max_loaded` (LRU)."""

    def __init__(self, device: str, max_loaded: int) -> None:
        self.device = device
        # bf16 on a GPU (as every serving stack runs it); float32 on the CPU, where it is also what
        # `tunedeck generate` and the README's loading code use, so greedy answers are the same text.
        self.dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        self.max_loaded = max(1, max_loaded)
        self._bases: dict[str, _Base] = {}
        self._standalone: dict[str, torch.nn.Module] = {}
        self._tokenizers: dict[str, PreTrainedTokenizerBase] = {}  # by content (`_tokenizer_key`)
        self._templates: dict[str, tuple[str, str]] = {}  # folder -> (tokenizer key, chat template)
        self._recent: OrderedDict[str, str | None] = OrderedDict()  # adapter/standalone id -> its base (None)

    def holding(self) -> dict[str, list[str]]:
        """What the heartbeat reports."""
        return {"bases": list(self._bases), "standalone": list(self._standalone),
                "adapters": [a for base in self._bases.values() for a in base.adapters]}

    def tokenizer(self, path: str) -> tuple[PreTrainedTokenizerBase, str]:
        """The folder's tokenizer and chat template. Adapters of one base save the same vocabulary with
        their own templates: one tokenizer object is shared by content (each costs ~12 MB for SmolLM2's
        49k vocabulary, four times what its adapter does) and the template goes with each request."""
        if path not in self._templates:
            template = chat_template_of(Path(path)) if Path(path).is_dir() else None
            key = _tokenizer_key(path)
            if key not in self._tokenizers:
                self._tokenizers[key] = AutoTokenizer.from_pretrained(path)
            self._templates[path] = (key, template or self._tokenizers[key].chat_template or PLAIN_CHAT_TEMPLATE)
        key, template = self._templates[path]
        return self._tokenizers[key], template

    def _base(self, path: str) -> _Base:
        base = self._bases.get(path)
        if base is None:
            log.info("loading base model %s", path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype).to(self.device).eval()
            base = self._bases[path] = _Base(path, model)
        return base

    def slot(self, served: ServedModel) -> Slot:
        """The model a request runs on, loading what it needs (and evicting the least recently used)."""
        if served.kind == "standalone":
            return self._standalone_slot(served)
        base = self._base(served.base_path)
        tok, template = self.tokenizer(served.tokenizer_path)
        if served.kind == "base":
            return Slot(f"base:{base.path}", base.model, tok, template, BASE if base.adapters else None)
        name, dora = self._adapter(base, served)
        return Slot(f"dora:{name}" if dora else f"base:{base.path}", base.model, tok, template, name, exclusive=dora)

    def _adapter(self, base: _Base, served: ServedModel) -> tuple[str, bool]:
        assert served.path is not None
        if served.id not in base.adapters:
            from peft import PeftModel

            name, dora = _adapter_name(served.id), uses_dora(served.path)
            log.info("loading adapter %s from %s", served.id, served.path)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=FutureWarning)
                if isinstance(base.model, PeftModel):
                    base.model.load_adapter(served.path, adapter_name=name)
                else:
                    base.model = PeftModel.from_pretrained(base.model, served.path, adapter_name=name)
            base.model.eval()
            base.adapters[served.id] = (name, dora)
        self._used(served.id, base.path)
        return base.adapters[served.id]

    def _standalone_slot(self, served: ServedModel) -> Slot:
        assert served.path is not None
        if served.id not in self._standalone:
            from worker.generate import load_artifact

            log.info("loading standalone model %s from %s", served.id, served.path)
            model, _ = load_artifact(Path(served.path), served.base_path, quantize=False)
            self._standalone[served.id] = model.to(self.device, self.dtype).eval()
        self._used(served.id, None)
        tok, template = self.tokenizer(served.tokenizer_path)
        return Slot(f"standalone:{served.id}", self._standalone[served.id], tok, template)

    def _used(self, model_id: str, base_path: str | None) -> None:
        """Mark `model_id` most recently used; evict the least recently used beyond the limit.

        The new one is loaded before the old one goes, so peft always keeps at least one adapter."""
        self._recent[model_id] = base_path
        self._recent.move_to_end(model_id)
        while len(self._recent) > self.max_loaded:
            old, old_base = self._recent.popitem(last=False)
            log.info("evicting %s (least recently used of %d)", old, self.max_loaded)
            if old_base is None:
                self._standalone.pop(old, None)
            else:
                name, _ = self._bases[old_base].adapters.pop(old)
                with warnings.catch_warnings():  # peft says which adapter it made active instead: none is used
                    warnings.filterwarnings("ignore", message=".*was active which is now deleted.*")
                    self._bases[old_base].model.delete_adapter(name)

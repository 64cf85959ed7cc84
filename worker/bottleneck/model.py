"""The bottleneck module, how it is attached to a model, and its folder format.

See the package docstring for what a bottleneck adapter is. Adapters are
attached without touching the base model's own modules: they live in one
container module, `model.bottleneck_adapters`, and forward hooks on each
decoder layer's ``self_attn`` / ``mlp`` pass those blocks' outputs through
them. The base model's weights and state-dict names stay as they were.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

ADAPTER_TYPE = "bottleneck"
CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
CONTAINER_NAME = "bottleneck_adapters"

# Insertion points per AdapterHub configuration, and the decoder-layer attribute each follows.
CONFIG_SITES: dict[str, tuple[str, ...]] = {"houlsby": ("attn", "ffn"), "pfeiffer": ("ffn",)}
SITE_MODULES: dict[str, str] = {"attn": "self_attn", "ffn": "mlp"}
NON_LINEARITIES: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}


def _tunedeck_version() -> str:
    try:
        return metadata.version("tunedeck")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class BottleneckConfig:
    """What `adapter_config.json` holds; enough to rebuild the adapters on their base model."""

    config: str
    reduction_factor: int
    non_linearity: str
    hidden_size: int
    bottleneck_size: int
    num_layers: int
    base_model_name_or_path: str | None = None
    tunedeck_version: str = field(default_factory=_tunedeck_version)
    adapter_type: str = ADAPTER_TYPE

    def __post_init__(self) -> None:
        if self.adapter_type != ADAPTER_TYPE:
            raise ValueError(f"adapter_type is {self.adapter_type!r}, not {ADAPTER_TYPE!r}")
        if self.config not in CONFIG_SITES:
            raise ValueError(f"unknown bottleneck config {self.config!r} (known: {', '.join(CONFIG_SITES)})")
        if self.non_linearity not in NON_LINEARITIES:
            raise ValueError(
                f"unknown non_linearity {self.non_linearity!r} (known: {', '.join(NON_LINEARITIES)})"
            )
        if self.bottleneck_size < 1:
            raise ValueError(
                f"reduction_factor={self.reduction_factor} leaves no bottleneck for hidden size "
                f"{self.hidden_size}: pick a reduction_factor of at most {self.hidden_size}"
            )

    @property
    def sites(self) -> tuple[str, ...]:
        return CONFIG_SITES[self.config]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        # adapter_type first: it is what tells a reader (and `tunedeck generate`) what this folder is.
        return {"adapter_type": data.pop("adapter_type"), **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BottleneckConfig":
        if "peft_type" in data or data.get("adapter_type") != ADAPTER_TYPE:
            raise ValueError("not a bottleneck adapter config (a PEFT adapter? load it with peft)")
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)

    @classmethod
    def read(cls, folder: str | Path) -> "BottleneckConfig":
        path = Path(folder) / CONFIG_NAME
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))


def adapter_parameter_count(hidden_size: int, bottleneck_size: int) -> int:
    """Parameters of one adapter: down (h·m + m) and up (m·h + h)."""
    return 2 * hidden_size * bottleneck_size + hidden_size + bottleneck_size


class BottleneckAdapter(nn.Module):
    """``x + up(act(down(x)))``, initialised to be the identity.

    AdapterHub's "mam_adapter" initialisation: ``down.weight`` Kaiming-uniform
    (PyTorch's Linear default), ``down.bias`` zero, and ``up`` all zero, so
    the adapter adds exactly nothing until it trains. The adapter computes in
    its own dtype and returns the input's dtype.
    """

    def __init__(self, hidden_size: int, bottleneck_size: int, non_linearity: str = "relu") -> None:
        super().__init__()
        self.down = nn.Linear(hidden_size, bottleneck_size)
        self.act = NON_LINEARITIES[non_linearity]()
        self.up = nn.Linear(bottleneck_size, hidden_size)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        delta = self.up(self.act(self.down(hidden.to(self.down.weight.dtype))))
        return hidden + delta.to(hidden.dtype)


class BottleneckAdapters(nn.Module):
    """Every adapter of one model: ``layers[i][site]`` with site ``attn`` or ``ffn``."""

    def __init__(self, config: BottleneckConfig) -> None:
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(
            nn.ModuleDict(
                {
                    site: BottleneckAdapter(config.hidden_size, config.bottleneck_size, config.non_linearity)
                    for site in config.sites
                }
            )
            for _ in range(config.num_layers)
        )
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers: ``model.get_decoder().layers``, else ``model.model.layers``."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else getattr(model, "model", None)
    layers = getattr(decoder, "layers", None)
    if layers is None:
        layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__} has no list of decoder `layers` to put bottleneck adapters in")
    return layers


def _hidden_size(model: nn.Module) -> int:
    config = model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(text.hidden_size)


def _output_hook(adapter: BottleneckAdapter) -> Callable[[nn.Module, Any, Any], Any]:
    """A forward hook that passes a block's hidden-state output through `adapter`.

    Attention blocks return a tuple (hidden states, attention weights, ...);
    only the first element is the hidden state.
    """

    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        if isinstance(output, torch.Tensor):
            return adapter(output)
        if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
            return (adapter(output[0]), *output[1:])
        raise TypeError(f"cannot put a bottleneck adapter after {type(module).__name__}: it returns {type(output)}")

    return hook


def find_adapters(model: nn.Module) -> BottleneckAdapters | None:
    """The adapters attached to `model` by `add_bottleneck_adapters`, or None."""
    found = getattr(model, CONTAINER_NAME, None)
    return found if isinstance(found, BottleneckAdapters) else None


def _attach(model: nn.Module, config: BottleneckConfig) -> BottleneckAdapters:
    if find_adapters(model) is not None:
        raise ValueError("this model already has bottleneck adapters")
    layers = decoder_layers(model)
    hidden_size = _hidden_size(model)
    if (config.hidden_size, config.num_layers) != (hidden_size, len(layers)):
        raise ValueError(
            f"the adapter was made for hidden size {config.hidden_size} and {config.num_layers} layers; "
            f"this model has hidden size {hidden_size} and {len(layers)} layers (wrong base model?)"
        )
    adapters = BottleneckAdapters(config)
    reference = model.get_input_embeddings().weight if hasattr(model, "get_input_embeddings") else None
    if reference is not None and reference.is_floating_point():
        adapters.to(device=reference.device, dtype=reference.dtype)
    for layer, per_layer in zip(layers, adapters.layers):
        for site, adapter in per_layer.items():
            block = getattr(layer, SITE_MODULES[site], None)
            if block is None:
                raise ValueError(
                    f"{type(layer).__name__} has no `{SITE_MODULES[site]}` block for the {site} adapter"
                )
            adapters._hooks.append(block.register_forward_hook(_output_hook(adapter)))
    model.add_module(CONTAINER_NAME, adapters)
    return adapters


def add_bottleneck_adapters(
    model: nn.Module,
    config: str = "pfeiffer",
    reduction_factor: int = 16,
    non_linearity: str = "relu",
    base_model_name_or_path: str | None = None,
) -> BottleneckAdapters:
    """Attach fresh (identity) adapters to every decoder layer of `model` and return them.

    Only the adapters are created trainable; freezing the base is the caller's
    choice (`worker.methods.adapters` freezes it).
    """
    if reduction_factor < 1:
        raise ValueError("reduction_factor must be at least 1")
    layers = decoder_layers(model)
    hidden_size = _hidden_size(model)
    settings = BottleneckConfig(
        config=config,
        reduction_factor=reduction_factor,
        non_linearity=non_linearity,
        hidden_size=hidden_size,
        bottleneck_size=hidden_size // reduction_factor,
        num_layers=len(layers),
        base_model_name_or_path=base_model_name_or_path or getattr(model, "name_or_path", None) or None,
    )
    return _attach(model, settings)


def save_bottleneck_adapter(model: nn.Module, folder: str | Path, base_model_name_or_path: str | None = None) -> None:
    """Write `adapter_config.json` and `adapter_model.safetensors` (adapter weights only) into `folder`."""
    adapters = find_adapters(model)
    if adapters is None:
        raise ValueError("this model has no bottleneck adapters to save")
    config = adapters.config
    if base_model_name_or_path is not None:
        config = BottleneckConfig(**{**asdict(config), "base_model_name_or_path": base_model_name_or_path})
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in adapters.state_dict().items()}
    save_file(tensors, str(out / WEIGHTS_NAME), metadata={"format": "pt", "adapter_type": ADAPTER_TYPE})
    (out / CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")


def is_bottleneck_folder(folder: str | Path) -> bool:
    """True for a folder written by `save_bottleneck_adapter` (not a PEFT folder)."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return False
    return isinstance(data, dict) and "peft_type" not in data and data.get("adapter_type") == ADAPTER_TYPE


def load_bottleneck_adapter(model: nn.Module, folder: str | Path, *, trainable: bool = False) -> nn.Module:
    """Attach the bottleneck adapter saved in `folder` to `model` (a loaded base model) and return `model`.

    `model` must be the base the adapter was trained on (same hidden size and
    number of decoder layers; checked). The adapter's weights are moved to the
    dtype and device of the model's embeddings. Every adapter tensor must be
    in the file and nothing else may be (a strict load). The adapters are
    frozen unless `trainable=True`, like `PeftModel.from_pretrained`; the
    model's training/eval mode is left as it was.
    """
    config = BottleneckConfig.read(folder)
    adapters = _attach(model, config)
    state = load_file(str(Path(folder) / WEIGHTS_NAME))
    reference = next(iter(adapters.parameters()))
    adapters.load_state_dict({k: v.to(device=reference.device, dtype=reference.dtype) for k, v in state.items()})
    adapters.requires_grad_(trainable)
    adapters.train(model.training)
    return model


def from_pretrained(
    folder: str | Path, base: str | Path | None = None, *, dtype: torch.dtype = torch.float32
) -> nn.Module:
    """Load the base model and the bottleneck adapter in `folder` onto it, ready for inference.

    `base` is a model folder or hub id; by default the one recorded in the
    adapter's `adapter_config.json` (`base_model_name_or_path`). Returns the
    transformers model (with `.generate`) in eval mode, in `dtype` (float32 by
    default, as the adapter was trained).
    """
    from transformers import AutoModelForCausalLM

    config = BottleneckConfig.read(folder)
    base_ref = str(base) if base is not None else config.base_model_name_or_path
    if not base_ref:
        raise ValueError(f"{Path(folder) / CONFIG_NAME} does not name its base model: pass base=")
    model = AutoModelForCausalLM.from_pretrained(base_ref, dtype=dtype)
    return load_bottleneck_adapter(model, folder).eval()

"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2020), as AdapterHub defines them.

A bottleneck adapter is a down-projection from the hidden size h to
m = h // reduction_factor, a non-linearity, an up-projection back to h and a
residual connection: ``adapter(x) = x + up(act(down(x)))``. It is applied to
the output of a sub-layer of every decoder layer, before the layer's own
residual addition:

- ``pfeiffer``: one adapter after the feed-forward block (``mlp``);
- ``houlsby``: one after the attention block (``self_attn``) and one after
  the feed-forward block.

The up-projection starts at zero, so a freshly added adapter is the identity
and the model gives exactly the base model's outputs until it trains. Each
adapter has ``2·h·m + h + m`` parameters.

Why our own implementation rather than the AdapterHub ``adapters`` library:
see DESIGN.md (that library pins an older transformers).

An adapter folder holds ``adapter_config.json`` (``"adapter_type":
"bottleneck"``, see `BottleneckConfig`), ``adapter_model.safetensors`` (only the
adapter weights, named ``layers.<i>.<attn|ffn>.<down|up>.<weight|bias>``) and
the tokenizer files. Load it with:

>>> from worker.bottleneck import from_pretrained
>>> model = from_pretrained("path/to/adapter")                 # base named in the folder
>>> model = from_pretrained("path/to/adapter", base="path/to/base-model")

or, onto a model you already loaded:

>>> from transformers import AutoModelForCausalLM
>>> from worker.bottleneck import load_bottleneck_adapter
>>> model = load_bottleneck_adapter(AutoModelForCausalLM.from_pretrained("path/to/base"), "path/to/adapter")
"""
from worker.bottleneck.model import (
    ADAPTER_TYPE,
    CONFIG_NAME,
    WEIGHTS_NAME,
    BottleneckAdapter,
    BottleneckConfig,
    add_bottleneck_adapters,
    adapter_parameter_count,
    find_adapters,
    from_pretrained,
    is_bottleneck_folder,
    load_bottleneck_adapter,
    save_bottleneck_adapter,
)

__all__ = [
    "ADAPTER_TYPE",
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "BottleneckAdapter",
    "BottleneckConfig",
    "add_bottleneck_adapters",
    "adapter_parameter_count",
    "find_adapters",
    "from_pretrained",
    "is_bottleneck_folder",
    "load_bottleneck_adapter",
    "save_bottleneck_adapter",
]

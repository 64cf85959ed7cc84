"""A tiny Llama GGUF file that transformers really loads (random weights, byte-level BPE vocabulary).

For tests that import a GGUF through a worker and must be quick: 2 layers,
hidden size 64, 258 tokens, Q4_0 and Q8_0 blocks beside F32, ~140 KB; its
import takes about as long as importing torch and transformers. Not a useful
model (its output is noise); the bundled SmolLM2 is the real one.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

HIDDEN, LAYERS, FFN, HEADS = 64, 2, 128, 4
FILE_NAME = "Tiny-Llama.Q4_0.gguf"


def _byte_symbols() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values (what a byte-level BPE vocabulary starts with)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def tiny_llama_gguf(folder: Path, file_name: str = FILE_NAME) -> Path:
    """Write the file into `folder` and return its path."""
    from gguf import GGMLQuantizationType, GGUFWriter, quants

    path = folder / file_name
    tokens = [*_byte_symbols(), "Ġt", "<|endoftext|>"]
    vocab = len(tokens)
    writer = GGUFWriter(str(path), "llama")
    writer.add_name("Tiny Llama")
    writer.add_context_length(256)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_vocab_size(vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * (vocab - 1) + [3])  # normal tokens, then one control token
    writer.add_token_merges(["Ġ t"])
    writer.add_bos_token_id(vocab - 1)
    writer.add_eos_token_id(vocab - 1)
    rng = np.random.default_rng(0)

    def weight(name: str, shape: tuple[int, int], qtype: GGMLQuantizationType | None = None) -> None:
        values = (rng.standard_normal(shape) * 0.02).astype(np.float32)
        if qtype is None:
            writer.add_tensor(name, values)
        else:
            writer.add_tensor(name, quants.quantize(values, qtype), raw_dtype=qtype)

    weight("token_embd.weight", (vocab, HIDDEN), GGMLQuantizationType.Q8_0)
    for layer in range(LAYERS):
        for part, shape in (("attn_q", (HIDDEN, HIDDEN)), ("attn_k", (HIDDEN, HIDDEN)), ("attn_v", (HIDDEN, HIDDEN)),
                            ("attn_output", (HIDDEN, HIDDEN)), ("ffn_gate", (FFN, HIDDEN)), ("ffn_up", (FFN, HIDDEN)),
                            ("ffn_down", (HIDDEN, FFN))):
            weight(f"blk.{layer}.{part}.weight", shape, GGMLQuantizationType.Q4_0)
        writer.add_tensor(f"blk.{layer}.attn_norm.weight", np.ones(HIDDEN, np.float32))
        writer.add_tensor(f"blk.{layer}.ffn_norm.weight", np.ones(HIDDEN, np.float32))
    writer.add_tensor("output_norm.weight", np.ones(HIDDEN, np.float32))
    weight("output.weight", (vocab, HIDDEN))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


"""The built-in demo model: a tiny random-init Llama with a byte-level tokenizer.

No model hub is reachable on the development machines, yet every code path
(estimator, LoRA targets, PEFT folders, `from_pretrained`) should run on a
real Llama-architecture checkpoint. So we make one: about 3 M parameters,
grouped-query attention like Llama 3, fast enough to train 40 steps on two
CPU cores in seconds. Weights come from a fixed seed so two machines build
the same model.

The tokenizer maps every byte to the token with the same id (0-255), like
GPT-2's byte-level alphabet without any merges, so any UTF-8 text
round-trips and no vocabulary needs training.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from app.storage import atomic_folder

DEMO_MODEL_ID = "demo"
BOS, EOS, PAD = "<s>", "</s>", "<pad>"
MAX_POSITIONS = 512
# The final RMSNorm fixes the hidden state's length, so the output head's
# scale caps how confident the model can become. At the usual 0.02 a frozen
# random head holds any adapter near the uniform loss (LoRA plateaus at ~4.7
# nats in 40 steps); at 0.06 it starts near uniform (~5.9) and can fall well
# below 4, which is what a demo should show.
HEAD_INIT_STD = 0.06


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-to-printable-character table, which the ByteLevel pre-tokenizer uses."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {byte: chr(char) for byte, char in zip(printable, chars)}


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE with no merges: ids 0-255 are bytes, then <s>, </s>, <pad>.

    Built with `tokenizers` and wrapped with `tokenizer_object=`, which
    transformers 5 still accepts (`PreTrainedTokenizerFast` is now an alias of
    `TokenizersBackend`). It adds <s> in front like Llama tokenizers do, so
    `tokenizer(prompt)` at generation time matches what training saw.
    """
    vocab = {char: byte for byte, char in _bytes_to_unicode().items()}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    # No regex split: without merges it changes nothing but costs time.
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(token, special=True) for token in (BOS, EOS, PAD)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        add_bos_token=True,
        add_eos_token=False,
        model_max_length=MAX_POSITIONS,
        padding_side="right",
    )


def build_model(tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    """Random-init Llama sized so that a LoRA step on a CPU takes well under a second."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.normal_(mean=0.0, std=HEAD_INIT_STD)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return model


def ensure_demo_model(models_dir: Path) -> Path:
    """Return `models_dir/demo`, building it first if it is missing.

    Built in a temporary sibling and renamed into place, so a crash or a
    concurrent builder never leaves a half-written folder that looks usable.
    """
    target = models_dir / DEMO_MODEL_ID
    if (target / "config.json").is_file():
        return target
    try:
        # replace=False: a concurrent builder that renamed its (identical) folder in first wins.
        # atomic_folder also makes the files world-readable: the weights are written owner-only.
        with atomic_folder(target, replace=False) as tmp:
            tokenizer = build_tokenizer()
            model = build_model(tokenizer)
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            if target.exists() and not (target / "config.json").is_file():
                shutil.rmtree(target)  # debris of an older, non-atomic attempt
    except OSError:
        if (target / "config.json").is_file():
            return target  # another process won the race; theirs is identical
        raise
    return target

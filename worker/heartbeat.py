"""Workers announce themselves in Redis with a short TTL, so the API can count live workers."""
from __future__ import annotations

import json
import logging
import socket
import threading
import time

from redis import Redis

from app.settings import get_settings
from worker.accelerator import detect

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10
HEARTBEAT_TTL = 30


def worker_key(hostname: str) -> str:
    return f"tunedeck:worker:{hostname}"


class Heartbeat:
    def __init__(self, hostname: str, queues: list[str]) -> None:
        self.hostname = hostname
        self.queues = queues
        self.accelerator = detect()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def payload(self) -> str:
        return json.dumps({
            "hostname": self.hostname, "host": socket.gethostname(), "queues": self.queues,
            "accelerator": self.accelerator.public(), "seen_at": time.time(),
        })

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        try:
            Redis.from_url(get_settings().resolved_redis_url, socket_timeout=2).delete(worker_key(self.hostname))
        except Exception as exc:  # noqa: BLE001 - the key expires on its own
            log.debug("heartbeat key not removed: %s", exc)

    def _run(self) -> None:
        client = Redis.from_url(get_settings().resolved_redis_url, socket_timeout=5)
        while True:
            try:
                client.set(worker_key(self.hostname), self.payload(), ex=HEARTBEAT_TTL)
            except Exception as exc:  # noqa: BLE001 - Redis may be restarting; try again next beat
                log.warning("heartbeat failed: %s", exc)
            if self._stop.wait(HEARTBEAT_SECONDS):
                return

"""Load on loopback: 100 SSE watchers on one running job plus 20 page requests/s, against a real stack.

Starts a private Tunedeck (redis-server, the API, one Celery worker), launches
a long demo LoRA job, and then runs locust as a library for a fixed time:

- 100 `Watcher` users, in a process of their own, hold the job's event stream
  open (`/api/v1/jobs/{id}/events`) and note when each event arrives;
- 10 `PageUser`s at 2 requests/s each (20/s in all) ask for the job list page,
  the job page, the JSON job list and `/healthz`.

It prints p50/p95 of the page requests and the event delay from the worker
to the watchers. Events carry no timestamp of their own, so the benchmark
follows the job's Redis stream itself with a blocking XREAD: the moment an
event appears there is the moment the worker published it (loopback, well
under a millisecond), and each watcher's delay is its arrival time minus that.

    .venv/bin/python -m benchmarks.load_sse [--seconds 60] [--stream api|page] [--trainer-threads 1]

Targets: page p95 under 200 ms, event delay under 1 s. Not part of the test suite.
"""
from __future__ import annotations

from gevent import monkey

monkey.patch_all()  # before anything opens a socket (locust would do it on import too)

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gevent
import psutil
import requests
from locust import FastHttpUser, User, constant_throughput, events, task
from locust.env import Environment
from redis import Redis

from app.events.stream import stream_key
from tests.chaos_stack import chaos_stack, submit, wait_step
from tests.conftest import job_body
from tests.stack import ADMIN_TOKEN, ROOT

WATCHERS = 100
PAGE_USERS = 10
PAGE_RATE = 2.0  # requests per second per page user: 20/s in all
TARGET_P95_MS = 200.0
TARGET_DELAY_S = 1.0
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

JOB_ID = ""
STREAM_PATHS = {"api": "/api/v1/jobs/{id}/events", "page": "/jobs/{id}/live"}
STREAM_PATH = STREAM_PATHS["api"]
published: dict[int, float] = {}  # seq -> when it appeared in the Redis stream
arrivals: list[tuple[int, float]] = []  # (seq, when a watcher got it), all watchers
page_times: dict[str, list[float]] = {}
failures: list[str] = []
page_requests: list[float] = []  # every page request, answered or failed: the offered rate
slow_pages: list[tuple[float, str, float]] = []  # (when it was sent, which, ms) of requests over STALL_MS
STALL_MS = 500.0


@events.request.add_listener
def _record(request_type: str, name: str, response_time: float, exception: Exception | None, **_: object) -> None:
    page_requests.append(response_time)
    if response_time > STALL_MS:
        slow_pages.append((time.time() - response_time / 1000, name, response_time))
    if exception is not None:
        failures.append(f"{request_type} {name}: {exception}")
    else:
        page_times.setdefault(name, []).append(response_time)


class Watcher(User):
    """One browser tab on the job page: an open event stream, reconnecting with Last-Event-ID."""

    fixed_count = WATCHERS

    @task
    def watch(self) -> None:
        last = None
        session = requests.Session()
        while True:
            headers = {**AUTH, **({"Last-Event-ID": str(last)} if last is not None else {})}
            try:
                with session.get(self.host + STREAM_PATH.format(id=JOB_ID), headers=headers,
                                 stream=True, timeout=60) as response:
                    for line in response.iter_lines(decode_unicode=True):
                        if line and line.startswith("id: "):
                            last = int(line[4:])
                            arrivals.append((last, time.time()))
            except requests.RequestException as exc:
                failures.append(f"SSE: {exc}")
                gevent.sleep(1.0)


class PageUser(FastHttpUser):
    fixed_count = PAGE_USERS
    wait_time = constant_throughput(PAGE_RATE)

    @task(3)
    def job_list_page(self) -> None:
        self.client.get("/jobs", headers=AUTH, name="GET /jobs (page)")

    @task(3)
    def job_page(self) -> None:
        self.client.get(f"/jobs/{JOB_ID}", headers=AUTH, name="GET /jobs/{id} (page)")

    @task(2)
    def job_list_api(self) -> None:
        self.client.get("/api/v1/jobs", headers=AUTH, name="GET /api/v1/jobs")

    @task(2)
    def healthz(self) -> None:
        self.client.get("/healthz", name="GET /healthz")


def follow_stream(redis_url: str, stop: gevent.event.Event) -> None:
    """Note when each event of the job lands in Redis (= when the worker published it)."""
    redis = Redis.from_url(redis_url)
    cursor = "0-0"
    while not stop.is_set():
        reply = redis.xread({stream_key(JOB_ID): cursor}, block=1000, count=500)
        now = time.time()
        for _key, entries in reply or []:
            for entry_id, _fields in entries:
                cursor = entry_id.decode()
                published.setdefault(int(cursor.split("-")[1]), now)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def report(seconds: float) -> bool:
    ok = True
    print(f"\n=== {WATCHERS} SSE watchers on {STREAM_PATH} + {PAGE_USERS * PAGE_RATE:.0f} page req/s"
          f" for {seconds:.0f} s ===")
    all_pages: list[float] = []
    for name, times in sorted(page_times.items()):
        all_pages += times
        print(f"{name:28s} n={len(times):5d}  p50={pct(times, 50):7.1f} ms  p95={pct(times, 95):7.1f} ms"
              f"  max={max(times):7.1f} ms")
    if all_pages:
        p95 = pct(all_pages, 95)
        ok &= p95 < TARGET_P95_MS
        print(f"{'all pages':28s} n={len(all_pages):5d}  p50={pct(all_pages, 50):7.1f} ms  p95={p95:7.1f} ms"
              f"  ({len(page_requests) / seconds:.1f} req/s sent; target p95 < {TARGET_P95_MS:.0f} ms: "
              f"{'met' if p95 < TARGET_P95_MS else 'MISSED'})")
    delays = [when - published[seq] for seq, when in arrivals if seq in published]
    if delays:
        p95 = pct(delays, 95)
        ok &= p95 < TARGET_DELAY_S
        print(f"{'event delay worker→watcher':28s} n={len(delays):5d}  p50={pct(delays, 50) * 1000:7.1f} ms"
              f"  p95={p95 * 1000:7.1f} ms  max={max(delays) * 1000:7.1f} ms  "
              f"({len(published)} events; target < {TARGET_DELAY_S:.0f} s: {'met' if p95 < TARGET_DELAY_S else 'MISSED'})")
        per_event = len(delays) / max(len(published), 1)
        print(f"{'deliveries per event':28s} {per_event:.1f} of {WATCHERS} watchers")
    else:
        ok = False
        print("no events reached the watchers")
    late = sorted((published[seq], seq, when - published[seq]) for seq, when in arrivals
                  if seq in published and when - published[seq] > STALL_MS / 1000)
    if slow_pages or late:
        first = min([t for t, _, _ in slow_pages] + [t for t, _, _ in late])
        print(f"stalls over {STALL_MS:.0f} ms (seconds since the first, local time {time.strftime('%H:%M:%S', time.localtime(first))}):")
        for sent, name, ms in slow_pages:
            print(f"  +{sent - first:6.2f} s  {name}: {ms:.0f} ms")
        by_event: dict[int, tuple[float, float]] = {}
        for when, seq, delay in late:
            by_event[seq] = (when, max(delay, by_event.get(seq, (0.0, 0.0))[1]))
        for seq, (when, delay) in sorted(by_event.items()):
            print(f"  +{when - first:6.2f} s  event {seq}: up to {delay * 1000:.0f} ms late")
    if failures:
        kinds: dict[str, int] = {}
        for failure in failures:
            kinds[failure] = kinds.get(failure, 0) + 1
        print(f"{len(failures)} failed requests: " + "; ".join(f"{n}× {what}" for what, n in kinds.items()))
    return ok and not failures


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children (alive ones)."""
    total = 0.0
    try:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                continue
    except psutil.Error:
        pass
    return total


def page_summary(label: str) -> None:
    times = [t for values in page_times.values() for t in values]
    if times:
        print(f"{label}: n={len(times)}  p50={pct(times, 50):.1f} ms  p95={pct(times, 95):.1f} ms")


def run_users(user_classes: list[type[User]], host: str, seconds: float) -> None:
    for user_class in user_classes:
        user_class.host = host
    runner = Environment(user_classes=user_classes, host=host, events=events).create_local_runner()
    runner.start(sum(u.fixed_count for u in user_classes), spawn_rate=sum(u.fixed_count for u in user_classes))
    gevent.sleep(seconds)
    runner.quit()


def watchers_process(host: str, job_id: str, seconds: float, out: Path, stream: str) -> int:
    """The watchers in a process of their own, so that 100 busy streams do not slow the page timings
    of the load generator itself; they write what arrived when to `out`."""
    global JOB_ID, STREAM_PATH
    JOB_ID, STREAM_PATH = job_id, STREAM_PATHS[stream]
    run_users([Watcher], host, seconds)
    out.write_text(json.dumps({"arrivals": arrivals, "failures": failures}))
    return 0


def main() -> int:
    global JOB_ID, STREAM_PATH
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the load runs")
    parser.add_argument("--baseline-seconds", type=float, default=15.0,
                        help="page load alone first, with the job training but no watchers (0: skip)")
    parser.add_argument("--trainer-threads", type=int, default=0,
                        help="cap the trainer's CPU threads (OMP_NUM_THREADS), e.g. 1 to leave the API a core "
                             "as if the worker ran on its own machine (0: no cap)")
    parser.add_argument("--stream", choices=sorted(STREAM_PATHS), default="api",
                        help="what the watchers hold open: the JSON API's event stream, or the job page's (HTML)")
    parser.add_argument("--keep-logs", type=Path, default=None,
                        help="copy the stack's process logs (api.log, worker.log) into this folder at the end")
    parser.add_argument("--watchers-only", nargs=3, metavar=("HOST", "JOB_ID", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    STREAM_PATH = STREAM_PATHS[args.stream]
    if args.watchers_only:
        host, job_id, out = args.watchers_only
        return watchers_process(host, job_id, args.seconds, Path(out), args.stream)
    worker_env = {"OMP_NUM_THREADS": str(args.trainer_threads)} if args.trainer_threads else None
    with tempfile.TemporaryDirectory() as tmp, chaos_stack(Path(tmp), worker_env=worker_env) as stack, \
            stack.client() as client:
        # A job long enough to outlast the run; one metric and one log line per step.
        JOB_ID = submit(client, job_body(hyperparameters={"max_steps": 100_000, "batch_size": 4,
                                                           "checkpoint_every": 0}))
        wait_step(client, JOB_ID, 1, 180)
        if args.baseline_seconds > 0:
            run_users([PageUser], stack.base_url, args.baseline_seconds)
            page_summary("baseline, pages only (job training, no watchers)")
            page_times.clear()
            failures.clear()
            page_requests.clear()

        stop = gevent.event.Event()
        follower = gevent.spawn(follow_stream, stack.redis_url, stop)
        warmup = 8.0  # every watcher connects and catches up on the history first
        out = Path(tmp) / "arrivals.json"
        child = subprocess.Popen([sys.executable, "-m", "benchmarks.load_sse", "--seconds", str(args.seconds + warmup),
                                  "--watchers-only", stack.base_url, JOB_ID, str(out), "--stream", args.stream], cwd=ROOT)
        gevent.sleep(warmup)
        started = time.time()
        published_before = set(published)
        gevent.spawn_later(args.seconds / 2, lambda: print(
            "healthz under load:", (h := requests.get(f"{stack.base_url}/healthz", timeout=10)).status_code, h.text))
        api_cpu, trainer_cpu = cpu_seconds(stack.procs["api"].pid), cpu_seconds(stack.procs["worker"].pid)
        run_users([PageUser], stack.base_url, args.seconds)
        elapsed = time.time() - started
        api_cpu = cpu_seconds(stack.procs["api"].pid) - api_cpu
        trainer_cpu = cpu_seconds(stack.procs["worker"].pid) - trainer_cpu
        child.wait(timeout=60)
        stop.set()
        follower.join(timeout=5)
        watched = json.loads(out.read_text())
        arrivals.extend((seq, when) for seq, when in watched["arrivals"] if when >= started)
        failures.extend(watched["failures"])
        for seq in published_before:  # history replayed on connect is not live delay
            published.pop(seq, None)
        ok = report(elapsed)
        print(f"CPU used during the run: API process {100 * api_cpu / elapsed:.0f}% of a core, "
              f"worker and trainer {100 * trainer_cpu / elapsed:.0f}%, on {psutil.cpu_count()} cores "
              f"(load average {os.getloadavg()[0]:.1f})")
        client.post(f"/api/v1/jobs/{JOB_ID}/cancel")
        if args.keep_logs is not None:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            for log in stack.logs.values():
                shutil.copy(log, args.keep_logs / log.name)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

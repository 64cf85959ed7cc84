"""The `tunedeck` command: everything on one machine (`up`), or each part on its own."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Commands whose code is the worker's (torch, transformers): this process hands them to worker.cli.
WORKER_COMMANDS = ("init-demo", "init-models", "generate", "import-model")
# Set (to anything but "" or "0") to start without converting the bundled SmolLM2 (tests' own `up` runs).
SKIP_BUNDLED_MODEL_ENV = "TUNEDECK_SKIP_BUNDLED_MODEL"


def migrate() -> None:
    from alembic import command
    from alembic.config import Config

    from app.bootstrap import ensure_demo_dataset

    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    command.upgrade(config, "head")
    ensure_demo_dataset()


def api_command(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "app.main:app", "--host", host, "--port", str(port),
            "--log-level", "warning", "--timeout-graceful-shutdown", "3"]


def worker_cli_command(argv: list[str]) -> list[str]:
    """The commands that load torch (WORKER_COMMANDS) run as `python -m worker.cli`, with the same arguments."""
    return [sys.executable, "-m", "worker.cli", *argv]


def serve_command() -> list[str]:
    return [sys.executable, "-m", "worker.serve"]


def worker_command(queues: str, name: str = "tunedeck@%h") -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", queues,
            "--concurrency", "1", "--loglevel", "INFO", "-n", name, "--without-gossip", "--without-mingle"]


def _stop(children: list[subprocess.Popen[bytes]], timeout: float = 15.0) -> None:
    for child in reversed(children):
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in reversed(children):
        try:
            child.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _print_first_admin(env: dict[str, str]) -> None:
    """With no account configured, make one so the quick start can log in; say so once."""
    if env.get("TUNEDECK_ADMIN_EMAIL"):
        return
    from sqlmodel import Session

    from app.auth.users import first_admin_if_none
    from app.db import make_engine
    from app.settings import Settings

    url = Settings(data_dir=env["TUNEDECK_DATA_DIR"]).resolved_database_url
    with Session(make_engine(url)) as session:
        created = first_admin_if_none(session)
    if created:
        print(f"Created the first admin: log in as {created[0]} with password {created[1]}\n"
              "(shown only now; add users with `tunedeck create-user`)", flush=True)


def _wait_for_api(host: str, port: int, children: list[subprocess.Popen[bytes]], timeout: float = 60) -> None:
    """Print the URL only once it answers."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and all(c.poll() is None for c in children):
        try:
            httpx.get(f"http://{host}:{port}/healthz", timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.2)


def _init_bundled_model(env: dict[str, str]) -> None:
    """SmolLM2-135M-Instruct, converted on the first start (before the worker: no job sees it half-made).

    Never stops the start: without it (package missing, conversion failed) the demo model still works."""
    if env.get(SKIP_BUNDLED_MODEL_ENV, "") not in ("", "0"):
        return
    done = subprocess.run([sys.executable, "-m", "app.cli", "init-models"], env=env, check=False)
    if done.returncode != 0:
        print("starting without SmolLM2-135M-Instruct (see above); `tunedeck init-models` tries again",
              file=sys.stderr, flush=True)


def up() -> int:
    """Embedded Redis (unless TUNEDECK_REDIS_URL is set), migrations, API, one worker and the inference process."""
    from app.embedded_redis import free_port, start_redis
    from app.settings import get_settings

    settings = get_settings()
    data_dir = settings.resolved_data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TUNEDECK_DATA_DIR": str(data_dir)}
    children: list[subprocess.Popen[bytes]] = []
    serve: _Restarted | None = None
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        if not settings.redis_url:
            port = free_port()
            children.append(start_redis(data_dir / "redis", port))
            env["TUNEDECK_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
            print(f"Started Redis on port {port}", flush=True)
        subprocess.run([sys.executable, "-m", "app.cli", "migrate"], env=env, check=True)
        _print_first_admin(env)
        print("Preparing the demo model…", flush=True)
        subprocess.run([sys.executable, "-m", "app.cli", "init-demo"], env=env, check=True)
        _init_bundled_model(env)
        children.append(subprocess.Popen(worker_command(settings.worker_queues), env=env))
        children.append(subprocess.Popen(api_command(settings.host, settings.port), env=env))
        serve = _Restarted(serve_command(), env) if settings.serve else None
        _wait_for_api(settings.host, settings.port, children)
        print(f"Tunedeck is running at http://{settings.host}:{settings.port}  (Ctrl-C to stop)", flush=True)
        while not stopping:
            for child in children:
                if child.poll() is not None:
                    print(f"{child.args[0] if isinstance(child.args, list) else child.args} exited "
                          f"with code {child.returncode}; stopping", file=sys.stderr, flush=True)
                    return 1
            if serve is not None:
                serve.check()
            time.sleep(0.5)
        return 0
    except subprocess.CalledProcessError as exc:
        print(f"start-up step failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if serve is not None:
            _stop([serve.process])
        _stop(children)


class _Restarted:
    """The inference process: restarted when it dies (a crash or a kill mid-answer must not need a person),
    with a growing pause when it keeps dying at once; training never depends on it."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.command, self.env = command, env
        self.pause = 1.0
        self.process = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        self.started = time.monotonic()
        return subprocess.Popen(self.command, env=self.env)

    def check(self) -> None:
        if self.process.poll() is None:
            return
        lived = time.monotonic() - self.started
        self.pause = 1.0 if lived > 60 else min(self.pause * 2, 60.0)
        print(f"the inference process exited with code {self.process.returncode}; restarting it in "
              f"{self.pause:.0f} s", file=sys.stderr, flush=True)
        time.sleep(self.pause)
        self.process = self._start()


def accounts(args: argparse.Namespace) -> int:
    from sqlmodel import Session

    from app.auth.users import AccountError, create_token, create_user, user_by_email
    from app.db import get_engine

    with Session(get_engine()) as session:
        try:
            if args.command == "create-user":
                user = create_user(session, args.email, args.password, is_admin=args.admin)
                print(f"created {'admin' if user.is_admin else 'user'} {user.email}")
                return 0
            user = user_by_email(session, args.email)
            if user is None:
                raise AccountError(f"no user with email {args.email}")
            print(create_token(session, user, args.name)[1])
            return 0
        except AccountError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1


def build_parser() -> argparse.ArgumentParser:
    """Every `tunedeck` command and its flags (worker.cli parses its own, WORKER_COMMANDS, with this too)."""
    parser = argparse.ArgumentParser(prog="tunedeck", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="run Redis, the API and a worker on this machine")
    api = sub.add_parser("api", help="run the web server")
    api.add_argument("--host")
    api.add_argument("--port", type=int)
    worker = sub.add_parser("worker", help="run a Celery worker")
    worker.add_argument("--queues", help="comma-separated queues (default: TUNEDECK_WORKER_QUEUES)")
    worker.add_argument("--name", default="tunedeck@%h")
    sub.add_parser("serve", help="run the inference process: base models held once, adapters on demand, "
                                 "answers for /v1/chat/completions and the playground")
    sub.add_parser("migrate", help="create or upgrade the database schema")
    create_user = sub.add_parser("create-user", help="add a user who can log in")
    create_user.add_argument("--email", required=True)
    create_user.add_argument("--password", required=True)
    create_user.add_argument("--admin", action="store_true", help="may see every job and edit catalogs")
    create_token = sub.add_parser("create-token", help="print a new API token for a user")
    create_token.add_argument("--email", required=True)
    create_token.add_argument("--name", default="created on the command line")
    sub.add_parser("init-demo", help="build the demo model under the data dir")
    sub.add_parser("init-models", help="convert the bundled SmolLM2-135M-Instruct GGUF into a model folder "
                                       "(once; `up` runs it unless TUNEDECK_SKIP_BUNDLED_MODEL=1)")
    gen = sub.add_parser("generate", help="load a downloaded artifact and continue a prompt")
    gen.add_argument("--adapter", required=True, help="artifact folder (or zip)")
    gen.add_argument("--base", help="base model folder or hub id (default: from the adapter)")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--max-new-tokens", type=int, default=32)
    imp = sub.add_parser("import-model", help="convert a GGUF file into a model folder (dequantised to float32)")
    imp.add_argument("--gguf", required=True, type=Path, help="path of the .gguf file")
    imp.add_argument("--name", help="model folder name (default: the file name without its quantisation tag)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from app.settings import get_settings

    settings = get_settings()
    if args.command == "up":
        return up()
    if args.command == "api":
        os.execv(sys.executable, api_command(args.host or settings.host, args.port or settings.port))
    if args.command == "worker":
        os.execv(sys.executable, worker_command(args.queues or settings.worker_queues, args.name))
    if args.command == "serve":
        os.execv(sys.executable, serve_command())
    if args.command == "migrate":
        migrate()
        print("database is up to date")
        return 0
    if args.command in {"create-user", "create-token"}:
        return accounts(args)
    if args.command in WORKER_COMMANDS:
        os.execv(sys.executable, worker_cli_command(sys.argv[1:] if argv is None else argv))
    return 2


if __name__ == "__main__":
    sys.exit(main())

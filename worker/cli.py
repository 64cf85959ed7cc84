"""The `tunedeck` commands whose code is the worker's: `init-demo`, `init-models`, `generate` and
`import-model` (torch, transformers).

`tunedeck` (app.cli) parses every command; these it hands to this module
(`python -m worker.cli <the same arguments>`), since app/ imports nothing
from worker/. Same parser, same flags, same output.
"""
from __future__ import annotations

import argparse
import logging
import sys

from app.cli import WORKER_COMMANDS, build_parser


def init_demo_model() -> None:
    from app.storage import models_dir
    from worker.demo_model import ensure_demo_model

    ensure_demo_model(models_dir())


def init_models() -> int:
    from app.storage import models_dir
    from worker.bundled_model import ensure_bundled_model

    return ensure_bundled_model(models_dir(), say=lambda line: print(line, flush=True))


def generate(args: argparse.Namespace) -> int:
    from worker.generate import generate_text

    text = generate_text(args.adapter, args.base, args.prompt, args.max_new_tokens)
    print(text)
    if not text.strip():
        print("(the model ended the sequence at once: it produced no text)", file=sys.stderr)
    return 0


def import_model(args: argparse.Namespace) -> int:
    from app.storage import models_dir
    from worker.gguf_import import GgufImportError, import_gguf

    try:
        folder = import_gguf(args.gguf, models_dir(), args.name, progress=lambda line: print(line, flush=True))
    except GgufImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(folder)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command not in WORKER_COMMANDS:
        print(f"worker.cli runs {', '.join(WORKER_COMMANDS)}; use `tunedeck {args.command}`", file=sys.stderr)
        return 2
    if args.command == "init-demo":
        init_demo_model()
        return 0
    if args.command == "init-models":
        return init_models()
    if args.command == "import-model":
        return import_model(args)
    return generate(args)


if __name__ == "__main__":
    sys.exit(main())

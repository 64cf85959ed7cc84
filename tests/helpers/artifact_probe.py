"""Load a download the way a user would, in a fresh Python process, and print its next-token logits.

Shared by the trainer-level and the API-level method tests: the artifact is
loaded by the standard libraries (transformers, peft) or, for bottleneck
adapters, by our documented public loader, never by the trainer's code.
"""
from __future__ import annotations

import atexit
import functools
import json
import os
import select
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]

PROBE_SCRIPT = textwrap.dedent(
    """
    import json, logging, sys, torch
    from pathlib import Path
    from transformers import AutoModelForCausalLM, AutoTokenizer
    kind, artifact, prompt, options = sys.argv[1], Path(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
    tokenizer = AutoTokenizer.from_pretrained(artifact)
    if kind == "model":
        model = AutoModelForCausalLM.from_pretrained(artifact, dtype=torch.float32)
    elif kind == "bottleneck":
        # Our public loader; the base is the one adapter_config.json names.
        from worker.bottleneck import from_pretrained
        model = from_pretrained(artifact)
    else:
        from peft import PeftModel
        base = json.loads((artifact / "adapter_config.json").read_text())["base_model_name_or_path"]
        if kind == "qlora":
            # The base quantised as in training (the job's options), then the adapter, as peft documents.
            from transformers import BitsAndBytesConfig
            logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
            quantization = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type=options["quant_type"],
                bnb_4bit_use_double_quant=options["double_quant"],
                bnb_4bit_compute_dtype=getattr(torch, options["compute_dtype"]),
            )
            base_model = AutoModelForCausalLM.from_pretrained(
                base, quantization_config=quantization, dtype=torch.float32, device_map="cpu"
            )
            # On CPUs with AVX512-BF16, bitsandbytes repacks 4-bit weights for a CPU inference kernel
            # that needs out_features % 32 == 0 (the demo MLP has 688); the trainer keeps it off
            # (worker.methods.qlora.without_cpu_packed_inference), and so does this load.
            for module in base_model.modules():
                if hasattr(module, "support_avx512bf16_for_cpu"):
                    module.support_avx512bf16_for_cpu = False
        else:
            base_model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        model = PeftModel.from_pretrained(base_model, artifact)
    model.eval()
    with torch.no_grad():
        logits = model(**tokenizer(prompt, return_tensors="pt")).logits
    print(json.dumps(logits[0, -1].tolist()))
    """
)


# The libraries every probe needs take ~7 s of CPU to import, far more than a probe itself. One
# process per test process imports them once and forks a child per probe: each probe still runs in
# a process that never saw the trainer or another artifact (nothing but these imports precedes the
# fork, not one tensor op), as a fresh `python -c PROBE_SCRIPT` would.
ZYGOTE_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever an import prints must not reach the protocol
    import torch, transformers, peft  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401
    from peft import PeftModel  # noqa: F401
    probe = sys.argv[1]
    protocol.write("ready\\n")
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                out = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                os.dup2(out, 1)
                os.dup2(err, 2)
                if request["env"] is not None:
                    os.environ.clear()
                    os.environ.update(request["env"])
                sys.argv = ["-c", *request["args"]]
                exec(compile(probe, "<probe>", "exec"), {"__name__": "__main__"})
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                import traceback
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        protocol.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\\n")
    """
)
ZYGOTE_TIMEOUT = 300


class _Zygote:
    def __init__(self) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE_SCRIPT, PROBE_SCRIPT], cwd=REPO_ROOT, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        atexit.register(self.close)
        assert self._reply() == "ready"

    def _reply(self) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], ZYGOTE_TIMEOUT)
        line = self.proc.stdout.readline() if ready else ""
        assert line, f"the probe process gave no answer (exit code {self.proc.poll()})"
        return line.strip()

    def run(self, args: list[str], env: Mapping[str, str] | None) -> tuple[int, str, str]:
        assert self.proc.stdin is not None
        with tempfile.TemporaryDirectory(prefix="tunedeck-probe-") as folder:
            out, err = Path(folder) / "stdout", Path(folder) / "stderr"
            request = {"args": args, "env": dict(env) if env is not None else None,
                       "stdout": str(out), "stderr": str(err)}
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            returncode = json.loads(self._reply())["returncode"]
            return returncode, out.read_text(), err.read_text()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@functools.cache
def _zygote() -> _Zygote:
    return _Zygote()


def probe_in_fresh_process(
    kind: str, artifact: Path, prompt: str, options: Mapping[str, Any], env: Mapping[str, str] | None = None
) -> list[float]:
    """`kind`: "model" (save_pretrained folder), "peft", "qlora" (PEFT folder for a 4-bit base), "bottleneck".

    The probe runs PROBE_SCRIPT in a process of its own, forked from one that has only imported
    torch, transformers and peft (see ZYGOTE_SCRIPT)."""
    returncode, stdout, stderr = _zygote().run([kind, str(artifact), prompt, json.dumps(dict(options))], env)
    assert returncode == 0, stderr[-3000:]
    return json.loads(stdout.strip().splitlines()[-1])

"""The trainer imports what a job needs and no more: the database code only when a model ships its own code."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.trainer import REPO_ROOT

pytestmark = pytest.mark.unit

PROBE = """
import json, sys
import worker.train.loop
from app.catalog.trust import remote_code_allowed
allowed = remote_code_allowed(sys.argv[1])
print(json.dumps({"allowed": allowed, "loaded": sorted(m for m in ("sqlmodel", "sqlalchemy", "app.db", "app.models")
                                                       if m in sys.modules)}))
"""


def test_a_job_on_a_model_without_code_of_its_own_never_imports_the_database(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.splitlines()[-1]) == {"allowed": False, "loaded": []}

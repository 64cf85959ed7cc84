"""The disk fills while a checkpoint is written: the job fails saying so, and the checkpoint
before it is intact (complete, loadable, listed), with no half-written folder left behind.

The job's checkpoint folder is a small tmpfs that holds one checkpoint and a
bit (a real ENOSPC from the kernel). Where mounting is not permitted, the
trainer's `diskfull@stepN` fault hook stops the write halfway with ENOSPC instead.
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from safetensors.torch import load

from tests.helpers.chaos_stack import chaos_stack, submit, wait_status
from tests.helpers.api import job_body

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

# One demo LoRA checkpoint is ~0.98 MB; this fits checkpoint-2 and fills up during checkpoint-4.
TMPFS_SIZE = "1080k"


def _mount_small_disk(folder: Path) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(folder)],
                              check=False, capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _unmount(folder: Path) -> None:
    for _ in range(20):  # a process that just exited may still hold the mount for a moment
        if subprocess.run(["umount", str(folder)], check=False, capture_output=True).returncode == 0:
            return
        time.sleep(0.5)
    subprocess.run(["umount", "-l", str(folder)], check=False)  # detached now, freed once nothing uses it


@pytest.mark.timeout(240)
def test_disk_full_during_a_checkpoint_fails_the_job_and_keeps_the_previous_one(tmp_path: Path) -> None:
    with chaos_stack(tmp_path, worker=False) as stack, stack.client() as client:
        job_id = submit(client, job_body(hyperparameters={"max_steps": 8, "batch_size": 4, "checkpoint_every": 2,
                                                          "keep_checkpoints": 3}))
        folder = stack.data_dir / "jobs" / job_id / "checkpoints"
        mounted = _mount_small_disk(folder)
        try:
            stack.start_worker(extra_env={} if mounted else {"TUNEDECK_FAULT": "diskfull@step4"})
            failed = wait_status(client, job_id, {"succeeded", "failed", "cancelled"}, 180)
            listed = client.get(f"/api/v1/jobs/{job_id}/checkpoints").json()
            contents = sorted(p.name for p in folder.iterdir())
            previous = folder / "checkpoint-2"
            state = json.loads((previous / "state.json").read_text())
            weights = load((previous / "trainable.safetensors").read_bytes())  # no mmap: the mount must go
        finally:
            stack.stop("worker")
            if mounted:
                _unmount(folder)

    assert failed["status"] == "failed", failed
    assert "No space left on device" in failed["error"], failed["error"]
    assert failed["progress"]["step"] == 4
    assert contents == ["checkpoint-2"], contents  # no tmp-checkpoint-4-* debris, no half checkpoint-4
    assert state["step"] == 2 and weights
    assert [c["name"] for c in listed.get("data", listed.get("checkpoints", []))] == ["checkpoint-2"], listed

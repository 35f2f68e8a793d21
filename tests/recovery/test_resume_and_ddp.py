"""Real process-level checks: SIGKILL mid-epoch then --resume; 2-process DDP under torchrun."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from torchslim.checkpoint import load_checkpoint

TRAIN = ["-m", "torchslim.cli", "--threads", "1", "train", "--model", "lenet300", "--dataset", "digits", "--quiet", "--no-augment"]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _metrics(path: Path) -> dict:
    return json.loads(path.with_suffix(".json").read_text())["metrics"]


def _step(path):
    """The training step stored in a checkpoint's header. One read: the trainer replaces the file
    atomically while this polls, so two reads could see two different files."""
    data = path.read_bytes()
    meta = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    return json.loads(meta["__metadata__"]["torchslim_train_state"])["step"]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path: Path):
    args = ["--epochs", "5", "--batch-size", "32", "--checkpoint-every", "7"]
    ref = tmp_path / "ref.safetensors"
    subprocess.run([sys.executable, *TRAIN, *args, "--out", str(ref)], check=True, env=_env(), timeout=600)

    run_dir, out = tmp_path / "run", tmp_path / "resumed.safetensors"
    cmd = [sys.executable, *TRAIN, *args, "--out", str(out), "--run-dir", str(run_dir)]
    proc = subprocess.Popen(cmd, env=_env())
    last = run_dir / "last.safetensors"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if last.exists() and last.stat().st_mtime > 0:
            if _step(last) >= 50:  # 40 steps per epoch: past epoch 1, checkpoints every 7 steps are mid-epoch
                break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    killed_step = _step(last)
    assert killed_step % 40 != 0 or killed_step >= 50  # a mid-run checkpoint, not the end

    subprocess.run(cmd + ["--resume"], check=True, env=_env(), timeout=600)
    a, b = _metrics(ref)["test_accuracy"], _metrics(out)["test_accuracy"]
    assert abs(a - b) <= 0.1
    m1, _ = load_checkpoint(ref)
    m2, _ = load_checkpoint(out)
    diff = max(float((x - y).abs().max()) for x, y in zip(m1.state_dict().values(), m2.state_dict().values(), strict=True))
    assert diff < 1e-5


@pytest.mark.slow
def test_ddp_two_processes_matches_one_process(tmp_path: Path):
    args = ["--epochs", "3", "--batch-size", "64"]
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    subprocess.run([sys.executable, *TRAIN, *args, "--out", str(one)], check=True, env=_env(), timeout=600)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    subprocess.run([*torchrun, *TRAIN, *args, "--out", str(two)], check=True, env=_env(), timeout=600)
    m1, m2 = _metrics(one), _metrics(two)
    assert m2["world_size"] == 2 and m1["world_size"] == 1
    # Same global batch, same samples per step (DistributedSampler shards = single-process
    # batches), so the runs agree up to float summation order.
    assert abs(m1["test_accuracy"] - m2["test_accuracy"]) <= 0.34  # at most one of 300 test digits
    w1, _ = load_checkpoint(one)
    w2, _ = load_checkpoint(two)
    assert max(float((x - y).abs().max()) for x, y in zip(w1.state_dict().values(), w2.state_dict().values(), strict=True)) < 1e-4

    bad = subprocess.run([*torchrun, *TRAIN, "--epochs", "1", "--batch-size", "63", "--out", str(tmp_path / "x.safetensors")],
                         env=_env(), timeout=600, capture_output=True, text=True)
    assert bad.returncode != 0
    assert "not divisible by the world size 2" in bad.stderr
    assert "Traceback" not in bad.stderr.split("torchslim: error")[0][-2000:] or "torchslim: error" in bad.stderr

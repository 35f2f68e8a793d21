"""The sensitivity sweep: one layer changed at a time, cached, identical when sharded over ranks."""

import json
import os
import socket
import subprocess
import sys

import pytest

from torchslim.measure.metrics import compute_metric
from torchslim.models import create_model
from torchslim.planning.sensitivity import candidates, sweep
from torchslim.planning.space import Choice, make_space


def _setup(train_tiny, digits):
    model = train_tiny("lenet300", 6)
    space = make_space(model, "size", calibration=False, ratios=(0.5, 0.9))
    val = digits[1]

    def score(m):
        return compute_metric(m.eval(), val, "accuracy")["value"]

    return model, space, score


def test_every_option_is_measured_and_drops_grow_with_the_ratio(train_tiny, digits, tmp_path):
    model, space, score = _setup(train_tiny, digits)
    sens = sweep(model, space, score, calib=None, example=digits[1].images[:1], higher_is_better=True,
                 metric="accuracy", samples=len(digits[1].labels), digest="d", cache_dir=tmp_path)  # fmt: skip
    assert len(sens.entries) == len(candidates(space)) == 3 * (2 + 2)  # 3 layers x (2 ratios + 2 bit widths)
    assert sens.baseline == pytest.approx(score(model))
    for layer in ("fc1", "fc2"):
        assert sens.get(layer, Choice(0.9, 32)).drop >= sens.get(layer, Choice(0.5, 32)).drop
    # INT8 weight-only costs next to nothing; 90% of the last layer's weights costs points
    assert max(abs(sens.get(n, Choice(0.0, 8)).drop) for n in space.layers) <= 1.0
    assert sens.get("fc3", Choice(0.9, 32)).drop > 2.0 > sens.get("fc3", Choice(0.0, 8)).drop
    assert sens.predicted_drop("fc3", Choice(0.9, 8)) == pytest.approx(
        max(sens.get("fc3", Choice(0.9, 32)).drop, 0) + max(sens.get("fc3", Choice(0.0, 8)).drop, 0))


def test_a_rerun_reads_the_cache_and_a_new_model_does_not(train_tiny, digits, tmp_path):
    model, space, score = _setup(train_tiny, digits)
    kw = dict(calib=None, example=digits[1].images[:1], higher_is_better=True, metric="accuracy", samples=10,
              digest="d", cache_dir=tmp_path)  # fmt: skip
    first = sweep(model, space, score, **kw)
    calls = []
    again = sweep(model, space, lambda m: calls.append(1) or 0.0, **kw)
    assert again.cached and not calls and [e.to_dict() for e in again.entries] == [e.to_dict() for e in first.entries]
    other = create_model("lenet300")  # other weights: another digest
    fresh = sweep(other, space, score, **kw)
    assert not fresh.cached
    assert len(list(tmp_path.glob("*.json"))) == 2


def _plan(tmp_path, name, launcher, model):
    out = tmp_path / name
    cmd = [*launcher, "-m", "torchslim.cli", "--threads", "1", "plan", "--model", model, "--data", "digits",
           "--max-drop", "3", "--objective", "size", "--search", "greedy", "--no-finetune", "--val-samples", "200",
           "--ratios", "0.5,0.9", "--no-cache", "--quiet", "--out", str(out)]  # fmt: skip
    dist_vars = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in dist_vars and not k.startswith("TORCHELASTIC")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads((out / "plan.json").read_text())


@pytest.mark.slow
def test_torchrun_two_ranks_give_the_numbers_of_one_process(train_tiny, tmp_path):
    from torchslim.checkpoint import save_checkpoint

    model = str(save_checkpoint(train_tiny("lenet300", 3), tmp_path / "m.safetensors", architecture="lenet300"))
    one = _plan(tmp_path, "one", [sys.executable], model)
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    two = _plan(tmp_path, "two", [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                                  f"--master_port={port}"], model)  # fmt: skip
    assert one["sensitivity"]["processes"] == 1 and two["sensitivity"]["processes"] == 2
    assert two["sensitivity"]["entries"] == one["sensitivity"]["entries"]
    assert len(one["sensitivity"]["entries"]) == 3 * 4
    assert two["recipe"] == one["recipe"] and two["chosen"]["value"] == one["chosen"]["value"]

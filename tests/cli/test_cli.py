"""The CLI: figures in --json, and every user mistake as one line on stderr with exit code 2."""

import json
from pathlib import Path

import pytest
import torch

from torchslim.checkpoint import save_checkpoint
from torchslim.cli import main
from torchslim.models import create_model


def run(capsys, *argv):
    rc = main(["--threads", "1", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_eval_json_has_the_figures(tmp_path: Path, capsys):
    ck = save_checkpoint(create_model("lenet5"), tmp_path / "m.safetensors", architecture="lenet5")
    rc, out, _ = run(capsys, "eval", str(ck), "--dataset", "digits", "--runs", "3", "--json", str(tmp_path / "e.json"))
    assert rc == 0 and "file size (bytes)" in out
    res = json.loads((tmp_path / "e.json").read_text())
    assert res["size_bytes"] == ck.stat().st_size
    assert res["params"] == 431_080 and res["macs"] == 2_293_000
    assert res["latency_ms_b1"] > 0 and res["latency_ms_b64"] > res["latency_ms_b1"]


def test_bench_times_a_static_int8_checkpoint_as_its_lowering(tmp_path: Path, capsys):
    from torchslim.data import load_dataset
    from torchslim.quantization import StaticInt8Config, quantize

    q, _ = quantize(create_model("lenet5"), StaticInt8Config(), calib_data=load_dataset("digits", "train").subset(32))
    ck = save_checkpoint(q, tmp_path / "q.safetensors", architecture="lenet5")
    fp = save_checkpoint(create_model("lenet5"), tmp_path / "m.safetensors", architecture="lenet5")
    rc, out, _ = run(capsys, "bench", str(ck), "--compare", str(fp), "--batch", "2", "--runs", "3", "--warmup", "1",
                     "--json", str(tmp_path / "b.json"))  # fmt: skip
    res = json.loads((tmp_path / "b.json").read_text())
    assert rc == 0 and "as compile_int8 vs" in out and "as eager" in out
    assert res["runtime"] == "compile_int8" and res["compare_runtime"] == "eager"
    assert len(res["rows"]) == 1 and res["rows"][0]["a"]["runs"] == 3 and res["rows"][0]["speedup_b_over_a"] > 0


def test_models_lists_counts(capsys):
    rc, out, _ = run(capsys, "models", "--family", "lenet")
    assert rc == 0 and "266,610" in out and "431,080" in out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["eval", "lenet-5"], "unknown model 'lenet-5'"),
        (["train", "--model", "resnet21", "--out", "x.safetensors"], "Did you mean: resnet20"),
        (["eval", "lenet5", "--data-dir", "/nonexistent"], "apt-get install dataset-fashion-mnist"),
        (["eval", "missing.safetensors"], "does not exist"),
        (["train", "--model", "lenet300", "--out", "x.safetensors", "--lr", "-1"], "TrainConfig: lr: Input should be greater than 0"),
    ],
)
def test_mistakes_exit_2_with_one_line(capsys, argv, message):
    rc, _, err = run(capsys, *argv)
    assert rc == 2
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_truncated_and_foreign_checkpoints(tmp_path: Path, capsys):
    ck = save_checkpoint(create_model("lenet300"), tmp_path / "m.safetensors", architecture="lenet300")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(ck.read_bytes()[:3000])
    rc, _, err = run(capsys, "eval", str(bad))
    assert rc == 2 and "truncated or corrupt" in err
    from safetensors.torch import save_file

    foreign = tmp_path / "f.safetensors"
    save_file({"w": torch.zeros(3)}, foreign)
    rc, _, err = run(capsys, "eval", str(foreign))
    assert rc == 2 and "not a torchslim checkpoint" in err


def test_train_writes_checkpoint_and_sidecar(tmp_path: Path, capsys):
    out = tmp_path / "b.safetensors"
    rc, _, _ = run(capsys, "train", "--model", "lenet300", "--dataset", "digits", "--out", str(out), "--epochs", "2",
                   "--batch-size", "64", "--no-augment", "--quiet")
    assert rc == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["architecture"]["name"] == "lenet300" and meta["dataset"] == "digits"
    assert meta["metrics"]["test_accuracy"] > 85.0 and len(meta["history"]) == 2
    assert meta["train_config"]["epochs"] == 2 and "torch" in meta["versions"]


def test_finetune_cli_refuses_distill_flags_without_teacher(tmp_path: Path, capsys):
    ck = save_checkpoint(create_model("lenet300"), tmp_path / "m.safetensors", architecture="lenet300")
    rc, _, err = run(capsys, "finetune", str(ck), "--out", str(tmp_path / "o.safetensors"), "--alpha", "0.5")
    assert rc == 2 and "need --teacher" in err
    assert not (tmp_path / "o.safetensors").exists()


def test_outputs_never_replace_an_input_or_an_existing_file(tmp_path: Path, capsys):
    ck = save_checkpoint(create_model("lenet300"), tmp_path / "in.safetensors", architecture="lenet300")
    before = ck.read_bytes()
    rc, _, err = run(capsys, "finetune", str(ck), "--out", str(ck), "--force", "--dataset", "digits", "--epochs", "1")
    assert rc == 2 and "would overwrite the input" in err
    rc, _, err = run(capsys, "quantize", str(ck), "--method", "int8-dynamic", "--out", str(ck.with_suffix(".json")), "--force")
    assert rc == 2 and "would overwrite the input" in err
    rc, _, err = run(capsys, "train", "--model", "lenet300", "--out", str(ck), "--dataset", "digits", "--epochs", "1")
    assert rc == 2 and "pass --force" in err
    rc, _, err = run(capsys, "quantize", str(ck), "--method", "int8_dynamic", "--out", str(tmp_path / "q.safetensors"),
                     "--report-json", str(ck), "--force")  # fmt: skip
    assert rc == 2 and "would overwrite the input" in err
    assert ck.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["in.json", "in.safetensors"]


def test_json_outputs_of_eval_bench_export_need_force_and_never_hit_the_input(tmp_path: Path, capsys):
    ck = save_checkpoint(create_model("lenet300"), tmp_path / "in.safetensors", architecture="lenet300")
    notes = tmp_path / "notes.json"
    notes.write_text("mine")
    before = ck.read_bytes()
    for argv in (["eval", str(ck), "--dataset", "digits", "--runs", "1"], ["bench", str(ck), "--runs", "1"],
                 ["export", str(ck), str(tmp_path / "m.onnx"), "--no-check"]):  # fmt: skip
        rc, out, err = run(capsys, *argv, "--json", str(notes))
        assert rc == 2 and f"{notes} exists; pass --force" in err and out == ""
        rc, _, err = run(capsys, *argv, "--json", str(ck), "--force")
        assert rc == 2 and "would overwrite the input" in err
    assert notes.read_text() == "mine" and ck.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.json", "in.safetensors", "notes.json"]
    rc, _, _ = run(capsys, "bench", str(ck), "--runs", "1", "--batch", "1", "--json", str(notes), "--force")
    assert rc == 0 and json.loads(notes.read_text())["rows"][0]["batch"] == 1


def test_same_seed_and_command_give_byte_identical_checkpoints(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blobs = {}
    for run_dir in ("a", "b"):
        (tmp_path / run_dir).mkdir()
        monkeypatch.chdir(tmp_path / run_dir)  # the same command line, in two folders
        rc, _, _ = run(capsys, "train", "--model", "lenet300", "--dataset", "digits", "--epochs", "1", "--out", "m.safetensors")
        assert rc == 0
        rc, _, _ = run(capsys, "finetune", "m.safetensors", "--dataset", "digits", "--epochs", "1", "--out", "f.safetensors")
        assert rc == 0
        blobs[run_dir] = [Path(n).read_bytes() for n in ("m.safetensors", "f.safetensors")]
        sidecar = json.loads(Path("f.json").read_text())
        assert sidecar["run"]["finetune_wall_s"] > 0  # timings live in the sidecar only
        assert json.loads(Path("m.json").read_text())["run"]["train_wall_s"] >= 0
    assert blobs["a"] == blobs["b"]

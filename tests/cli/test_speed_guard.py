"""``--require-speedup`` and the speed rows of compress, quantize, prune, eval and demo.

Timings are injected (``compare_latency`` replaced by fixed medians) so that every verdict here is
deterministic; what the flag does with a real measurement is in tests/recipes/test_speed_guard.py.
"""

import json
from pathlib import Path

import pytest

import torchslim.measure.speed as speed_mod
from torchslim.checkpoint import save_checkpoint
from torchslim.cli import main
from torchslim.measure.latency import LatencyStats
from torchslim.models import create_model


def run(capsys, *argv):
    rc = main(["--threads", "1", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _timings(monkeypatch, factor):
    """The model under test takes ``factor`` times as long as its reference (1 ms at batch 64, 0.1 ms at batch 1)."""
    calls = []

    def fake(ref, model, example, *, runs, warmup, threads):
        b = example.shape[0]
        base = 1.0 if b == 64 else 0.1
        calls.append(b)
        return LatencyStats(base, base, base, runs, b), LatencyStats(base * factor, base * factor, base * factor, runs, b), 1 / factor

    monkeypatch.setattr(speed_mod, "compare_latency", fake)
    return calls


@pytest.fixture()
def recipe(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("name: t\ndataset: digits\nlatency_runs: 2\nsteps:\n  - type: weight_sharing\n    bits: 3\n")
    return p


def test_compress_flags_a_slower_result_in_the_table_and_the_report(recipe, tmp_path, capsys, monkeypatch):
    calls = _timings(monkeypatch, 2.0)
    out = tmp_path / "out"
    rc, stdout, _ = run(capsys, "compress", "--model", "lenet300", "--recipe", str(recipe), "--out", str(out))
    assert rc == 0 and calls == [64, 1] * 2  # slower: measured a second time before it is flagged
    assert "speed-up b1 / b64" in stdout and "0.50x / 0.50x" in stdout
    assert "speed: SLOWER than FP32 (0.50x at batch 64; 0.50x at batch 1): weight-shared layers rebuild" in " ".join(stdout.split())
    assert "**Speed: SLOWER than FP32 (0.50x at batch 64" in (out / "report.md").read_text()
    assert json.loads((out / "report.json").read_text())["speed"]["slower"] is True


def test_compress_require_speedup_exits_2_and_writes_nothing(recipe, tmp_path, capsys, monkeypatch):
    _timings(monkeypatch, 2.0)
    out = tmp_path / "out"
    rc, _, err = run(capsys, "compress", "--model", "lenet300", "--recipe", str(recipe), "--out", str(out), "--quiet",
                     "--require-speedup", "1.0")  # fmt: skip
    assert rc == 2 and err.count("\n") == 1
    assert err.startswith("torchslim: error: the compressed model runs at 0.50x the speed of FP32 at batch 64 (2.000 ms "
                          "vs 1.000 ms, timed interleaved, 30 runs, measured twice: the faster kept; 0.50x at batch 1), below the required 1.00x: "
                          "weight-shared layers rebuild their FP32 weights")  # fmt: skip
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]
    _timings(monkeypatch, 0.5)  # twice as fast: the requirement is met
    rc, _, _ = run(capsys, "compress", "--model", "lenet300", "--recipe", str(recipe), "--out", str(out), "--quiet",
                   "--require-speedup", "1.5")  # fmt: skip
    assert rc == 0 and json.loads((out / "report.json").read_text())["speed"]["speedup"] == 2.0


@pytest.mark.parametrize("value", ["0", "-1", "nan", "fast"])
def test_a_bad_requirement_is_a_usage_error(value, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["quantize", "lenet300", "--method", "int8_dynamic", "--out", "x.safetensors", "--require-speedup", value])
    assert exc.value.code == 2
    assert "--require-speedup" in capsys.readouterr().err


def test_quantize_times_the_result_against_its_input(tmp_path, capsys, monkeypatch):
    calls = _timings(monkeypatch, 0.5)
    out, rep = tmp_path / "q.safetensors", tmp_path / "q-report.json"
    rc, stdout, _ = run(capsys, "quantize", "lenet300", "--method", "int8_dynamic", "--out", str(out),
                        "--report-json", str(rep))  # fmt: skip
    assert rc == 0 and calls == [64, 1]  # lenet300 declares its input shape: no data needed
    assert "speed-up vs FP32, batch 64 (interleaved)" in stdout and "2.00x" in stdout
    assert "speed: 2.00x faster than FP32 at batch 64 (2.00x at batch 1)" in stdout
    speed = json.loads(rep.read_text())["speed"]
    assert speed["speedup"] == 2.0 and speed["runs"] == 30
    assert "speed" not in json.loads(out.with_suffix(".json").read_text()).get("meta", {})  # checkpoints stay reproducible


def test_quantize_require_speedup_writes_no_file(tmp_path, capsys, monkeypatch):
    _timings(monkeypatch, 1 / 0.8)
    out, rep = tmp_path / "q.safetensors", tmp_path / "q-report.json"
    rc, _, err = run(capsys, "quantize", "lenet300", "--method", "weight_only", "--out", str(out), "--report-json",
                     str(rep), "--require-speedup", "1")  # fmt: skip
    assert rc == 2 and err.count("\n") == 1
    assert "the result runs at 0.80x the speed of FP32" in err and "weight-only INT4/INT8 layers unpack" in err
    assert list(tmp_path.iterdir()) == []


def test_quantize_require_speedup_needs_an_input_to_time(tmp_path, capsys):
    # A factory's model declares no input shape; without --data there is nothing to time it on.
    (tmp_path / "fac.py").write_text("from torchslim.models import create_model\n"
                                     "def make():\n    return create_model('lenet300')\n")  # fmt: skip
    rc, _, err = run(capsys, "quantize", f"{tmp_path / 'fac.py'}:make", "--method", "int8_dynamic", "--out",
                     str(tmp_path / "q.safetensors"), "--require-speedup", "1")  # fmt: skip
    assert rc == 2 and "--require-speedup:" in err and "pass --data" in err
    assert not (tmp_path / "q.safetensors").exists()


def test_prune_flags_unstructured_sparsity(tmp_path, capsys, monkeypatch):
    _timings(monkeypatch, 1 / 0.7)
    rc, stdout, _ = run(capsys, "prune", "lenet300", "--method", "magnitude", "--amount", "0.5", "--out",
                        str(tmp_path / "p.safetensors"))  # fmt: skip
    text = " ".join(stdout.split())
    assert rc == 0 and "SLOWER than FP32: 0.70x at batch 64" in text
    assert "speed: SLOWER than FP32 (0.70x at batch 64; 0.70x at batch 1): unstructured sparsity runs on dense kernels (50% zeros in" in text


def test_eval_require_speedup_needs_a_reference(tmp_path, capsys):
    ck = save_checkpoint(create_model("lenet300"), tmp_path / "m.safetensors", architecture="lenet300")
    rc, _, err = run(capsys, "eval", str(ck), "--data", "digits", "--require-speedup", "1")
    assert rc == 2 and "--require-speedup compares the checkpoint's speed with --reference" in err


def test_eval_against_a_reference(tmp_path, capsys, monkeypatch):
    ck = save_checkpoint(create_model("lenet300"), tmp_path / "m.safetensors", architecture="lenet300")
    ref = save_checkpoint(create_model("lenet300"), tmp_path / "fp32.safetensors", architecture="lenet300")
    js = tmp_path / "e.json"
    _timings(monkeypatch, 3.0)
    rc, _, err = run(capsys, "eval", str(ck), "--reference", str(ref), "--data", "digits", "--runs", "3", "--json",
                     str(js), "--require-speedup", "0.5")  # fmt: skip
    assert rc == 2 and f"{ck} runs at 0.33x the speed of FP32" in err and not js.exists()
    _timings(monkeypatch, 1.0)
    rc, stdout, _ = run(capsys, "eval", str(ck), "--reference", str(ref), "--data", "digits", "--runs", "3", "--json",
                        str(js), "--require-speedup", "0.5")  # fmt: skip
    assert rc == 0 and "speed-up vs FP32, batch 1 (interleaved)" in stdout and "no faster than FP32" in stdout
    speed = json.loads(js.read_text())["speed"]
    assert speed["speedup"] == 1.0 and speed["runs"] == 3 and speed["slower"] is False


def test_demo_passes_the_requirement_to_compress(tmp_path, capsys, monkeypatch):
    import torchslim.recipes
    import torchslim.training.baseline
    from torchslim.errors import SpeedError

    seen = {}

    def fake_compress(model, recipe, **kwargs):
        seen.update(kwargs)
        raise SpeedError("the compressed model runs at 0.98x the speed of FP32")

    monkeypatch.setattr(torchslim.training.baseline, "get_baseline", lambda name: (create_model(name), {}))
    monkeypatch.setattr(torchslim.recipes, "compress", fake_compress)
    recipe = str(Path(__file__).resolve().parents[2] / "recipes" / "demo.yaml")
    rc, _, err = run(capsys, "demo", "--out", str(tmp_path / "d"), "--recipe", recipe, "--require-speedup", "1.2")
    assert rc == 2 and seen["require_speedup"] == 1.2 and "0.98x the speed of FP32" in err

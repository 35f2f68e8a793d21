"""Encoders are just models: their methods run through quantize / prune / compress and the CLI."""

import json
import subprocess
import sys

import torch

from torchslim.methods import method_names
from torchslim.pruning import HeadPruningConfig, prune
from torchslim.quantization import SmoothQuantConfig, quantize
from torchslim.transformers import calibration_batches
from torchslim.transformers.corpus import load_sentences
from torchslim.transformers.testing import save_tiny_bert, tiny_bert, tiny_tokenizer


def test_encoder_methods_are_registered_verbs_and_steps():
    assert {"int8_smoothquant", "gptq"} <= set(method_names("quantize"))
    assert "prune_heads" in method_names("prune")


def test_quantize_and_prune_take_tokenized_dict_batches():
    tok = tiny_tokenizer()
    batches = [b.as_kwargs() for b in calibration_batches(tok, load_sentences(32), batch_size=16)]
    model = tiny_bert().eval()
    q, rep = quantize(model, SmoothQuantConfig(), calib_data=batches)
    assert rep.summary["quantized"] >= 12 and rep.summary["output_rel_error"] < 0.05
    p, rep = prune(model, HeadPruningConfig(head_fraction=0.5), calib_data=batches)
    with torch.no_grad():
        assert p(**batches[0]).last_hidden_state.shape == model(**batches[0]).last_hidden_state.shape


def test_cli_compress_an_hf_folder_on_a_sentences_file(tmp_path):
    folder = save_tiny_bert(tmp_path / "tiny")
    (tmp_path / "s.txt").write_text("\n".join(load_sentences(96)))
    r = subprocess.run(
        [sys.executable, "-m", "torchslim.cli", "compress", "--model", str(folder), "--data", str(tmp_path / "s.txt"),
         "--recipe", "recipes/minilm_int8.yaml", "--out", str(tmp_path / "out"), "--set", "latency_runs=2", "--quiet"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    stages = json.loads((tmp_path / "out" / "metrics.json").read_text())["stages"]
    assert [s["metric"] for s in stages] == ["fidelity", "fidelity"]
    assert stages[0]["metric_value"] > 0.9999 and 0.99 < stages[1]["metric_value"] <= 1.0
    assert stages[1]["size_bytes"] < 0.7 * stages[0]["size_bytes"]
    from torchslim.sources import resolve_model

    reloaded, _ = resolve_model(f"{folder}@{tmp_path / 'out' / 'model.safetensors'}")
    assert sum(type(m).__name__ == "SmoothedLinear" for m in reloaded.modules()) >= 12

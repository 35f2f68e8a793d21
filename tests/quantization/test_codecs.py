"""The static INT8 default per CPU kind, and a VNNI checkpoint loaded on a CPU without VNNI.

Both CPU paths run on any machine: the VNNI probe is patched. A model made under the patched
"VNNI" probe is only saved and inspected here, never run, so the test cannot saturate on AVX2.
"""

import warnings

import pytest
import torch

from torchslim.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from torchslim.quantization import StaticInt8Config, quantize
from torchslim.quantization import modules as qmodules
from torchslim.quantization.static_modules import QConv2d, QLinear


def _int8_layers(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, (QConv2d, QLinear))}


def _rel_error(a, b, x):
    with torch.no_grad():
        ya, yb = a(x), b(x)
    return float((ya - yb).norm() / yb.norm())


@pytest.mark.parametrize("vnni", [True, False])
def test_auto_range_is_8_bit_weights_only_with_vnni(lenet5, calib, monkeypatch, vnni):
    monkeypatch.setattr(qmodules, "_has_vnni", lambda: vnni)
    q, report = quantize(lenet5, StaticInt8Config(), calib_data=calib)
    layers = _int8_layers(q)
    assert len(layers) == 4
    widest = max(int(m.weight_int8.abs().max()) for m in layers.values())
    assert widest == (127 if vnni else 63)  # each layer's largest weight uses the top level
    assert {m.input_levels() for m in layers.values()} == {255}
    details = [e.detail for e in report.layers if e.action == "int8-static"]
    assert all(("7-bit range" in d) != vnni for d in details)


def test_vnni_checkpoint_loads_with_7_bit_weights_without_vnni(lenet5, calib, digits, tmp_path, monkeypatch):
    x = digits[2].images[:256]
    monkeypatch.setattr(qmodules, "_has_vnni", lambda: True)
    q8, _ = quantize(lenet5, StaticInt8Config(), calib_data=calib)
    path = tmp_path / "int8.safetensors"
    save_checkpoint(q8, path, architecture="lenet5")
    _, meta = read_checkpoint(path)
    assert meta["model_codecs"]["int8_needs_vnni"] == list(_int8_layers(q8))

    monkeypatch.setattr(qmodules, "_has_vnni", lambda: False)
    with pytest.warns(UserWarning, match=r"re-rounded to 7 bits") as caught:
        loaded, _ = load_checkpoint(path)
    assert "4 layer(s)" in str(caught[0].message)
    for name, m in _int8_layers(loaded).items():
        src = _int8_layers(q8)[name]
        assert int(m.weight_int8.abs().max()) <= 63
        assert torch.equal(m.weight_int8, torch.round(src.weight_int8.float() / 2).clamp(-63, 63).to(torch.int8))
        assert torch.equal(m.weight_scale, src.weight_scale * 2)
    # Safe here on any CPU (7-bit weights): the extra rounding costs little against float.
    q7, _ = quantize(lenet5, StaticInt8Config(reduce_range="weights"), calib_data=calib)
    err_loaded, err_q7 = _rel_error(loaded, lenet5, x), _rel_error(q7, lenet5, x)
    assert err_loaded < 0.05
    assert err_loaded < 1.5 * err_q7 + 0.005


def test_vnni_checkpoint_is_unchanged_with_vnni_and_7_bit_ones_never_warn(lenet5, calib, tmp_path, monkeypatch):
    monkeypatch.setattr(qmodules, "_has_vnni", lambda: True)
    q8, _ = quantize(lenet5, StaticInt8Config(), calib_data=calib)
    save_checkpoint(q8, tmp_path / "a.safetensors", architecture="lenet5")
    loaded, _ = load_checkpoint(tmp_path / "a.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(q8.state_dict().values(), loaded.state_dict().values(), strict=True))

    monkeypatch.setattr(qmodules, "_has_vnni", lambda: False)
    q7, _ = quantize(lenet5, StaticInt8Config(), calib_data=calib)
    save_checkpoint(q7, tmp_path / "b.safetensors", architecture="lenet5")
    assert "int8_needs_vnni" not in read_checkpoint(tmp_path / "b.safetensors")[1]["model_codecs"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded, _ = load_checkpoint(tmp_path / "b.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(q7.state_dict().values(), loaded.state_dict().values(), strict=True))

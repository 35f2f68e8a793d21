import copy

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from torchslim.quantization.modules import (
    Int8DynamicLinear,
    WeightOnlyLinear,
    pack_int4,
    quantize_weight_per_channel,
    unpack_int4,
)
from torchslim.quantization.static import Precision, quantize_weight


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("activation", ["per_token", "per_tensor"])
def test_int8_dynamic_linear_is_close_to_float_for_any_leading_shape(activation):
    lin = nn.Linear(384, 256)
    q = Int8DynamicLinear.from_float(lin, activation=activation)
    x = torch.randn(3, 5, 384)
    with torch.no_grad():
        assert q(x).shape == (3, 5, 256)
        assert _rel(q(x), lin(x)) < 0.03
    assert q.weight_int8.dtype == torch.int8 and q.weight_int8.shape == (256, 384)


def test_per_tensor_fused_kernel_matches_the_unfused_integer_path(monkeypatch):
    # On x86 per-tensor activations run FBGEMM's fused dynamic linear; the fallback computes the
    # same u8 x s8 product in separate passes. Both must agree with each other and follow weight edits.
    from torchslim.quantization import modules

    lin = nn.Linear(96, 40)
    q = Int8DynamicLinear.from_float(lin, activation="per_tensor")
    x = torch.randn(4, 7, 96)
    with torch.no_grad():
        fused = q(x)
        monkeypatch.setattr(modules, "_fbgemm_ready", lambda: False)
        split = q(x)
        monkeypatch.undo()
        assert _rel(fused, split) < 0.01 and _rel(fused, lin(x)) < 0.03
        q.weight_int8.zero_()  # the packed copy is rebuilt: the output is the bias alone
        assert torch.allclose(q(x), q.bias.expand(4, 7, 40), atol=1e-6)


def test_per_token_beats_per_tensor_when_rows_differ_in_scale():
    lin = nn.Linear(128, 64, bias=False)
    x = torch.randn(32, 128) * torch.logspace(-2, 1, 32)[:, None]  # rows span 3 decades
    with torch.no_grad():
        ref = lin(x)
        per_row = lambda y: ((y - ref).norm(dim=1) / ref.norm(dim=1)).max().item()  # noqa: E731
        tok = per_row(Int8DynamicLinear.from_float(lin, activation="per_token")(x))
        ten = per_row(Int8DynamicLinear.from_float(lin, activation="per_tensor")(x))
    assert tok < 0.05 and ten > 5 * tok


def test_int8_weight_per_channel_values():
    q, s = quantize_weight_per_channel(torch.tensor([[1.0, -0.5], [0.0, 0.25]]))
    assert q.tolist() == [[127, -64], [0, 127]]
    assert s.tolist() == pytest.approx([1 / 127, 0.25 / 127])


def test_per_channel_error_is_lower_than_per_tensor():
    torch.manual_seed(0)
    w = torch.randn(64, 100) * torch.logspace(-2, 0, 64)[:, None]  # channels of very different size
    errs = {}
    for pc in (True, False):
        q, s = quantize_weight(w, Precision(per_channel=pc))
        errs[pc] = _rel(q.float() * s[:, None], w)
    assert errs[True] < 0.02 and errs[False] > 3 * errs[True]
    # 7-bit weights (reduce_range="weights"): values stay in [-64, 63]
    q, _ = quantize_weight(w, Precision())
    assert int(q.max()) <= 63 and int(q.min()) >= -64


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 15), min_size=1, max_size=99))
def test_int4_pack_round_trip(values):
    t = torch.tensor(values, dtype=torch.uint8)
    packed = pack_int4(t)
    assert packed.numel() == (len(values) + 1) // 2
    assert unpack_int4(packed, len(values)).tolist() == values


@pytest.mark.parametrize("in_features", [64, 33, 784])
def test_int4_groupwise_error_bound_and_packed_storage(in_features):
    torch.manual_seed(0)
    lin = nn.Linear(in_features, 20)
    q = WeightOnlyLinear.from_float(lin, bits=4, group_size=32)
    assert q.weight_packed.dtype == torch.uint8 and q.weight_packed.shape == (20, (in_features + 1) // 2)
    groups = -(-in_features // 32)
    assert q.scale.shape == (20, groups) and q.scale.dtype == torch.float16
    w = lin.weight.detach()
    err = (q.dequantized_weight() - w).abs()
    step = q.scale.float().repeat_interleave(32, dim=1)[:, :in_features]
    assert bool((err <= step / 2 + 1e-6).all())
    x = torch.randn(8, in_features)
    with torch.no_grad():
        assert torch.allclose(q(x), nn.functional.linear(x, q.dequantized_weight(), lin.bias), atol=1e-5)


def test_int8_weight_only_is_more_precise_than_int4():
    lin = nn.Linear(256, 64)
    e8 = _rel(WeightOnlyLinear.from_float(lin, bits=8, group_size=128).dequantized_weight(), lin.weight.detach())
    e4 = _rel(WeightOnlyLinear.from_float(lin, bits=4, group_size=128).dequantized_weight(), lin.weight.detach())
    assert e8 < 0.005 < e4 < 0.1


def test_modules_deepcopy_and_state_dict_hold_integers():
    lin = nn.Linear(16, 8)
    for q in (Int8DynamicLinear.from_float(lin), WeightOnlyLinear.from_float(lin, bits=4, group_size=32)):
        x = torch.randn(4, 16)
        y = q(x)  # builds the prepacked cache, which must not break copying
        q2 = copy.deepcopy(q)
        assert torch.equal(q2(x), y)
        dtypes = {v.dtype for k, v in q.state_dict().items() if k in ("weight_int8", "weight_packed")}
        assert len(dtypes) == 1 and dtypes <= {torch.int8, torch.uint8}


def test_fused_kernel_choice_does_not_depend_on_inference_mode():
    # The engine probe is cached: when its first call came inside torch.inference_mode() it used to
    # fail on inference tensors and send every later call down the 2x slower unfused path.
    from torchslim.quantization import modules

    modules._fbgemm_ready.cache_clear()
    outside = modules._fbgemm_ready()
    modules._fbgemm_ready.cache_clear()
    with torch.inference_mode():
        inside = modules._fbgemm_ready()
        q = Int8DynamicLinear.from_float(nn.Linear(16, 4), activation="per_tensor")  # inference-tensor buffers
        y = q(torch.randn(3, 16))
    assert inside == outside and y.shape == (3, 4)


def test_7_bit_weights_get_8_bit_activations():
    # 2 * 255 * 63 < 32767: with weights in [-63, 63] no u8 x s8 pair sum saturates int16, so
    # activations keep 8 bits even without VNNI; their error is then about half the 7-bit one.
    from torchslim.quantization.modules import _act_levels, act_qmax, weights_fit_7_bits

    assert _act_levels(True) == 127 and _act_levels(False) == act_qmax()
    torch.manual_seed(0)
    lin = nn.Linear(256, 64, bias=False)
    x = torch.randn(64, 256)
    q = Int8DynamicLinear.from_float(lin)
    w7, s7 = quantize_weight_per_channel(lin.weight, bits=7)
    q.weight_int8.copy_(w7)
    q.weight_scale.copy_(s7)
    assert weights_fit_7_bits(q.weight_int8) and not weights_fit_7_bits(quantize_weight_per_channel(lin.weight)[0])
    with torch.no_grad():
        exact = x @ q.dequantized_weight().T  # the quantized weight with float activations
        err = _rel(q(x), exact)
        amax = x.abs().amax(1, keepdim=True)
        sim = {n: _rel((torch.round(x * n / amax) * amax / n) @ q.dequantized_weight().T, exact) for n in (127, 63)}
    assert abs(err - sim[127]) < 0.2 * sim[127] and err < 0.6 * sim[63]


def test_compile_int8_matches_eager_and_leaves_the_model_alone():
    from torchslim.quantization import compile_int8

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 96), nn.GELU(), nn.Linear(96, 32), nn.LayerNorm(32), nn.Linear(32, 16))
    x = torch.randn(8, 5, 64)
    q = copy.deepcopy(model)
    q[0] = Int8DynamicLinear.from_float(model[0])  # per token
    q[2] = Int8DynamicLinear.from_float(model[2], activation="per_tensor")
    w7, s7 = quantize_weight_per_channel(model[4].weight, bits=7)
    q[4] = Int8DynamicLinear.from_float(model[4])
    q[4].weight_int8.copy_(w7)
    q[4].weight_scale.copy_(s7)
    before = {k: v.clone() for k, v in q.state_dict().items()}
    compiled = compile_int8(q)
    with torch.inference_mode():
        eager, ref, got = q(x), model(x), compiled(x)
    assert got.shape == (8, 5, 16)
    assert _rel(got, eager) < 0.01 and _rel(got, ref) < 0.05
    assert all(torch.equal(before[k], v) for k, v in q.state_dict().items())
    assert all(m._compiled_qmax is None for m in q.modules() if isinstance(m, Int8DynamicLinear))

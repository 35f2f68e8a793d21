"""Reference arithmetic for static INT8 models, for tolerances that hold on every x86 CPU kind.

Two checks replace bounds measured on one machine:

* :func:`record_integer_layers` + :func:`assert_layers_exact` - every integer layer call of a
  forward, recomputed in float64 from the same ``uint8`` input: the exact ``int32`` accumulator,
  then ``round_half_even(y / out_scale) + out_zp``. The kernels may differ from it by one step,
  and only where ``y / out_scale`` lies at a rounding tie (see :data:`TIE`).
* :func:`rounding_noise` - what the model's own quantization steps predict for its error against
  float: the float model (BatchNorm folded, the quantized weights) with every rounding of an
  activation replaced by independent uniform noise of one step (the classical additive-noise
  model of a quantizer, Widrow) and the same clipping.

Why these instead of one relative-error bound: the unit-test models are trained on the test
machine, and float training on AVX-512 and on AVX2 takes different summation orders, so after one
epoch the two CPU kinds hold different ResNet-8s (weights apart by up to 0.26 when trained with
``ATEN_CPU_CAPABILITY=avx2``) whose quantization error differs (0.060 vs 0.052 with the same
kernels); the kernels themselves agree with the exact arithmetic on both paths (VNNI, and oneDNN
held to AVX2 with ``ONEDNN_MAX_CPU_ISA=AVX2``) to within a few tie roundings per million outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from torchslim.quantization import QConv2d, QLinear
from torchslim.quantization.graph import insert_points, make_plan, trace
from torchslim.quantization.static import prepare_float

# Largest distance of ``y / out_scale`` from a rounding tie (x.5) at which the kernel may round
# the other way than exact arithmetic. oneDNN evaluates ``acc * (x_scale * w_scale) + bias``
# (+ the shortcut's ``(s - s_zp) * s_scale``) and ``* (1 / out_scale)`` in float32: the int32
# accumulator converts exactly (|acc| < 2^24 here), then a handful of roundings, each within
# 2^-24 relative of terms that stay below 2^10 output steps (measured: under 450), so at most
# ~2^-12 steps apart; 2^-10 leaves 4x. (Measured: every differing output within 1.3e-5 steps of a
# tie, about 1 output in 10^6, on VNNI and on AVX2 alike.)
TIE = 2.0**-10
UINT8_MAX = 255  # the kernels saturate their outputs to uint8, whatever act_levels is


@dataclass
class Call:
    layer: nn.Module
    kind: str  # conv | add | linear
    qx: torch.Tensor
    x_qp: tuple[float, int]
    shortcut: tuple[torch.Tensor, float, int] | None
    out_float: bool
    out: torch.Tensor


def record_integer_layers(monkeypatch: Any) -> list[Call]:
    """Record every integer kernel call (inputs copied before the call: the add's accumulator is overwritten)."""
    calls: list[Call] = []
    conv_fwd, conv_add, lin_fwd = QConv2d.integer_forward, QConv2d.integer_add, QLinear.integer_forward

    def conv(self, qx, xs, xz, *, out_float=None, unfolded=False):
        assert not unfolded, "record the eager model, whose convolutions get the image itself"
        qx0 = qx.clone()
        y = conv_fwd(self, qx, xs, xz, out_float=out_float, unfolded=unfolded)
        of = self.out_float if out_float is None else out_float
        calls.append(Call(self, "conv", qx0, (xs, xz), None, of, y.clone()))
        return y

    def add(self, qx, xs, xz, shortcut, a_s, a_z, **kw):
        qx0, sc0 = qx.clone(), shortcut.clone()
        y = conv_add(self, qx, xs, xz, shortcut, a_s, a_z, **kw)
        calls.append(Call(self, "add", qx0, (xs, xz), (sc0, a_s, a_z), False, y.clone()))
        return y

    def linear(self, qx, xs, xz):
        qx0 = qx.clone()
        y = lin_fwd(self, qx, xs, xz)
        calls.append(Call(self, "linear", qx0, (xs, xz), None, self.out_float, y.clone()))
        return y

    monkeypatch.setattr(QConv2d, "integer_forward", conv)
    monkeypatch.setattr(QConv2d, "integer_add", add)
    monkeypatch.setattr(QLinear, "integer_forward", linear)
    return calls


def exact_output(c: Call) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y, bound)``: the layer's output before any rounding, in float64 (in output steps for a
    uint8 output), and for a float output the bound on float32's evaluation error of it: a few
    roundings of 2^-24 relative to the summed terms' sizes."""
    m = c.layer
    xs, xz = c.x_qp
    w = m.weight_int8.double()
    x = c.qx.double() - xz
    if c.kind == "linear":
        acc, shape = x @ w.T, (-1,)  # [..., out]: per-channel terms broadcast along the last dim
    else:
        acc, shape = F.conv2d(x, w, None, m.stride, m.padding, m.dilation, m.groups), (1, -1, 1, 1)
    main = acc * xs * m.weight_scale.double().view(shape)
    bias = m.bias.double().view(shape) if m.bias is not None else torch.zeros(())
    y, size = main + bias, main.abs() + bias.abs()
    if c.shortcut is not None:
        s, a_s, a_z = c.shortcut
        other = (s.double() - a_z) * a_s
        y, size = y + other, size + other.abs()
    if getattr(m, "fuse", "none") in ("relu", "add_relu"):
        y = y.clamp(min=0)
    if c.out_float:
        return y, 8 * 2.0**-24 * size
    return y / m.activation_qparams(1)[0], torch.zeros(())


def assert_layers_exact(calls: list[Call], names: dict[int, str]) -> None:
    """Each call's output against exact arithmetic from its own input (see the module docstring)."""
    assert calls, "no integer layer ran"
    for c in calls:
        name = names.get(id(c.layer), "?")
        y, err = exact_output(c)
        if c.out_float:
            assert bool(((c.out.double() - y).abs() <= err).all()), name
            continue
        _, out_zp = c.layer.activation_qparams(1)
        want = (torch.round(y) + out_zp).clamp(0, UINT8_MAX)
        diff = (c.out.double() - want).abs()
        at_tie = (y - torch.floor(y) - 0.5).abs() <= TIE
        assert int(diff.max()) <= 1, (name, int(diff.max()))
        assert bool(at_tie[diff > 0].all()), (name, int((diff > 0).sum()), int((diff > 0).sum() - at_tie[diff > 0].sum()))


class _Noise(nn.Module):
    """An activation quantization point of the float model: clipping as the integer model clips,
    rounding replaced by uniform noise of one step."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.qp: tuple[float, int, int] = (1.0, 0, UINT8_MAX)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        s, zp, hi = self.qp
        return torch.clamp(t + (torch.rand_like(t) - 0.5) * s, -zp * s, (hi - zp) * s)


@dataclass
class Prediction:
    rel_error: float  # mean over draws of |noisy - float| / |float|
    flips: float  # mean over draws of the argmax changes


@torch.no_grad()
def rounding_noise(model: nn.Module, q: nn.Module, x: torch.Tensor, draws: int = 8, seed: int = 0) -> Prediction:
    """The error the quantization steps of ``q`` predict for it against ``model`` on ``x``."""
    fm, _ = prepare_float(model, True)
    mods = dict(fm.named_modules())
    layers = {n: m for n, m in q.named_modules() if isinstance(m, (QConv2d, QLinear))}
    for n, m in layers.items():
        mods[n].weight.data = m.dequantized_weight()
    gm = trace(fm)
    plan = make_plan(gm, list(layers))
    qps: dict[str, tuple[float, int, int]] = {}
    for n, lp in plan.layers.items():
        m = layers[n]
        # A float input is quantized and clamped to act_levels; a kernel's output saturates at 255.
        qps.setdefault(plan.input_point(lp), (*m.activation_qparams(0), m.act_levels))
        if plan.other_point(lp) is not None:
            qps.setdefault(plan.other_point(lp), (*m.activation_qparams(2), m.act_levels))
    for n, lp in plan.layers.items():
        if not lp.out_float:
            qps[lp.out_node] = (*layers[n].activation_qparams(1), UINT8_MAX)
    # Average pooling of integers rounds the mean again, at its input's quantization.
    for node in gm.graph.nodes:
        pool = node.op == "call_module" and isinstance(gm.get_submodule(node.target), (nn.AdaptiveAvgPool2d, nn.AvgPool2d))
        if pool and node.args[0].name in qps:
            qps[node.name] = qps[node.args[0].name]
    points = insert_points(gm, list(qps), factory=_Noise)
    for p, mod in points.items():
        mod.qp = qps[p]
    ref = model(x)
    gen_state = torch.get_rng_state()
    torch.manual_seed(seed)
    errs, flips = [], []
    for _ in range(draws):
        y = gm(x)
        errs.append(float((y - ref).norm() / ref.norm()))
        flips.append(int((y.argmax(1) != ref.argmax(1)).sum()))
    torch.set_rng_state(gen_state)
    return Prediction(sum(errs) / draws, sum(flips) / draws)


def flip_bound(expected: float) -> float:
    """Most argmax changes consistent with ``expected`` ones: each near-tie sample flips or not
    independently, so the count is about Poisson; mean + 3 sigma, + 1 for a mean near zero."""
    return expected + 3 * math.sqrt(expected) + 1

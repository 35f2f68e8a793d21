"""Rewrite an exported FP32 ONNX graph so torchslim's quantized Linear layers run as integer ops.

torch.onnx cannot trace integer kernels, so export goes in two steps:

1. every quantized Linear in a copy of the model is replaced by a plain ``nn.Linear`` holding
   exactly its dequantized weight, and the copy is exported as FP32;
2. each ``MatMul``/``Gemm`` whose weight initializer equals one of those dequantized weights
   (matched by value, so names chosen by the exporter do not matter) is rewritten:

   * weights become an INT8 initializer with per-channel (or per-group) scales feeding
     ``DequantizeLinear`` -- the QDQ form ONNX Runtime fuses into integer GEMMs;
   * activations get ``DynamicQuantizeLinear`` -> ``DequantizeLinear`` (per-tensor dynamic),
     ``QuantizeLinear`` -> ``DequantizeLinear`` with the calibrated scale (static), or an
     explicit per-token quantizer followed by ``MatMulInteger`` (per-token dynamic, which has
     no QDQ form in ONNX);
   * a smoothing vector that could not be folded into the previous layer becomes a ``Mul``.

A quantized layer declares what it is through :class:`QuantLinearSpec`, returned by its
``onnx_spec()`` method.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from torchslim.errors import CompatibilityError

Activation = Literal["none", "dynamic-tensor", "dynamic-token", "static"]


@dataclass
class QuantLinearSpec:
    """What a quantized Linear computes: ``y = A(x * input_scale) @ (q * scale).T + bias``.

    ``qweight`` is int8 ``[out, in]`` (INT4 values stored in int8 too); ``scale`` is ``[out]``
    (per channel) or ``[out, in // group_size]`` (group-wise). ``A`` is the activation quantizer.
    """

    qweight: torch.Tensor
    scale: torch.Tensor
    bias: torch.Tensor | None
    activation: Activation = "none"
    act_scale: float | None = None  # static only
    act_zero_point: int = 0  # static only; asymmetric uint8
    input_scale: torch.Tensor | None = None  # [in], multiplied into x first (unfolded smoothing)
    group_size: int | None = None
    zero_point: torch.Tensor | None = None  # uint8, same shape as scale (asymmetric weights)
    bits: int = 8
    float_weight: bool = False  # qweight is a float weight kept as is (only input_scale applies)

    def _expand(self, t: torch.Tensor) -> torch.Tensor:
        if t.dim() == 2:
            return t.float().repeat_interleave(self.group_size or 1, dim=1)[:, : self.qweight.shape[1]]
        return t.float().unsqueeze(1)

    def dequantized(self) -> torch.Tensor:
        q = self.qweight.float()
        if self.zero_point is not None:
            q = q - self._expand(self.zero_point)
        return q * self._expand(self.scale)


def weight_digest(a: np.ndarray) -> str:
    """SHA-1 of an array's float32 bytes: how a rewriter finds a layer's weight in the exported graph."""
    return hashlib.sha1(np.ascontiguousarray(a, dtype=np.float32).tobytes()).hexdigest()


def weight_digests(specs: dict[str, Any], *, transposed: Any = lambda spec: True) -> dict[str, tuple[str, bool]]:
    """digest of the weight as it appears in ONNX -> (module name, transposed?).

    ``transposed(spec)``: whether the exporter may also write that layer's weight transposed
    (MatMul holds ``W.T``; a convolution's kernel never is).
    """
    out: dict[str, tuple[str, bool]] = {}
    for name, spec in specs.items():
        w = spec.dequantized().numpy()
        forms = ((w.T, True), (w, False)) if transposed(spec) else ((w, False),)
        for arr, is_t in forms:
            d = weight_digest(arr)
            if d in out and out[d][0] != name:
                raise CompatibilityError(f"layers {out[d][0]} and {name} have identical quantized weights; export cannot tell them apart")
            out[d] = (name, is_t)
    return out


class GraphEditor:
    """Fresh tensor names and new initializers in an ONNX graph (both export rewriters use it)."""

    suffix = "ts"

    def __init__(self, graph: Any) -> None:
        from onnx import numpy_helper

        self.g = graph
        self.nph = numpy_helper
        self._n = 0

    def fresh(self, base: str) -> str:
        self._n += 1
        return f"{base}__{self.suffix}{self._n}"

    def const(self, base: str, arr: np.ndarray) -> str:
        name = self.fresh(base)
        self.g.initializer.append(self.nph.from_array(arr, name))
        return name

    def replace_nodes(self, nodes: list[Any]) -> None:
        """Make ``nodes`` the graph's nodes and drop the initializers nothing reads any more
        (the float weights the quantized layers replaced)."""
        del self.g.node[:]
        self.g.node.extend(nodes)
        used = {i for n in self.g.node for i in n.input} | {o.name for o in self.g.output}
        keep = [i for i in self.g.initializer if i.name in used]
        del self.g.initializer[:]
        self.g.initializer.extend(keep)


class _Graph(GraphEditor):
    suffix = "tsq"

    def __init__(self, model: Any) -> None:
        super().__init__(model.graph)
        self.inits = {i.name: i for i in self.g.initializer}
        # Work shared by layers that read the same tensor with the same smoothing vector (the
        # query/key/value projections): computed once, reused by name.
        self.shared: dict[tuple[str, ...], Any] = {}


def rewrite_quantized(model: Any, specs: dict[str, QuantLinearSpec], *, per_token_form: str = "normalized") -> dict[str, str]:
    """Rewrite ``model`` (an ``onnx.ModelProto``) in place; returns {module name: ONNX form}.

    A layer the exported outputs do not use has no MatMul in the graph and is reported as
    ``"not in graph"``.
    """
    from onnx import TensorProto, helper

    digests = weight_digests(specs)
    G = _Graph(model)
    found: dict[str, str] = {}
    new_nodes: list[Any] = []
    for node in G.g.node:
        if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2 or node.input[1] not in G.inits:
            new_nodes.append(node)
            continue
        arr = G.nph.to_array(G.inits[node.input[1]])
        hit = digests.get(weight_digest(arr)) if arr.dtype == np.float32 and arr.ndim == 2 else None
        if node.op_type == "Gemm" and hit is not None:
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            if hit[1] == bool(trans_b):  # Gemm(transB=1) holds W as is, i.e. "not transposed"
                hit = None
        if hit is None:
            new_nodes.append(node)
            continue
        name, _ = hit
        spec = specs[name]
        new_nodes.extend(_quantized_nodes(G, node, name, spec, helper, TensorProto, per_token_form))
        found[name] = "float" if spec.float_weight else spec.activation
    for name in specs:  # layers the exported output does not depend on (e.g. an unused pooler)
        found.setdefault(name, "not in graph")
    G.replace_nodes(new_nodes)
    return found


def _quantized_nodes(G: _Graph, node: Any, name: str, spec: QuantLinearSpec, helper: Any, TP: Any, per_token_form: str) -> list[Any]:
    base = name.replace(".", "_")
    x, y = node.input[0], node.output[0]
    nodes = []
    if spec.input_scale is not None:
        key = ("smooth", x, weight_digest(spec.input_scale.float().numpy()))
        if key not in G.shared:
            xs = G.fresh(base + "_smoothed")
            nodes.append(helper.make_node("Mul", [x, G.const(base + "_input_scale", spec.input_scale.float().numpy())], [xs]))
            G.shared[key] = xs
        x = G.shared[key]
    if spec.float_weight:  # keep the float MatMul/Gemm, fed by the scaled input
        kept = type(node)()
        kept.CopyFrom(node)
        kept.input[0] = x
        return [*nodes, kept]
    wdtype = torch.uint8 if spec.zero_point is not None else torch.int8
    qw = spec.qweight.to(wdtype).numpy().T.copy()  # [in, out] as MatMul wants
    # The legacy exporter writes a 3-D Linear as MatMul followed by its own bias Add (kept as
    # is), and a 2-D one as Gemm with the bias as input C (re-added here).
    bias = spec.bias.detach().float().numpy() if (spec.bias is not None and node.op_type == "Gemm") else None
    out = G.fresh(base + "_mm") if bias is not None else y
    if spec.activation == "dynamic-token" and per_token_form == "integer":
        nodes.extend(_per_token_matmul(G, base, x, qw, spec, out, helper, TP))
    elif spec.activation == "dynamic-token":
        nodes.extend(_per_token_normalized(G, base, x, qw, spec, out, helper, fixed=per_token_form == "normalized-fixed"))
    else:
        zp = spec.zero_point.numpy() if spec.zero_point is not None else np.zeros(tuple(spec.scale.shape), np.int8)
        if spec.scale.dim() == 2:  # group-wise: blocked DequantizeLinear (opset 21)
            wdq_in = [G.const(base + "_qweight", qw), G.const(base + "_wscale", spec.scale.float().numpy().T.copy()),
                      G.const(base + "_wzp", zp.T.copy())]  # fmt: skip
            wdq = helper.make_node("DequantizeLinear", wdq_in, [G.fresh(base + "_w")], axis=0, block_size=int(spec.group_size or 1))
        else:
            wdq_in = [G.const(base + "_qweight", qw), G.const(base + "_wscale", spec.scale.float().numpy()),
                      G.const(base + "_wzp", zp)]  # fmt: skip
            wdq = helper.make_node("DequantizeLinear", wdq_in, [G.fresh(base + "_w")], axis=1)
        nodes.append(wdq)
        if spec.activation == "dynamic-tensor":
            q, s, z = G.fresh(base + "_xq"), G.fresh(base + "_xs"), G.fresh(base + "_xz")
            nodes.append(helper.make_node("DynamicQuantizeLinear", [x], [q, s, z]))
            xd = G.fresh(base + "_xdq")
            nodes.append(helper.make_node("DequantizeLinear", [q, s, z], [xd]))
            x = xd
        elif spec.activation == "static":
            s = G.const(base + "_xs", np.array(spec.act_scale, np.float32))
            z = G.const(base + "_xz", np.array(spec.act_zero_point, np.uint8))  # asymmetric uint8
            q, xd = G.fresh(base + "_xq"), G.fresh(base + "_xdq")
            nodes.append(helper.make_node("QuantizeLinear", [x, s, z], [q]))
            nodes.append(helper.make_node("DequantizeLinear", [q, s, z], [xd]))
            x = xd
        nodes.append(helper.make_node("MatMul", [x, wdq.output[0]], [out]))
    if bias is not None:
        nodes.append(helper.make_node("Add", [out, G.const(base + "_bias", bias)], [y]))
    return nodes


def _per_token_matmul(G: _Graph, base: str, x: str, qw: np.ndarray, spec: QuantLinearSpec, out: str, helper: Any, TP: Any) -> list[Any]:
    # Symmetric int8 per row: s = max|x| / 127, q = round(x / s); y = (q @ W) * s * w_scale + b.
    # ONNX has no per-token QuantizeLinear for a runtime scale, so this is spelled out.
    if spec.scale.dim() != 1 or spec.zero_point is not None:
        raise CompatibilityError(f"{base}: per-token activations need symmetric per-channel weight scales")
    f = G.fresh
    absx, mx, s, xs, r, c, qi, acc, accf, y1 = (f(base + t) for t in ("_abs", "_max", "_s", "_xs", "_r", "_c", "_q", "_acc", "_accf", "_y1"))
    nodes = [
        helper.make_node("Abs", [x], [absx]),
        helper.make_node("ReduceMax", [absx], [mx], axes=[-1], keepdims=1),
        helper.make_node("Div", [mx, G.const(base + "_127", np.array(127.0, np.float32))], [s]),
        helper.make_node("Max", [s, G.const(base + "_eps", np.array(1e-8, np.float32))], [s + "_c"]),
        helper.make_node("Div", [x, s + "_c"], [xs]),
        helper.make_node("Round", [xs], [r]),
        helper.make_node("Cast", [r], [c], to=TP.INT8),
        helper.make_node("MatMulInteger", [c, G.const(base + "_qweight", qw)], [acc]),
        helper.make_node("Cast", [acc], [accf], to=TP.FLOAT),
        helper.make_node("Mul", [accf, s + "_c"], [y1]),
    ]
    ws = G.const(base + "_wscale", spec.scale.float().numpy())
    nodes.append(helper.make_node("Mul", [y1, ws], [out]))
    return nodes


def _per_token_normalized(G: _Graph, base: str, x: str, qw: np.ndarray, spec: QuantLinearSpec, out: str, helper: Any,
                          fixed: bool = False) -> list[Any]:  # fmt: skip
    # Per-token scales through ONNX Runtime's fused dynamic INT8 GEMM: divide each row by its
    # max |x| (rows then share one range, [-1, 1]), quantize per tensor with
    # DynamicQuantizeLinear -> DequantizeLinear -> MatMul (fused into DynamicQuantizeMatMul),
    # multiply the rows back. Same levels per row as symmetric per-token INT8, 4 cheap passes.
    if spec.scale.dim() != 1 or spec.zero_point is not None:
        raise CompatibilityError(f"{base}: per-token activations need symmetric per-channel weight scales")
    f = G.fresh
    nodes = []
    key = ("rownorm", x)
    if key not in G.shared:
        absx, mx, r, xs = (f(base + t) for t in ("_abs", "_max", "_r", "_xs"))
        nodes += [
            helper.make_node("Abs", [x], [absx]),
            helper.make_node("ReduceMax", [absx], [mx], axes=[-1], keepdims=1),
            helper.make_node("Max", [mx, G.const(base + "_eps", np.array(1e-8, np.float32))], [r]),
            helper.make_node("Div", [x, r], [xs]),
        ]
        G.shared[key] = (xs, r)
    xs, r = G.shared[key]
    q, s, z, xd, y0, wdq = (f(base + t) for t in ("_xq", "_xsc", "_xzp", "_xdq", "_y0", "_w"))
    if fixed:  # rows lie in [-1, 1]: a constant scale saves DynamicQuantizeLinear's min/max pass
        s = G.const(base + "_xsc", np.array(2.0 / 255.0, np.float32))
        z = G.const(base + "_xzp", np.array(128, np.uint8))
        quant = helper.make_node("QuantizeLinear", [xs, s, z], [q])
    else:
        quant = helper.make_node("DynamicQuantizeLinear", [xs], [q, s, z])
    return nodes + [
        quant,
        helper.make_node("DequantizeLinear", [q, s, z], [xd]),
        helper.make_node("DequantizeLinear", [G.const(base + "_qweight", qw), G.const(base + "_wscale", spec.scale.float().numpy()),
                                              G.const(base + "_wzp", np.zeros(qw.shape[1], np.int8))], [wdq], axis=1),
        helper.make_node("MatMul", [xd, wdq], [y0]),
        helper.make_node("Mul", [y0, r], [out]),
    ]  # fmt: skip

"""Static INT8 CNNs (``QConv2d`` / ``QLinear``) to ONNX in QDQ form, for ONNX Runtime's integer kernels.

Export goes in the same two steps as :mod:`torchslim.export.qdq`:

1. :func:`float_proxy` replaces each static layer by a float ``nn.Conv2d`` / ``nn.Linear``
   holding exactly its dequantized weight and bias, and torch.onnx exports that copy;
2. :func:`rewrite_static` walks the exported graph in order and inserts the quantization the
   torchslim model performs, with its own (scale, zero point):

   * weights: an INT8 initializer -> ``DequantizeLinear`` (per output channel, ``axis=0``), the
     bias an INT32 initializer at scale ``input_scale * weight_scale`` (the form ONNX Runtime's
     QDQ selectors need to fuse ``QLinearConv`` / ``QGemm`` / ``QLinearMatMul``);
   * a float input a layer quantizes itself (row 0 of ``qparams``) gets a private
     ``QuantizeLinear -> DequantizeLinear``; an input that is already quantized (the output of
     an earlier layer, possibly through max-pool / flatten / ReLU) is used as is, as the
     ``QTensor`` is in PyTorch;
   * outputs (row 1) get ``QuantizeLinear -> DequantizeLinear``, after the fused ReLU;
   * max-pool, average-pool, flatten and reshape of a quantized tensor are followed by a
     Q/DQ pair with the same parameters (exact: they keep values on the grid), so ONNX Runtime
     runs them on uint8;
   * a ReLU of a quantized tensor whose zero point is 0 is dropped (exact no-op);
   * a residual ``+`` fused into the conv before it (``fuse="add"/"add_relu"``): the shortcut,
     if float, is quantized with row 2, then ``Add -> [Relu] -> Q/DQ`` with the output row.
     ONNX has no convolution with a sum post-op, so the conv's own result must either stay
     float (``residual="float"``: exact, but that conv runs in FP32) or be requantized
     (``residual="requant"``: the conv becomes ``QLinearConv`` and the add ``QLinearAdd``; the
     extra rounding uses a 255-level grid spanning the output range minus the shortcut range,
     both known from calibration, so no data is needed at export time).

Saturation: torchslim clamps activations to ``[0, act_levels]`` (127 on CPUs whose int8 kernels
use 7-bit activations); ONNX's uint8 Q clamps at 255. Values inside the calibrated range are
identical; only activations beyond it differ (ONNX Runtime keeps them, PyTorch saturates).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn as nn

from torchslim.errors import CompatibilityError
from torchslim.export.qdq import GraphEditor, weight_digest, weight_digests

Residual = Literal["float", "requant"]
_PASS_OPS = {"MaxPool", "Flatten", "Reshape", "AveragePool", "GlobalAveragePool", "Squeeze", "Unsqueeze", "Identity"}


@dataclass
class StaticLayerSpec:
    """What one static INT8 layer computes, read from a ``QConv2d`` / ``QLinear``."""

    kind: Literal["conv", "linear"]
    qweight: torch.Tensor  # int8, [out, ...]
    scale: torch.Tensor  # [out]
    bias: torch.Tensor | None
    fuse: str
    out_float: bool
    input_qp: tuple[float, int]
    output_qp: tuple[float, int]
    accum_qp: tuple[float, int]
    act_levels: int

    def dequantized(self) -> torch.Tensor:
        shape = (-1,) + (1,) * (self.qweight.dim() - 1)
        return self.qweight.float() * self.scale.float().view(shape)


def _is_static(m: nn.Module) -> bool:
    from torchslim.quantization.static_modules import QConv2d, QLinear

    return isinstance(m, (QConv2d, QLinear))


def static_specs(model: nn.Module) -> dict[str, StaticLayerSpec]:
    """The static INT8 layers of ``model`` by module name (empty if it has none)."""
    from torchslim.quantization.static_modules import QConv2d

    out: dict[str, StaticLayerSpec] = {}
    for name, m in model.named_modules():
        if not _is_static(m):
            continue
        if isinstance(m, QConv2d) and m.groups != 1:
            raise CompatibilityError(f"{name}: grouped INT8 convolutions (groups={m.groups}) cannot be exported to ONNX QDQ yet")
        qp = [tuple(r) for r in m.qparams.tolist()]
        out[name] = StaticLayerSpec(
            kind="conv" if isinstance(m, QConv2d) else "linear", qweight=m.weight_int8.detach().clone(),
            scale=m.weight_scale.detach().float().clone(), bias=None if m.bias is None else m.bias.detach().float().clone(),
            fuse=m.fuse, out_float=bool(m.out_float), act_levels=int(m.act_levels),
            input_qp=(float(qp[0][0]), int(qp[0][1])), output_qp=(float(qp[1][0]), int(qp[1][1])),
            accum_qp=(float(qp[2][0]), int(qp[2][1])),
        )  # fmt: skip
    return out


def float_proxy(proxy: nn.Module, specs: dict[str, StaticLayerSpec]) -> nn.Module:
    """Replace, in place, each static layer of ``proxy`` (a copy) by a float layer with its dequantized weight.

    ReLUs stay out: :func:`rewrite_static` places them (and the quantizers) itself.
    """
    mods = dict(proxy.named_modules())
    for name, spec in specs.items():
        m = mods[name]
        w = spec.dequantized()
        new: nn.Module
        if spec.kind == "conv":
            new = nn.Conv2d(m.in_channels, m.out_channels, tuple(m.kernel_size), tuple(m.stride), tuple(m.padding),
                            tuple(m.dilation), m.groups, bias=spec.bias is not None)  # fmt: skip
        else:
            new = nn.Linear(m.in_features, m.out_features, bias=spec.bias is not None)
        with torch.no_grad():
            new.weight.copy_(w)
            if spec.bias is not None:
                new.bias.copy_(spec.bias)
        parent, _, attr = name.rpartition(".")
        setattr(proxy.get_submodule(parent) if parent else proxy, attr, new)
    return proxy


class _Rewriter(GraphEditor):
    suffix = "tsc"

    def __init__(self, proto: Any, specs: dict[str, StaticLayerSpec], residual: Residual) -> None:
        from onnx import helper

        super().__init__(proto.graph)
        self.helper = helper
        self.specs, self.residual = specs, residual
        self.inits = {i.name: i for i in self.g.initializer}
        for n in self.g.node:  # small constants may come as Constant nodes instead
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                self.inits.setdefault(n.output[0], n.attribute[0].t)
            elif n.op_type == "Identity" and n.input[0] in self.inits:  # the exporter's shared copies
                self.inits.setdefault(n.output[0], self.inits[n.input[0]])
        self.nodes: list[Any] = []
        self.qp: dict[str, tuple[float, int]] = {}  # tensor -> grid it lies on (a DQ output)
        self.alias: dict[str, str] = {}  # dropped node output -> its input
        self.pending: dict[str, str] = {}  # float conv output -> layer whose fused add consumes it
        self.found: dict[str, str] = {}
        self.digests = weight_digests(specs, transposed=lambda spec: spec.kind != "conv")
        self.grid: dict[tuple[float, int], tuple[str, str]] = {}  # (scale, zero point) -> initializer names

    def node(self, op: str, inputs: list[str], outputs: list[str], **attrs: Any) -> None:
        self.nodes.append(self.helper.make_node(op, inputs, outputs, **attrs))

    def qdq(self, src: str, qp: tuple[float, int], out: str) -> None:
        """``out = DQ(Q(src))`` on the grid ``qp``; ``out`` is then known to be quantized.

        One scale / zero-point initializer pair per grid: a layer's output grid is also the next
        layer's input grid and every pass-through op's, so most pairs are shared.
        """
        if qp not in self.grid:
            self.grid[qp] = (self.const("act_scale", np.array(qp[0], np.float32)), self.const("act_zp", np.array(qp[1], np.uint8)))
        s, z = self.grid[qp]
        q = self.fresh(out + "_q")
        self.node("QuantizeLinear", [src, s, z], [q])
        self.node("DequantizeLinear", [q, s, z], [out])
        self.qp[out] = qp

    def quantized_input(self, x: str, qp: tuple[float, int], base: str) -> str:
        """``x`` as the layer sees it: as is if already quantized, else privately quantized."""
        if x in self.qp:
            return x
        xq = self.fresh(base + "_in")
        self.qdq(x, qp, xq)
        return xq

    def layer_of(self, node: Any) -> tuple[str, bool] | None:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2 or node.input[1] not in self.inits:
            return None
        arr = self.nph.to_array(self.inits[node.input[1]])
        if arr.dtype != np.float32:
            return None
        hit = self.digests.get(weight_digest(arr))
        if hit is None:
            return None
        if node.op_type == "Gemm":
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            if hit[1] == bool(trans_b):
                return None
        elif node.op_type == "MatMul" and not hit[1]:
            return None
        return hit

    def run(self) -> dict[str, str]:
        for node in list(self.g.node):
            for i, name in enumerate(node.input):
                if name in self.alias:
                    node.input[i] = self.alias[name]
            hit = self.layer_of(node)
            if hit is not None:
                self.layer(node, hit[0])
            elif node.op_type == "Add" and any(i in self.pending for i in node.input):
                self.fused_add(node)
            elif node.op_type == "Relu" and node.input[0] in self.qp and self.qp[node.input[0]][1] == 0:
                self.alias[node.output[0]] = node.input[0]  # ReLU of a grid with zero point 0: no-op
            elif node.op_type in _PASS_OPS and node.input and node.input[0] in self.qp:
                qp = self.qp[node.input[0]]
                y = node.output[0]
                node.output[0] = self.fresh(y + "_f")
                self.nodes.append(node)
                self.qdq(node.output[0], qp, y)
            else:
                self.nodes.append(node)
        if self.pending:
            raise CompatibilityError(f"no residual add found after {sorted(set(self.pending.values()))} in the exported graph")
        outputs = {o.name for o in self.g.output}
        for o in outputs & set(self.alias):  # a dropped ReLU produced a graph output: keep its name
            self.node("Identity", [self.alias[o]], [o])
        for name in self.specs:
            self.found.setdefault(name, "not in graph")
        self.replace_nodes(self.nodes)
        return self.found

    def layer(self, node: Any, name: str) -> None:
        spec = self.specs[name]
        base = name.replace(".", "_")
        x = self.quantized_input(node.input[0], spec.input_qp, base)
        xs = self.qp[x][0]
        q = spec.qweight.numpy()
        axis = 0
        if node.op_type == "MatMul":  # the exporter's [in, out] weight
            q, axis = np.ascontiguousarray(q.T), 1
        wname = self.fresh(base + "_w")
        self.node("DequantizeLinear", [self.const(base + "_qweight", q.astype(np.int8)),
                                       self.const(base + "_wscale", spec.scale.numpy().astype(np.float32)),
                                       self.const(base + "_wzp", np.zeros(spec.scale.numel(), np.int8))],
                  [wname], axis=axis)  # fmt: skip
        inputs = [x, wname]
        if len(node.input) > 2 and node.input[2]:
            # INT32 bias at scale x_scale * w_scale: ONNX Runtime's QDQ selectors need it to fuse
            # the integer kernel (error <= half a step of the accumulator, far below one output step).
            b = self.nph.to_array(self.inits[node.input[2]]).astype(np.float64)
            bscale = (xs * spec.scale.double().numpy()).astype(np.float32)
            qb = np.clip(np.round(b / bscale.astype(np.float64)), -(2**31), 2**31 - 1).astype(np.int32)
            bname = self.fresh(base + "_b")
            self.node("DequantizeLinear", [self.const(base + "_qbias", qb), self.const(base + "_bscale", bscale),
                                           self.const(base + "_bzp", np.zeros(qb.shape, np.int32))], [bname], axis=0)  # fmt: skip
            inputs.append(bname)
        y = node.output[0]
        raw = self.fresh(y + "_acc")
        attrs = {a.name: self.helper.get_attribute_value(a) for a in node.attribute}
        self.node(node.op_type, inputs, [raw], **attrs)
        if spec.fuse in ("add", "add_relu"):
            if self.residual == "requant":
                lo, hi = self._range(spec.output_qp, spec.act_levels)
                alo, ahi = self._range(spec.accum_qp, spec.act_levels)
                lo, hi = min(lo - ahi, 0.0), max(hi - alo, 0.0)
                s = max(hi - lo, 1e-12) / 255.0
                self.qdq(raw, (s, int(np.clip(round(-lo / s), 0, 255))), y)
                self.found[name] = f"int8 {node.op_type}, requantized before the residual add"
            else:
                self.node("Identity", [raw], [y])
                self.found[name] = f"float {node.op_type} (exact) + int8 residual add"
            self.pending[y] = name
            return
        if spec.fuse == "relu":
            r = self.fresh(y + "_relu")
            self.node("Relu", [raw], [r])
            raw = r
        if spec.out_float:
            self.node("Identity", [raw], [y])
            self.found[name] = f"int8 {node.op_type} -> float"
        else:
            self.qdq(raw, spec.output_qp, y)
            self.found[name] = f"int8 {node.op_type}"

    @staticmethod
    def _range(qp: tuple[float, int], levels: int) -> tuple[float, float]:
        s, z = qp
        return (0 - z) * s, (levels - z) * s

    def fused_add(self, node: Any) -> None:
        a, b = node.input[0], node.input[1]
        conv_out, other = (a, b) if a in self.pending else (b, a)
        name = self.pending.pop(conv_out)
        spec = self.specs[name]
        other = self.quantized_input(other, spec.accum_qp, name.replace(".", "_") + "_shortcut")
        y = node.output[0]
        s = self.fresh(y + "_sum")
        self.node("Add", [conv_out, other], [s])
        if spec.fuse == "add_relu":
            r = self.fresh(y + "_relu")
            self.node("Relu", [s], [r])
            s = r
        self.qdq(s, spec.output_qp, y)


def rewrite_static(proto: Any, specs: dict[str, StaticLayerSpec], *, residual: Residual = "requant") -> dict[str, str]:
    """Insert torchslim's static quantization into an exported float graph (in place).

    Returns {module name: ONNX form}; a layer the outputs do not depend on reads ``"not in graph"``.
    """
    return _Rewriter(proto, specs, residual).run()

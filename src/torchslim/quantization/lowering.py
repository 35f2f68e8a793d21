"""Lowering a static INT8 model to a flat graph of integer kernel calls (``compile_int8``'s CNN path).

The quantized model that ``quantize`` returns keeps the user's class and ``forward``; between
layers its activations travel as :class:`QTensor` objects that reach the integer code through
``__torch_function__`` and ``nn.Module`` calls. On a small CNN that Python dispatch is a large
part of a forward (``make bench-quantization`` times both runtimes side by side). Every scale and
zero point of a static model is fixed, so the graph can be resolved once instead:
:func:`lower_static` traces the quantized model with torch.fx (its integer layers as leaves),
follows which values are integers and at which quantization, and writes a new graph in which
activations are plain ``uint8`` tensors, each layer is a direct ``integer_forward`` /
``integer_add`` call with its quantization as constants, ReLU, pooling and reshapes run on the
integers, and everything else dequantizes its inputs and runs in float, as the eager model does.

Written here rather than with PT2E + Inductor: torchslim's integer layers call the same oneDNN
kernels eagerly and keep their fused residual adds; Inductor's quantized CNN lowering measured
slower than FP32 on ResNet-20 on this project's CPUs (see ENVIRONMENT.md).
"""

from __future__ import annotations

import builtins
import copy
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from torchslim.errors import CompatibilityError
from torchslim.quantization import kernels
from torchslim.quantization.graph import is_add
from torchslim.quantization.integer_ops import METADATA_ATTRS, METADATA_METHODS, op_for_node
from torchslim.quantization.static_modules import (
    QConv2d,
    QLinear,
    adaptive_avg_pool2d_uint8,
    avg_pool2d_uint8,
    dequantize_uint8,
    has_static_layers,
    max_pool2d_uint8,
    quantize_tensor,
    relu_uint8,
)  # fmt: skip

_POOL_ARGS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode")


def _is_2x2(pool: dict[str, Any]) -> bool:
    """Whether max pooling arguments mean a 2x2 window with stride 2, no padding, dilation or ceil mode."""
    def pair(v: Any) -> tuple[Any, ...]:
        return (v, v) if isinstance(v, int) else tuple(v) * (2 if len(tuple(v)) == 1 else 1)

    stride = pool.get("stride")
    return (pair(pool["kernel_size"]) == (2, 2) and (stride in (None, []) or pair(stride) == (2, 2))
            and pair(pool.get("padding", 0)) == (0, 0) and pair(pool.get("dilation", 1)) == (1, 1)
            and not pool.get("ceil_mode", False))  # fmt: skip


class _Tracer(fx.Tracer):
    """torch.fx's tracer with torchslim's quantized layers kept whole."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return type(m).__module__.startswith("torchslim.quantization") or super().is_leaf_module(m, qualname)


class _Q:
    """A value of the lowered graph that holds integers: ``node`` at ``(scale, zp)``."""

    __slots__ = ("node", "scale", "zp")

    def __init__(self, node: fx.Node, scale: float, zp: int) -> None:
        self.node, self.scale, self.zp = node, scale, zp


class _Pending:
    """A convolution planned to absorb the ``+`` that follows it (see ``PendingConv``)."""

    __slots__ = ("conv", "target", "qx", "scale", "zp")

    def __init__(self, conv: QConv2d, target: str, qx: fx.Node, scale: float, zp: int) -> None:
        self.conv, self.target, self.qx, self.scale, self.zp = conv, target, qx, scale, zp


class _Lowering:
    def __init__(self, root: nn.Module, traced: fx.Graph, native: Any) -> None:
        self.root, self.src = root, traced
        self.g = fx.Graph()
        self.env: dict[fx.Node, Any] = {}  # source node -> fx.Node (float or other value), _Q or _Pending
        self.attrs: dict[str, fx.Node] = {}
        self.floats: dict[int, fx.Node] = {}  # id of an env value (kept alive by env) -> its float node
        self.native = native  # the fused uint8 kernels (kernels.py), or None: PyTorch ops

    # Values ----------------------------------------------------------------------------------
    def module_node(self, target: str) -> fx.Node:
        if target not in self.attrs:
            self.attrs[target] = self.g.get_attr(target)
        return self.attrs[target]

    def as_float(self, v: Any) -> Any:
        """A source-graph argument as a float (or non-tensor) value of the new graph (made once per value)."""
        if not isinstance(v, (_Q, _Pending)):
            return v
        if id(v) not in self.floats:
            if isinstance(v, _Q):
                f = self.g.call_function(dequantize_uint8, (v.node, v.scale, v.zp))
            else:
                f = self.g.call_method("integer_forward", (self.module_node(v.target), v.qx, v.scale, v.zp),
                                       {"out_float": True})  # fmt: skip
            self.floats[id(v)] = f
        return self.floats[id(v)]

    def arg(self, a: Any) -> Any:
        """Map a source argument (possibly nested) to new-graph values, dequantizing integers."""
        return fx.node.map_aggregate(a, lambda x: self.as_float(self.env[x]) if isinstance(x, fx.Node) else x)

    def integers(self, v: Any, layer: QConv2d | QLinear) -> tuple[fx.Node, float, int]:
        """The input of ``layer`` as integers: as it comes, or quantized with the layer's input qparams."""
        if isinstance(v, _Q):
            return v.node, v.scale, v.zp
        s, zp = layer.activation_qparams(0)
        x = self.g.call_method("float", (self.as_float(v),))
        return self.g.call_function(quantize_tensor, (x, s, zp, layer.act_levels)), s, zp

    # Nodes -----------------------------------------------------------------------------------
    def run(self) -> fx.Graph:
        for n in self.src.nodes:
            if n.op == "placeholder":
                self.env[n] = self.g.node_copy(n)
            elif n.op == "output":
                self.g.output(self.arg(n.args[0]))
            else:
                self.env[n] = self.lower(n)
        return self.g

    def lower(self, n: fx.Node) -> Any:
        mod = self.root.get_submodule(n.target) if n.op == "call_module" else None  # type: ignore[arg-type]
        src = n.args[0] if n.args else None
        first = self.env.get(src) if isinstance(src, fx.Node) else None
        if isinstance(mod, (QConv2d, QLinear)):
            return self.layer(n, mod)
        if first is not None and self.is_identity(n, mod):
            return first  # any value, a pending convolution included, passes through unchanged
        if is_add(n):
            out = self.add(n)
            if out is not None:
                return out
        if isinstance(first, _Q):
            out = self.on_integers(n, mod, first)
            if out is not None:
                return out
        return self.copy(n)

    def copy(self, n: fx.Node) -> fx.Node:
        """The node as it is, on float (dequantized) inputs."""
        return self.g.node_copy(n, lambda x: self.as_float(self.env[x]))

    def layer(self, n: fx.Node, mod: QConv2d | QLinear) -> Any:
        v = self.env[n.args[0]]  # type: ignore[index]
        if (self.native is not None and isinstance(mod, QConv2d) and mod.columns_as_channels
                and mod.fuse in ("none", "relu") and not isinstance(v, _Q)):  # fmt: skip
            # Float input of a one-channel convolution: quantized and unfolded in one pass.
            s, zp = mod.activation_qparams(0)
            args = (self.as_float(v), s, zp, mod.act_levels, mod.kernel_size[1], mod.padding[1], mod.stride[1])
            u = self.g.call_function(kernels.quantize_unfold, args)
            y = self.g.call_method("integer_forward", (self.module_node(str(n.target)), u, s, zp), {"unfolded": True})
            return y if mod.out_float else _Q(y, *mod.activation_qparams(1))
        qx, s, zp = self.integers(v, mod)
        if isinstance(mod, QConv2d) and mod.fuse in ("add", "add_relu"):
            return _Pending(mod, str(n.target), qx, s, zp)
        y = self.g.call_method("integer_forward", (self.module_node(str(n.target)), qx, s, zp))
        return y if mod.out_float else _Q(y, *mod.activation_qparams(1))

    def is_identity(self, n: fx.Node, mod: nn.Module | None) -> bool:
        op = op_for_node(self.root, n)
        if op is None or op.name != "identity":
            return False
        if mod is not None:
            return not mod.training
        return not n.kwargs.get("training", False) and (len(n.args) < 3 or n.args[2] is False)

    def add(self, n: fx.Node) -> Any:
        a, b = (self.env[x] if isinstance(x, fx.Node) else x for x in n.args)
        if isinstance(b, _Pending) and not isinstance(a, _Pending):
            a, b = b, a
        if not isinstance(a, _Pending) or isinstance(b, _Pending):
            return None
        conv = self.module_node(a.target)
        if isinstance(b, _Q):
            y = self.g.call_method("integer_add", (conv, a.qx, a.scale, a.zp, b.node, b.scale, b.zp))
        else:
            s, zp = a.conv.activation_qparams(2)
            x = self.g.call_method("float", (self.as_float(b),))
            short = self.g.call_function(quantize_tensor, (x, s, zp, a.conv.act_levels))
            y = self.g.call_method("integer_add", (conv, a.qx, a.scale, a.zp, short, s, zp), {"owned": True})
        return _Q(y, *a.conv.activation_qparams(1))

    def on_integers(self, n: fx.Node, mod: nn.Module | None, x: _Q) -> Any:
        """The ops of the one table (:mod:`~torchslim.quantization.integer_ops`) on the integers of
        their first argument, and metadata reads; None: dequantize and run in float."""
        rest, kwargs = self.arg(n.args[1:]), dict(self.arg(n.kwargs))
        g = self.g
        op = op_for_node(self.root, n)
        name = op.name if op is not None and op.passthrough else None
        if name == "relu":
            return _Q(g.call_function(relu_uint8, (x.node, x.zp)), x.scale, x.zp) if x.zp else x
        if name == "max_pool2d":
            if mod is not None:
                if mod.return_indices:
                    return None
                pool = {k: getattr(mod, k) for k in _POOL_ARGS}
            else:
                if kwargs.pop("return_indices", False) or len(rest) >= 6 and rest[5]:
                    return None
                pool = {**dict(zip(_POOL_ARGS, rest[:5], strict=False)), **kwargs}  # fewer args: defaults
            if self.native is not None and _is_2x2(pool):
                return _Q(g.call_function(kernels.max_pool2x2, (x.node,)), x.scale, x.zp)
            return _Q(g.call_function(max_pool2d_uint8, (x.node,), pool), x.scale, x.zp)
        if name == "adaptive_avg_pool2d":
            args = (x.node, mod.output_size) if mod is not None else (x.node, *rest)
            return _Q(g.call_function(adaptive_avg_pool2d_uint8, args, {} if mod is not None else kwargs), x.scale, x.zp)
        if name == "avg_pool2d":
            if mod is not None:
                args = (x.node, mod.kernel_size, mod.stride, mod.padding, mod.ceil_mode, mod.count_include_pad,
                        mod.divisor_override)  # fmt: skip
                return _Q(g.call_function(avg_pool2d_uint8, args), x.scale, x.zp)
            return _Q(g.call_function(avg_pool2d_uint8, (x.node, *rest), kwargs), x.scale, x.zp)
        if name == "flatten":
            if mod is not None:
                return _Q(g.call_function(torch.flatten, (x.node, mod.start_dim, mod.end_dim)), x.scale, x.zp)
            if n.op == "call_method":
                return _Q(g.call_method("flatten", (x.node, *rest), kwargs), x.scale, x.zp)
            return _Q(g.call_function(torch.flatten, (x.node, *rest), kwargs), x.scale, x.zp)
        if name == "reshape":
            if n.op == "call_method":
                # The integers are often channels-last in memory, where a view of the NCHW shape is
                # impossible: reshape copies only then (the eager QTensor.view does the same).
                method = "reshape" if n.target == "view" else str(n.target)
                return _Q(g.call_method(method, (x.node, *rest), kwargs), x.scale, x.zp)
            fn = torch.Tensor.reshape if n.target is torch.Tensor.view else n.target
            return _Q(g.call_function(fn, (x.node, *rest), kwargs), x.scale, x.zp)  # type: ignore[arg-type]
        if n.op == "call_method" and n.target in METADATA_METHODS:
            return g.call_method(str(n.target), (x.node, *rest), kwargs)
        if n.op == "call_function" and n.target is builtins.getattr and rest and rest[0] in METADATA_ATTRS:
            return g.call_function(builtins.getattr, (x.node, *rest))
        return None


def lower_static(model: nn.Module, *, native: bool = True) -> fx.GraphModule:
    """A copy of a statically quantized model as one flat graph of integer kernel calls.

    Outputs are identical to ``model``'s (the same kernels run on the same integers). The copy is
    a snapshot: its quantization parameters are constants of the graph, so lower again after
    changing the model. ``native``: use the fused uint8 kernels of ``torchslim.quantization.kernels``
    (compiled on first use, once per machine) where they apply; without a C++ compiler, or with
    ``native=False``, the same steps run as PyTorch ops. Raises :class:`CompatibilityError` when
    the model has no static INT8 layers or its forward cannot be traced by torch.fx.
    """
    if not has_static_layers(model):
        raise CompatibilityError("lower_static takes a model quantized with StaticInt8Config or QATConfig; "
                                 f"{type(model).__name__} has no static INT8 layer")  # fmt: skip
    root = copy.deepcopy(model).eval()
    try:
        traced = _Tracer().trace(root)
    except Exception as exc:  # tracing failures come as many exception types
        raise CompatibilityError(
            f"lowering needs a forward that torch.fx can trace, and {type(model).__name__}'s could not be "
            f"({type(exc).__name__}: {exc}); run the quantized model directly"
        ) from exc
    for m in root.modules():
        if isinstance(m, (QConv2d, QLinear)):
            m.frozen = True
    graph = _Lowering(root, traced, None if not native else kernels.load()).run()
    gm = fx.GraphModule(root, graph, class_name=f"Lowered{type(model).__name__}")
    gm.graph.eliminate_dead_code()  # dequantizations made for an op that then ran on integers
    gm.recompile()
    return gm.eval()

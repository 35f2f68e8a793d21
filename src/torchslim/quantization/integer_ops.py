"""The one table of what runs on integers between static INT8 layers.

Static INT8 layers (:class:`~torchslim.quantization.static_modules.QConv2d` /
``QLinear``) hand uint8 activations to each other; whatever a model's ``forward`` does between
them either runs on those integers or dequantizes them and runs in float. This table says which
ops run on integers, and three readers use it, so they always agree:

* the planner (:mod:`torchslim.quantization.graph`), which decides where integers flow and where
  an activation must be observed;
* the eager runtime (``QTensor.__torch_function__`` in :mod:`~torchslim.quantization.static_modules`);
* the lowering to one flat graph (:mod:`torchslim.quantization.lowering`, what ``compile_int8`` and
  ``timed_runtime`` run).

Each entry names an op once, with every spelling the three see: the torch functions and
``Tensor`` methods (``__torch_function__`` and fx ``call_function``), the method names (fx
``call_method``) and the module types (fx ``call_module``). ``passthrough``: the output keeps the
input's scale and zero point (pooling, ReLU, reshapes); ``alias``: it is the same integers or a
view of them (a fused add may only overwrite a shortcut once no alias needs it). ``add`` is the
residual ``+`` a convolution absorbs into its accumulator; it is not a passthrough.

tests/quantization/test_integer_ops.py checks that each reader handles exactly these ops.

>>> import torch.nn.functional as F
>>> op_for_function(F.max_pool2d).name, op_for_function(F.max_pool2d).alias
('max_pool2d', False)
>>> op_for_function(F.gelu) is None
True
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class IntegerOp:
    """One op that runs on the integers of its first argument (see the module docstring)."""

    name: str
    functions: tuple[Any, ...] = ()
    methods: tuple[str, ...] = ()
    modules: tuple[type[nn.Module], ...] = ()
    passthrough: bool = True
    alias: bool = False


INTEGER_OPS: tuple[IntegerOp, ...] = (
    IntegerOp("relu", (F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_),
              ("relu", "relu_"), (nn.ReLU,), alias=True),
    IntegerOp("max_pool2d", (F.max_pool2d, torch.max_pool2d), (), (nn.MaxPool2d,)),
    IntegerOp("adaptive_avg_pool2d", (F.adaptive_avg_pool2d,), (), (nn.AdaptiveAvgPool2d,)),
    IntegerOp("avg_pool2d", (F.avg_pool2d,), (), (nn.AvgPool2d,)),
    IntegerOp("flatten", (torch.flatten, torch.Tensor.flatten), ("flatten",), (nn.Flatten,), alias=True),
    IntegerOp("reshape", (torch.Tensor.view, torch.Tensor.reshape, torch.Tensor.contiguous),
              ("view", "reshape", "contiguous"), alias=True),
    IntegerOp("identity", (F.dropout,), (), (nn.Identity, nn.Dropout), alias=True),  # dropout in eval mode
    IntegerOp("add", (torch.add, torch.Tensor.add, torch.Tensor.__add__, operator.add, operator.iadd),
              ("add", "add_", "__add__"), passthrough=False),
)  # fmt: skip

# Reads of a tensor's metadata: answered from the integers, never dequantized.
METADATA_METHODS = ("size", "dim")
METADATA_ATTRS = ("shape", "ndim", "device")

_BY_FUNCTION = {f: op for op in INTEGER_OPS for f in op.functions}
_BY_METHOD = {m: op for op in INTEGER_OPS for m in op.methods}
_BY_NAME = {op.name: op for op in INTEGER_OPS}


def op_named(name: str) -> IntegerOp:
    return _BY_NAME[name]


def op_for_function(func: Any) -> IntegerOp | None:
    """The op a torch function or ``Tensor`` method is (what ``__torch_function__`` receives)."""
    try:
        return _BY_FUNCTION.get(func)
    except TypeError:  # an unhashable callable is none of these
        return None


def op_for_method(name: str) -> IntegerOp | None:
    """The op a ``Tensor`` method name is (``x.relu()``, ``x.view(...)``), or ``None``."""
    return _BY_METHOD.get(name)


def op_for_node(root: nn.Module, n: fx.Node) -> IntegerOp | None:
    """The op an fx node of a graph traced from ``root`` is, or ``None``."""
    if n.op == "call_module":
        mod = root.get_submodule(str(n.target))
        return next((op for op in INTEGER_OPS if isinstance(mod, op.modules)), None)
    if n.op == "call_function":
        return op_for_function(n.target)
    if n.op == "call_method":
        return _BY_METHOD.get(str(n.target))
    return None

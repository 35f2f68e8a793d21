"""Planning static quantization on the model's FX graph.

The graph is traced once from the float model. It decides, per Conv2d/Linear layer, which ReLU
and residual ``+`` run inside its integer kernel, where activations must be observed, which
layers can hand integers to the next one, and which must emit float. The quantized model itself
keeps the user's class and ``forward``: only layers are swapped (see ``static_modules``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from torchslim.errors import CompatibilityError
from torchslim.quantization.integer_ops import op_for_node, op_named

WEIGHTED = (nn.Conv2d, nn.Linear)
_ADD = op_named("add")


def trace(model: nn.Module) -> fx.GraphModule:
    """``torch.fx.symbolic_trace`` with a torchslim error when the forward is not traceable."""
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:  # tracing failures come as many exception types
        raise CompatibilityError(
            f"static quantization needs a traceable forward, and torch.fx could not trace "
            f"{type(model).__name__} ({type(exc).__name__}: {exc}); use DynamicInt8Config or WeightOnlyConfig, "
            "which swap layers without tracing"
        ) from exc


def fold_batchnorm(model: nn.Module) -> list[tuple[str, str]]:
    """Fold every ``BatchNorm2d`` that directly follows a ``Conv2d`` into it, in place.

    The BatchNorm becomes ``nn.Identity``; the conv gains the bias. Returns ``(conv, bn)`` names.

    >>> m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).eval()
    >>> _ = m[1].running_mean.fill_(0.5)
    >>> x = torch.randn(1, 1, 5, 5)
    >>> ref = m(x)
    >>> fold_batchnorm(m)
    [('0', '1')]
    >>> bool(torch.allclose(m(x), ref, atol=1e-6)), type(m[1]).__name__
    (True, 'Identity')
    """
    gm = trace(model)
    mods = dict(model.named_modules())
    folded = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(mods.get(node.target), nn.BatchNorm2d):
            continue
        src = node.args[0]
        if not (isinstance(src, fx.Node) and src.op == "call_module" and isinstance(mods.get(src.target), nn.Conv2d)):
            continue
        if len(src.users) != 1:
            continue
        conv, bn = mods[src.target], mods[node.target]
        if bn.running_mean is None or bn.running_var is None:
            continue
        with torch.no_grad():
            std = torch.sqrt(bn.running_var + bn.eps)
            gamma = bn.weight if bn.affine else torch.ones_like(std)
            beta = bn.bias if bn.affine else torch.zeros_like(std)
            factor = gamma / std
            conv.weight.mul_(factor.view(-1, 1, 1, 1))
            b = conv.bias if conv.bias is not None else torch.zeros_like(std)
            new_bias = (b - bn.running_mean) * factor + beta
            conv.bias = nn.Parameter(new_bias.detach().clone())
        _set_module(model, node.target, nn.Identity())
        folded.append((src.target, node.target))
    return folded


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


@dataclass
class LayerPlan:
    """How one Conv2d/Linear layer runs in the integer model."""

    name: str
    node: str  # FX node calling the layer
    fuse: str = "none"  # none | relu | add | add_relu
    out_node: str = ""  # FX node whose value the layer's output quantization describes
    in_node: str = ""  # FX node of the layer's input
    in_from: str | None = None  # layer whose integer output arrives as input (None: float input)
    add_node: str | None = None
    other_node: str | None = None  # the shortcut operand of a fused add
    other_from: str | None = None
    out_float: bool = False
    accum_inplace: bool = False


@dataclass
class Plan:
    layers: dict[str, LayerPlan] = field(default_factory=dict)
    observe: list[str] = field(default_factory=list)  # FX node names whose values need a range

    def input_point(self, lp: LayerPlan) -> str:
        """The observed node that fixes a layer's input quantization."""
        return self.layers[lp.in_from].out_node if lp.in_from else lp.in_node

    def other_point(self, lp: LayerPlan) -> str | None:
        if lp.other_node is None:
            return None
        return self.layers[lp.other_from].out_node if lp.other_from else lp.other_node


def _mod(gm: nn.Module, node: fx.Node) -> nn.Module | None:
    return gm.get_submodule(node.target) if node.op == "call_module" else None  # type: ignore[arg-type]


def _is_identity(gm: fx.GraphModule, n: fx.Node) -> bool:
    return n.op == "call_module" and isinstance(_mod(gm, n), op_named("identity").modules)


def is_relu(gm: nn.Module, n: fx.Node) -> bool:
    """Whether node ``n`` of a graph traced from ``gm`` is a ReLU (module, function or method)."""
    op = op_for_node(gm, n)
    return op is not None and op.name == "relu"


def is_add(n: fx.Node) -> bool:
    """Whether ``n`` adds exactly two operands (``+``, ``torch.add`` or ``Tensor.add``, no alpha)."""
    if n.op == "call_function" and n.target in _ADD.functions:
        return len(n.args) == 2 and not n.kwargs
    return n.op == "call_method" and n.target in _ADD.methods and len(n.args) == 2 and not n.kwargs


def _is_passthrough(gm: fx.GraphModule, n: fx.Node) -> bool:
    op = op_for_node(gm, n)
    return op is not None and op.passthrough


def _is_alias(gm: fx.GraphModule, n: fx.Node) -> bool:
    op = op_for_node(gm, n)
    return op is not None and op.alias


def _single_next(n: fx.Node) -> fx.Node | None:
    users = list(n.users)
    return users[0] if len(users) == 1 else None


def make_plan(gm: fx.GraphModule, layers: Iterable[str]) -> Plan:
    """Decide fusion, input sources, float outputs and observation points for ``layers``."""
    wanted = set(layers)
    nodes = list(gm.graph.nodes)
    order = {n: i for i, n in enumerate(nodes)}
    plan = Plan()
    claimed: set[fx.Node] = set()  # adds already fused into an earlier layer
    for n in nodes:
        if n.op != "call_module" or n.target not in wanted:
            continue
        m = _mod(gm, n)
        if not isinstance(m, WEIGHTED) or not isinstance(n.args[0], fx.Node):
            continue
        lp = LayerPlan(name=str(n.target), node=n.name, in_node=n.args[0].name)
        out = n
        nxt = _single_next(out)
        while nxt is not None and _is_identity(gm, nxt):
            out, nxt = nxt, _single_next(nxt)
        if nxt is not None and is_relu(gm, nxt):
            lp.fuse, out = "relu", nxt
        elif nxt is not None and isinstance(m, nn.Conv2d) and is_add(nxt) and nxt not in claimed:
            # The first operand computed fuses the add; the other one arrives as its accumulator.
            other = nxt.args[1] if nxt.args[0] is out else nxt.args[0]
            if isinstance(other, fx.Node) and other is not out:
                lp.fuse, lp.add_node, lp.other_node, out = "add", nxt.name, other.name, nxt
                claimed.add(nxt)
                after = _single_next(out)
                while after is not None and _is_identity(gm, after):
                    out, after = after, _single_next(after)
                if after is not None and is_relu(gm, after):
                    lp.fuse, out = "add_relu", after
        lp.out_node = out.name
        plan.layers[lp.name] = lp

    # Which values arrive as integers: a planned layer's output, through integer passthroughs.
    node_of = {n.name: n for n in nodes}
    src: dict[fx.Node, str] = {}
    for lp in plan.layers.values():
        src[node_of[lp.out_node]] = lp.name
    for n in nodes:
        if n in src:
            continue
        if _is_passthrough(gm, n) and n.args and isinstance(n.args[0], fx.Node) and n.args[0] in src:
            src[n] = src[n.args[0]]

    # A layer emits integers only if some consumer takes them (a planned layer or a fused add).
    consumers: dict[str, int] = {name: 0 for name in plan.layers}
    for lp in plan.layers.values():
        a = node_of[lp.in_node]
        if a in src:
            consumers[src[a]] += 1
        if lp.other_node is not None and node_of[lp.other_node] in src:
            consumers[src[node_of[lp.other_node]]] += 1
    for lp in plan.layers.values():
        if consumers[lp.name] == 0 and lp.fuse not in ("add", "add_relu"):
            lp.out_float = True
    for lp in plan.layers.values():
        a = node_of[lp.in_node]
        lp.in_from = src[a] if a in src and not plan.layers[src[a]].out_float else None
        if lp.other_node is not None:
            o = node_of[lp.other_node]
            lp.other_from = src[o] if o in src and not plan.layers[src[o]].out_float else None
            lp.accum_inplace = _accum_is_dead(gm, o, node_of[lp.add_node], order)  # type: ignore[index]

    points: list[str] = []
    for lp in plan.layers.values():
        for p in (plan.input_point(lp), plan.other_point(lp), None if lp.out_float else lp.out_node):
            if p is not None and p not in points:
                points.append(p)
    plan.observe = points
    return plan


def _accum_is_dead(gm: fx.GraphModule, other: fx.Node, add: fx.Node, order: dict[fx.Node, int]) -> bool:
    """True when nothing reads the shortcut's integers after the fused add overwrites them."""
    root = other
    while _is_alias(gm, root) and root.args and isinstance(root.args[0], fx.Node):
        root = root.args[0]
    group, stack = {root}, [root]
    while stack:
        n = stack.pop()
        for u in n.users:
            if u not in group and _is_alias(gm, u):
                group.add(u)
                stack.append(u)
    for n in group:
        for u in n.users:
            if u is add or u in group:
                continue
            if u.op == "output" or order[u] > order[add]:
                return False
    return True


class ObserverPoint(nn.Module):
    """Inserted after an observed node: records, or fake-quantizes, or passes through."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.point = name
        self.mode = "off"  # off | minmax | hist | fake
        self.stats: Any = None
        self.fake: tuple[float, int, int] | None = None  # scale, zp, levels
        self.capture: list[torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.capture is not None:
            self.capture.append(x.detach())
        if self.mode == "minmax":
            self.stats.observe_minmax(x)
        elif self.mode == "hist":
            self.stats.observe_histogram(x)
        elif self.mode == "fake" and self.fake is not None:
            s, zp, levels = self.fake
            return (torch.clamp(torch.round(x / s) + zp, 0, levels) - zp) * s
        return x


def insert_points(gm: fx.GraphModule, points: Iterable[str], factory: Any = ObserverPoint) -> dict[str, nn.Module]:
    """Insert a module after each named node (its users read the module's output); in place."""
    node_of = {n.name: n for n in gm.graph.nodes}
    out: dict[str, nn.Module] = {}
    for i, p in enumerate(points):
        n = node_of[p]
        mod = factory(p)
        attr = f"_ts_point_{i}"
        gm.add_submodule(attr, mod)
        with gm.graph.inserting_after(n):
            new = gm.graph.call_module(attr, (n,))
        n.replace_all_uses_with(new, delete_user_cb=lambda u, new=new: u is not new)
        out[p] = mod
    gm.graph.lint()
    gm.recompile()
    return out

"""``inspect(model, data)``: before any compression, what each layer allows and why not.

One row per layer that holds parameters: its type, parameters, MACs and output shape on one
sample of ``data``, the methods that can take it (with what they make of it and where that runs),
its coupled channel group and, for each method that cannot take it, why in one line. The methods
and their checks come from the method registry (``register_method(..., applies=...)``, next to
each method in its package): inspect keeps no list of its own, so a method that gains a layer
type shows it here at once. An unsupported op is reported, never raised; only a model or data
that cannot be used at all is an error. The summary says what the whole model allows and
estimates the best size and MAC reductions.

>>> from torchslim.models import create_model
>>> from torchslim.data import load_dataset
>>> info = inspect(create_model("lenet5"), load_dataset("digits", "test"))
>>> [(r.name, r.params, r.macs, r.output_shape) for r in info.rows][:2]
[('conv1', 520, 288000, [1, 20, 24, 24]), ('conv2', 25050, 1600000, [1, 50, 8, 8])]
>>> sorted(info.rows[0].applies), info.rows[0].group
(['int8_static', 'magnitude', 'structured'], ['conv1', 'conv2'])
>>> info.rows[3].cannot["structured"]
'Linear fc2 produces the model output: its output channels are fixed'
>>> info.summary["macs"], info.summary["best_macs"]["ratio"] > 1
(2293000, True)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn as nn

from torchslim.data.protocol import ModelInput, as_data, describe
from torchslim.errors import CompatibilityError, ConfigError, ModelError
from torchslim.methods import Method, methods, one_line, shared_facts

NO_EXAMPLE = "no example input: pass data"
STRUCTURED = "structured"


@dataclass
class LayerInfo:
    """One layer: what it is, what it costs, which methods can take it and why the others cannot.

    ``applies`` maps a method name (``int8_dynamic``, ``int8_static``, ``weight_only``,
    ``magnitude``, ``nm``, ``structured``: the registered names) to what the method makes of the
    layer and what that runs on; ``cannot`` maps every other method to the one-line reason.
    ``group``: the layers coupled with it in structured pruning (``None`` outside any group).
    ``macs`` / ``output_shape`` are ``None`` when unknown, with ``note`` saying why.
    """

    name: str
    type: str
    params: int
    macs: int | None
    output_shape: list[int] | None
    applies: dict[str, str] = field(default_factory=dict)
    cannot: dict[str, str] = field(default_factory=dict)
    group: list[str] | None = None
    note: str | None = None
    float_bytes: int = 0  # its parameters and buffers as the float model stores them
    best_bytes: int = 0  # the same in the smallest form a method that applies gives
    best_form: str = "float"


@dataclass
class Inspection:
    """What :func:`inspect` found: ``rows`` (one :class:`LayerInfo` per layer) and ``summary``."""

    rows: list[LayerInfo]
    summary: dict[str, Any]

    def row(self, name: str) -> LayerInfo:
        """The row of layer ``name``."""
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    def cannot_lines(self) -> list[str]:
        """``"<layer> (<type>) cannot <method>: <reason>"``, one per layer and method that cannot take it."""
        return [f"{_label(r.name)} ({r.type}) cannot {k}: {why}" for r in self.rows for k, why in r.cannot.items()]

    def to_dict(self) -> dict[str, Any]:
        """Plain data (``json.dumps`` takes it)."""
        return {"summary": self.summary, "rows": [asdict(r) for r in self.rows]}

    def to_markdown(self) -> str:
        """The rows as a table, then every reason a method cannot take a layer, then the whole model."""
        s = self.summary
        keys = list(s["methods"])
        lines = [f"# torchslim inspect: {s['model']}", "", _headline(s), ""]
        head = ["layer", "type", "params", "MACs", "output shape", *keys, "structured group"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.rows:
            marks = ["yes" if k in r.applies else "no" for k in keys]
            group = ", ".join(r.group) if r.group else ""
            cells = [_label(r.name), r.type, f"{r.params:,}", _num(r.macs), _shape(r.output_shape), *marks, group]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines += ["", "## Where the methods apply, as what", ""]
        for k in keys:
            by_detail: dict[str, list[str]] = {}
            for r in self.rows:
                if k in r.applies:
                    by_detail.setdefault(r.applies[k], []).append(_label(r.name))
            for detail, names in by_detail.items():
                lines.append(f"- **{k}** on {_names(names)}: {detail}")
        lines += ["", "## What cannot apply, and why", ""]
        lines += [f"- {ln}" for ln in self.cannot_lines()] or ["- nothing: every method can take every layer"]
        lines += ["", "## The whole model", ""]
        lines += [f"- {ln}" for ln in s["allows"]]
        return "\n".join(lines) + "\n"


def inspect(
    model: nn.Module,
    data: Any = None,
    *,
    example: Any = None,
    input_fn: Callable[[Any], Any] | None = None,
) -> Inspection:
    """What every layer of ``model`` allows before any compression; ``model`` is not modified.

    ``data``: anything the data protocol takes (a DataLoader, batches, a tensor ``[N, ...]``, an
    ``ImageData``), read with ``input_fn``; its first sample (batch 1) is the example input that
    MACs, output shapes and structured channel groups are measured on. ``example`` gives that
    input directly instead (a tensor, a tuple of arguments or a dict of keyword arguments). With
    neither, those columns are unknown, with the reason ``"no example input: pass data"``.

    Raises :class:`~torchslim.errors.ConfigError` for a model that is not an ``nn.Module`` and
    :class:`~torchslim.errors.DataError` for data the model cannot take; everything a method
    cannot do is reported in the rows, never raised.

    >>> import torch
    >>> mha = nn.MultiheadAttention(16, 2, batch_first=True)
    >>> info = inspect(mha, example=(torch.randn(1, 5, 16),) * 3)
    >>> info.row("out_proj").cannot["int8_dynamic"]
    "nn.MultiheadAttention reads out_proj's weight directly; kept in float"
    """
    import torchslim.pruning  # noqa: F401 - each package's __init__ registers its methods and their checks
    import torchslim.quantization  # noqa: F401

    if not isinstance(model, nn.Module):
        raise ConfigError(f"inspect() needs an nn.Module, got {type(model).__name__}")
    if data is not None and example is not None:
        raise ConfigError("pass data= or example=, not both: the example input is one sample of the data")
    ex = _example_input(model, data, example, input_fn)
    entries = [m for m in methods() if m.applies is not None]
    refused = _refusal(model)
    errors: list[str] = []
    with shared_facts():
        layers = _layers(model)
        macs, shapes, note = _layer_profile(model, ex, {n for n, _ in layers})
        seen: set[int] = set()
        rows = []
        for name, module in layers:
            row = LayerInfo(name, type(module).__name__, _own_params(module, seen), macs.get(name), shapes.get(name))
            if ex is None or note is not None:
                row.note = NO_EXAMPLE if ex is None else note
            elif name not in macs:
                row.note = "not called as a module in the example's forward pass (unused, or its parent computes with its weights)"
            for entry in entries:
                _judge(entry, model, name, module, ex, row, refused, errors)
            rows.append(row)
        group_of = _groups(model, ex if refused is None else None, entries)
        for row in rows:
            row.group = group_of(row.name)
        summary = _summary(model, ex, rows, entries, refused, errors, note)
    return Inspection(rows, summary)


# ----------------------------------------------------------------------------- the example input
def _example_input(model: nn.Module, data: Any, example: Any, input_fn: Callable[[Any], Any] | None) -> ModelInput | None:
    """One sample (batch 1) of ``data`` or ``example`` as the model's arguments, checked to run."""
    if example is None and data is None:
        return None
    if example is not None:
        inp = example if isinstance(example, ModelInput) else ModelInput.of(example)
        what = "example"
    else:
        d = as_data(data, input_fn=input_fn).bind(model)
        inp = d.inputs(d.first())
        what = "data"
    inp = inp.resized(1)
    as_data([inp], input_fn=lambda x: x).check(model, what)  # a DataError naming what the model expects
    return inp


# ----------------------------------------------------------------------------- layers and their costs
def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules that hold parameters (or, without children, buffers such as running statistics)."""
    out = []
    for name, m in model.named_modules():
        own = any(True for _ in m.parameters(recurse=False))
        leaf_state = not any(True for _ in m.children()) and any(True for _ in m.buffers(recurse=False))
        if own or leaf_state:
            out.append((name, m))
    return out


def _own_params(m: nn.Module, seen: set[int]) -> int:
    n = 0
    for p in m.parameters(recurse=False):
        if id(p) not in seen:  # a tied weight counts once, in the first layer holding it
            seen.add(id(p))
            n += p.numel()
    return n


def _out_shape(out: Any) -> list[int] | None:
    if isinstance(out, torch.Tensor):
        return list(out.shape)
    if isinstance(out, dict) or (hasattr(out, "values") and callable(out.values)):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        return next((list(t.shape) for t in out if isinstance(t, torch.Tensor)), None)
    return None


@torch.no_grad()
def _layer_profile(model: nn.Module, ex: ModelInput | None, names: set[str]) -> tuple[dict[str, int], dict[str, list[int] | None], str | None]:
    """MACs (FlopCounterMode, as :func:`torchslim.measure.count_macs`) spent in each layer itself,
    not in the layers inside it, and each layer's output shape, in one forward pass on ``ex``."""
    if ex is None:
        return {}, {}, None
    from torch.utils.flop_counter import FlopCounterMode

    from torchslim.modes import kept_mode, unfused_attention

    flops: dict[str, int] = {}
    shapes: dict[str, list[int] | None] = {}
    stack: list[list[int]] = []  # [flops at entry, flops spent in nested layers]
    fc = FlopCounterMode(display=False)

    def pre(_m: nn.Module, _args: Any) -> None:
        stack.append([fc.get_total_flops(), 0])

    def post(name: str) -> Any:
        def fn(_m: nn.Module, _args: Any, out: Any) -> None:
            start, nested = stack.pop()
            spent = fc.get_total_flops() - start
            flops[name] = flops.get(name, 0) + spent - nested
            if stack:
                stack[-1][1] += spent
            shapes[name] = _out_shape(out)

        return fn

    hooks = []
    for name, m in model.named_modules():
        if name in names:
            hooks += [m.register_forward_pre_hook(pre), m.register_forward_hook(post(name))]
    try:
        with kept_mode(model), unfused_attention(), fc:
            model.eval()
            ex(model)
    except Exception as exc:  # noqa: BLE001 - the model ran in the data check; counting must not make it a crash
        return {}, {}, f"counting MACs failed ({type(exc).__name__}: {one_line(exc, 160)})"
    finally:
        for h in hooks:
            h.remove()
    return {n: f // 2 for n, f in flops.items()}, shapes, None


# ----------------------------------------------------------------------------- the methods' verdicts
def _refusal(model: nn.Module) -> str | None:
    """Why every verb would refuse the whole model (non-finite or already quantized weights), if so."""
    from torchslim.pruning._common import check_not_quantized as not_pruning_quantized
    from torchslim.quantization.api import check_not_quantized
    from torchslim.surgery import check_finite

    try:
        check_finite(model, "compression")
        check_not_quantized(model)
        not_pruning_quantized(model)
    except (ModelError, CompatibilityError) as exc:
        return one_line(exc, 400)
    return None


def _judge(entry: Method, model: nn.Module, name: str, module: nn.Module, ex: ModelInput | None, row: LayerInfo,
           refused: str | None, errors: list[str]) -> None:  # fmt: skip
    if refused is not None:
        row.cannot[entry.name] = refused
        return
    assert entry.applies is not None
    try:
        why = entry.applies(model, name, module, ex)
        if why is None:
            row.applies[entry.name] = entry.applies_detail(model, name, module, ex) if entry.applies_detail else ""
        else:
            row.cannot[entry.name] = one_line(why, 400)
    except Exception as exc:  # noqa: BLE001 - a check that fails on an odd layer is reported, not raised
        msg = f"the {entry.name} check failed on {row.type} {_label(name)} ({type(exc).__name__}: {one_line(exc, 160)})"
        row.cannot[entry.name] = msg
        errors.append(msg)


def _groups(model: nn.Module, ex: ModelInput | None, entries: list[Method]) -> Callable[[str], list[str] | None]:
    """Each layer's structured channel group (the members), when structured pruning is registered."""
    if ex is None or not any(e.name == STRUCTURED for e in entries):
        return lambda name: None
    from torchslim.pruning.applies import group_of

    def of(name: str) -> list[str] | None:
        try:
            g = group_of(model, name, model.get_submodule(name), ex)
        except Exception:  # noqa: BLE001 - already reported in the row's cannot["structured"]
            return None
        return g.members if g is not None else None

    return of


# ----------------------------------------------------------------------------- the whole model
def _state_bytes(t: dict[str, Any]) -> int:
    return sum(v.numel() * v.element_size() for v in t.values() if isinstance(v, torch.Tensor))


def _float_bytes(m: nn.Module, seen: set[int]) -> int:
    n = 0
    for t in [*m.parameters(recurse=False), *(b for k, b in m.named_buffers(recurse=False) if k not in m._non_persistent_buffers_set)]:
        if id(t) not in seen:
            seen.add(id(t))
            n += t.numel() * t.element_size()
    return n


def _best_form(model: nn.Module, name: str, m: nn.Module, row: LayerInfo, folded: dict[str, str],
               static_rows: set[str]) -> tuple[int | None, str]:  # fmt: skip
    """The layer's bytes in the smallest form a method that applies gives (``None``: as it is)."""
    from torchslim.quantization.config import WeightOnlyConfig
    from torchslim.quantization.modules import Int8DynamicLinear, WeightOnlyLinear
    from torchslim.quantization.static_modules import QConv2d, QLinear

    bias = getattr(m, "bias", None) is not None
    if "weight_only" in row.applies and isinstance(m, nn.Linear):
        c = WeightOnlyConfig()
        q: nn.Module = WeightOnlyLinear(m.in_features, m.out_features, bias, bits=c.bits, group_size=c.group_size)
        return _state_bytes(q.state_dict()), f"int{c.bits} weight-only"
    if "int8_static" in row.applies and isinstance(m, nn.Conv2d):
        folds = name in folded.values()
        q = QConv2d(m.in_channels, m.out_channels, list(m.kernel_size), list(m.stride), list(m.padding),  # type: ignore[arg-type]
                    list(m.dilation), m.groups, bias or folds)  # fmt: skip
        return _state_bytes(q.state_dict()), "int8 static"
    if "int8_static" in row.applies and isinstance(m, nn.Linear):
        return _state_bytes(QLinear(m.in_features, m.out_features, bias).state_dict()), "int8 static"
    if "int8_dynamic" in row.applies and isinstance(m, nn.Linear):
        return _state_bytes(Int8DynamicLinear(m.in_features, m.out_features, bias).state_dict()), "int8 dynamic"
    if folded.get(name) in static_rows:
        return 0, f"folded into {folded[name]}"
    return None, "float"


def _summary(model: nn.Module, ex: ModelInput | None, rows: list[LayerInfo], entries: list[Method], refused: str | None,
             errors: list[str], note: str | None) -> dict[str, Any]:  # fmt: skip
    from torchslim.quantization.applies import folded_batchnorms

    mods = dict(model.named_modules())
    total_params = sum(p.numel() for p in model.parameters())
    state = model.state_dict(keep_vars=True)
    seen_t: set[int] = set()
    total_bytes = 0
    for v in state.values():
        if isinstance(v, torch.Tensor) and id(v) not in seen_t:
            seen_t.add(id(v))
            total_bytes += v.numel() * v.element_size()
    folded = folded_batchnorms(model) if refused is None and any(e.name == "int8_static" for e in entries) else {}
    static_rows = {r.name for r in rows if "int8_static" in r.applies}
    seen: set[int] = set()
    for r in rows:
        r.float_bytes = _float_bytes(mods[r.name], seen)
        best, r.best_form = _best_form(model, r.name, mods[r.name], r, folded, static_rows) if refused is None else (None, "float")
        r.best_bytes = r.float_bytes if best is None else min(best, r.float_bytes)
    outside = total_bytes - sum(r.float_bytes for r in rows)  # buffers of modules without parameters
    best_bytes = sum(r.best_bytes for r in rows) + max(outside, 0)

    per_method: dict[str, dict[str, Any]] = {}
    allows: list[str] = []
    for e in entries:
        took = [r for r in rows if e.name in r.applies]
        params = sum(r.params for r in took)
        reasons = Counter(r.cannot[e.name] for r in rows if e.name in r.cannot)
        per_method[e.name] = {
            "layers": len(took), "params": params, "params_share": round(params / total_params, 4) if total_params else 0.0,
            "cannot": sum(reasons.values()),
        }  # fmt: skip
        if took:
            allows.append(f"{e.name}: {len(took)} of {len(rows)} layers, {params / max(total_params, 1):.1%} of the parameters")
        else:
            top = reasons.most_common(1)[0][0] if reasons else "no layer"
            allows.append(f"{e.name}: no layer ({top})")

    macs = _total_macs(model, ex) if note is None else None
    best_macs = _best_macs(model, ex, entries, refused)
    size = {
        "float_bytes": total_bytes, "bytes": best_bytes,
        "ratio": round(total_bytes / best_bytes, 3) if best_bytes else None,
        "forms": dict(Counter(r.best_form.split(" into ")[0] for r in rows)),
        "how": ("each layer in the smallest form a method that applies to it stores: int4 weight-only (WeightOnlyConfig's "
                "groups and fp16 scales) for Linear layers, else int8 (static for Conv2d, with folded BatchNorms gone, "
                "or dynamic), else float; the bytes of the layers torchslim would build, over the float model's "
                "parameters and buffers. Quantization only: pruning's savings are not included"),
    }  # fmt: skip
    allows.append(f"best size: {_num(total_bytes)} -> {_num(best_bytes)} bytes "
                  f"({size['ratio']}x smaller) with {', '.join(f'{k} x{v}' for k, v in size['forms'].items())}")  # fmt: skip
    if best_macs.get("ratio") is not None:
        allows.append(f"best MACs: {_num(best_macs['macs_before'])} -> {_num(best_macs['macs_after'])} ({best_macs['ratio']}x fewer), "
                      f"structured pruning of {best_macs['groups_pruned']} of {best_macs['groups']} channel groups")  # fmt: skip
    else:
        allows.append(f"best MACs: unknown ({best_macs.get('unknown')})")
    if refused is not None:
        allows.insert(0, f"every method refuses this model: {refused}")
    return {
        "model": type(model).__name__,
        "example": describe(ex) if ex is not None else None,
        "layers": len(rows),
        "params": total_params,
        "float_bytes": total_bytes,
        "macs": macs,
        "macs_in_layers": sum(r.macs or 0 for r in rows) if ex is not None and note is None else None,
        "macs_unknown": None if macs is not None else (note or NO_EXAMPLE),
        "methods": per_method,
        "best_size": size,
        "best_macs": best_macs,
        "refused": refused,
        "check_errors": errors,
        "allows": allows,
    }


def _total_macs(model: nn.Module, ex: ModelInput | None) -> int | None:
    if ex is None:
        return None
    from torchslim.measure.macs import count_macs

    try:
        return int(count_macs(model, ex.example()))
    except Exception:  # noqa: BLE001 - mixed positional and keyword inputs: the per-layer pass already counted
        return None


def _best_macs(model: nn.Module, ex: ModelInput | None, entries: list[Method], refused: str | None) -> dict[str, Any]:
    from torchslim.pruning.structured import TRIAL_RATIO

    how = (f"structured pruning of a copy: every channel group loses {TRIAL_RATIO:.0%} of its channels (lowest L1 "
           "importance; one per slice where that would empty a coupled layer; groups whose removal breaks the forward or changes "
           "the model's output shapes kept whole); MACs counted with torch's FlopCounterMode on the example before and after. The ceiling the "
           "structure allows at that ratio, before fine-tuning: accuracy is not considered")  # fmt: skip
    if ex is None:
        return {"ratio": None, "unknown": NO_EXAMPLE, "how": how}
    if refused is not None:
        return {"ratio": None, "unknown": refused, "how": how}
    if not any(e.name == STRUCTURED for e in entries):
        return {"ratio": None, "unknown": "structured pruning is not registered", "how": how}
    from torchslim.pruning.applies import groups

    try:
        cg = groups(model, ex)
    except Exception as exc:  # noqa: BLE001 - each row's cannot["structured"] says the same
        return {"ratio": None, "unknown": f"{type(exc).__name__}: {one_line(exc, 200)}", "how": how}
    if cg.error is not None or not cg.macs_before or not cg.macs_after:
        return {"ratio": None, "unknown": cg.error or "no MACs counted", "how": how}
    return {
        "macs_before": cg.macs_before, "macs_after": cg.macs_after, "ratio": round(cg.macs_before / cg.macs_after, 3),
        "params_before": cg.params_before, "params_after": cg.params_after, "groups": len(cg.groups),
        "groups_pruned": sum(1 for g in cg.groups if g.removed), "max_ratio": cg.max_ratio, "how": how,
    }  # fmt: skip


# ----------------------------------------------------------------------------- formatting
def _label(name: str) -> str:
    return name or "(model)"


def _num(v: Any) -> str:
    return "?" if v is None else f"{v:,}" if isinstance(v, int) else str(v)


def _shape(s: list[int] | None) -> str:
    return "?" if s is None else "x".join(str(d) for d in s)


def _names(names: list[str], n: int = 6) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _headline(s: dict[str, Any]) -> str:
    inp = f"Example input {s['example']}" if s["example"] else f"No example input ({NO_EXAMPLE} for MACs, shapes and channel groups)"
    macs = f"{_num(s['macs'])} MACs per sample" if s["macs"] is not None else f"MACs unknown ({s['macs_unknown']})"
    return f"{inp}. {s['layers']} layers, {_num(s['params'])} parameters ({_num(s['float_bytes'])} bytes), {macs}."


__all__ = ["Inspection", "LayerInfo", "inspect"]

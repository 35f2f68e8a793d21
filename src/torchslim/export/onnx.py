"""``export_onnx``: FP32 and quantized models to ONNX, run in ONNX Runtime, checked against PyTorch.

Export uses torch's TorchScript-based exporter (``dynamo=False``): it needs no extra package
(the dynamo exporter needs onnxscript) and handles Hugging Face encoders. Quantized Linear
layers are exported through :mod:`torchslim.export.qdq`. After writing, the file is loaded in
ONNX Runtime and its outputs are compared with the PyTorch model on the example input; the
largest absolute difference is reported, and a bound can be enforced (``max_abs_diff``).
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn as nn
from pydantic import Field

from torchslim.config import StrictConfig
from torchslim.errors import CompatibilityError, ConfigError, DataError, OutputExistsError, require
from torchslim.export.cnn import float_proxy, rewrite_static, static_specs
from torchslim.export.qdq import QuantLinearSpec, rewrite_quantized
from torchslim.io import atomic_path
from torchslim.modes import kept_mode, unfused_attention
from torchslim.surgery import check_finite


class ExportConfig(StrictConfig):
    """Options of :func:`export_onnx` (also the keys of an ``export`` recipe step)."""

    opset: int = Field(17, ge=13, le=21, description="ONNX opset; group-wise INT4 weights need 21")
    dynamic_batch: bool = True
    dynamic_sequence: bool = True  # for token inputs (dict examples)
    check: bool = True
    max_abs_diff: float | None = Field(None, gt=0, description="fail if ORT differs from PyTorch by more")
    optimize: bool = True  # let ONNX Runtime fuse the graph (QDQ -> integer kernels) when checking
    per_token_form: Literal["normalized", "normalized-fixed", "integer"] = Field(
        "normalized",
        description="per-token INT8 as row-normalised input to ORT's fused dynamic GEMM, or spelled out with MatMulInteger",
    )
    residual: Literal["requant", "float"] = Field(
        "requant", description="static INT8 convs fused with a residual add: requantized (integer conv) or float (exact)"
    )



@dataclass
class ExportResult:
    """What was written and how closely ONNX Runtime reproduces PyTorch."""

    path: Path
    size_bytes: int
    inputs: list[str]
    outputs: list[str]
    quantized_layers: dict[str, str] = field(default_factory=dict)
    max_abs_diff: float | None = None
    ops: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path), "size_bytes": self.size_bytes, "inputs": self.inputs, "outputs": self.outputs,
            "quantized_layers": self.quantized_layers, "max_abs_diff": self.max_abs_diff, "ops": self.ops,
            "warnings": self.warnings,
        }  # fmt: skip


def vnni_only_layers(model: nn.Module) -> list[str]:
    """INT8 layers whose u8 x s8 products are exact only on CPUs with AVX-512 VNNI (or ARM):
    8-bit activations times weights outside [-63, 63]. ONNX Runtime's x86 kernels without VNNI
    add such products in pairs with int16 saturation (``vpmaddubsw``), as oneDNN and FBGEMM do."""
    from torchslim.quantization.modules import (
        Int8DynamicLinear,
        saturates_without_vnni,
        weights_fit_7_bits,
    )

    return [n for n, m in model.named_modules() if saturates_without_vnni(m)
            or (isinstance(m, Int8DynamicLinear) and not weights_fit_7_bits(m.weight_int8))]  # fmt: skip


class _HiddenStateOnly(nn.Module):
    """Wraps a model that takes named tensors so ONNX gets one input per tensor and the first
    output: a Hugging Face encoder's ``(input_ids, attention_mask) -> last_hidden_state``, or
    (``as_dict``) a model whose ``forward`` takes one dict argument."""

    def __init__(self, model: nn.Module, names: list[str], as_dict: bool = False) -> None:
        super().__init__()
        self.model = model
        self.names = names
        self.as_dict = as_dict

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        named = dict(zip(self.names, args, strict=True))
        out = self.model(named) if self.as_dict else self.model(**named)
        return out if isinstance(out, torch.Tensor) else out[0]


def quant_specs(model: nn.Module) -> dict[str, QuantLinearSpec]:
    """The quantized Linear layers of ``model`` and what each computes (see ``onnx_spec``)."""
    from torchslim.export.adapters import spec_of

    out: dict[str, QuantLinearSpec] = {}
    for name, m in model.named_modules():
        if any(name.startswith(k + ".") for k in out):  # inside a layer already described
            continue
        spec = spec_of(m)
        if spec is not None:
            out[name] = spec
    return out


def _float_proxy(model: nn.Module, specs: dict[str, QuantLinearSpec]) -> nn.Module:
    proxy = copy.deepcopy(model)
    for name, spec in specs.items():
        w = spec.dequantized()
        lin = nn.Linear(w.shape[1], w.shape[0], bias=spec.bias is not None)
        with torch.no_grad():
            lin.weight.copy_(w)
            if spec.bias is not None:
                lin.bias.copy_(spec.bias.float())
        parent, _, attr = name.rpartition(".")
        setattr(proxy.get_submodule(parent) if parent else proxy, attr, lin)
    return proxy


def _as_inputs(example: Any) -> tuple[list[str], tuple[torch.Tensor, ...], bool]:
    if isinstance(example, torch.Tensor):
        return ["input"], (example,), False
    if isinstance(example, Mapping):
        names = [k for k, v in example.items() if isinstance(v, torch.Tensor)]
        if not names:
            raise DataError("the example dict holds no tensors")
        return names, tuple(example[k] for k in names), True
    if isinstance(example, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in example):
        return [f"input_{i}" for i in range(len(example))], tuple(example), False
    kinds = [type(t).__name__ for t in example] if isinstance(example, (tuple, list)) else []
    raise DataError(
        f"example must be a tensor, a tuple of tensors, a dict of tensors (keyword arguments) or a tuple holding one "
        f"dict of tensors (a forward that takes a dict); got {type(example).__name__}{' of ' + str(kinds) if kinds else ''}"
    )


def default_example(model: nn.Module, architecture: str | None = None) -> Any:
    """An example input: ``[1, *input_shape]`` zeros for registered image models, tokens for encoders."""
    if architecture is not None:
        from torchslim.models import get_entry

        entry = get_entry(architecture)
        if entry.input_shape is not None:
            return torch.zeros(1, *entry.input_shape)
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "vocab_size"):
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(0, int(cfg.vocab_size), (2, 16), generator=g)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    raise DataError("cannot guess an example input for this model; pass example= (a tensor or dict of tensors)")


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    example: Any = None,
    config: ExportConfig | None = None,
    architecture: str | None = None,
    force: bool = False,
) -> ExportResult:
    """Write ``model`` as ONNX to ``path`` and check it in ONNX Runtime against PyTorch.

    Quantized layers (torchslim's INT8/INT4 Linear modules) become QDQ / integer ops.
    ``model`` is not modified (a copy is exported).

    >>> import tempfile
    >>> from torchslim.models import create_model
    >>> r = export_onnx(create_model("lenet300"), tempfile.mkdtemp() + "/m.onnx", architecture="lenet300")
    >>> r.max_abs_diff < 1e-4
    True
    """
    onnx = require("onnx", "onnx")
    require("onnxruntime", "onnx")
    config = config or ExportConfig()
    path = Path(path)
    if path.suffix != ".onnx":
        raise ConfigError(f"ONNX output must end in .onnx, got {path.name}")
    if path.exists() and not force:
        raise OutputExistsError(f"{path} already exists; choose another output or pass force=True (--force)")
    check_finite(model, "export")
    if example is None:
        example = default_example(model, architecture)
    dict_arg = isinstance(example, (tuple, list)) and len(example) == 1 and isinstance(example[0], Mapping)
    names, args, is_tokens = _as_inputs(example[0] if dict_arg else example)
    specs = quant_specs(model)
    if any(s.scale.dim() == 2 for s in specs.values()) and config.opset < 21:
        raise ConfigError(f"group-wise quantized weights need ONNX opset 21 (blocked DequantizeLinear); got opset={config.opset}")
    cnn_specs = static_specs(model)  # static INT8 QConv2d / QLinear (torchslim.export.cnn)
    proxy = float_proxy(_float_proxy(model, specs), cnn_specs).eval()
    wrapped = (_HiddenStateOnly(proxy, names, as_dict=dict_arg) if is_tokens else proxy).eval()
    axes: dict[str, dict[int, str]] = {}
    for n, t in zip(names, args, strict=True):
        ax = {}
        if config.dynamic_batch:
            ax[0] = "batch"
        if is_tokens and config.dynamic_sequence and t.dim() >= 2:
            ax[1] = "sequence"
        if ax:
            axes[n] = ax
    out_ax = {0: "batch"} if config.dynamic_batch else {}
    if is_tokens and config.dynamic_sequence:
        out_ax[1] = "sequence"
    if out_ax:
        axes["output"] = out_ax
    with atomic_path(path) as tmp:
        with warnings.catch_warnings(), torch.no_grad(), unfused_attention():
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(
                    wrapped, args, str(tmp), dynamo=False, opset_version=config.opset, input_names=names,
                    output_names=["output"], dynamic_axes=axes or None, do_constant_folding=True,
                )  # fmt: skip
            except Exception as exc:  # the exporter raises many types for unsupported ops
                raise CompatibilityError(f"torch.onnx could not export {type(model).__name__}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
        proto = onnx.load(str(tmp))
        found: dict[str, str] = {}
        if specs:
            found = rewrite_quantized(proto, specs, per_token_form=config.per_token_form)
            if config.opset >= 18:
                _axes_as_inputs(proto)
        if cnn_specs:
            found.update(rewrite_static(proto, cnn_specs, residual=config.residual))
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
        result = ExportResult(
            path=path, size_bytes=0, inputs=[i.name for i in proto.graph.input], outputs=["output"], quantized_layers=found,
            ops=_op_counts(proto),
        )  # fmt: skip
        wide = vnni_only_layers(model)
        if wide:
            result.warnings.append(
                f"{len(wide)} INT8 layers ({', '.join(wide[:3])}{', ...' if len(wide) > 3 else ''}) use 8-bit weights: exact in "
                "ONNX Runtime on CPUs with AVX-512 VNNI or on ARM, but their int16 pair sums can saturate on x86 CPUs "
                "without VNNI; for such targets quantize with 7-bit weights (reduce_range='weights', or weight_bits=7)"
            )  # fmt: skip
        if config.check:
            sess = ort_session(tmp, optimize=config.optimize)
            with torch.no_grad(), kept_mode(model):  # the caller's model keeps its train/eval mode
                model.eval()
                named = dict(zip(names, args, strict=True))
                ref = _first((model(named) if dict_arg else model(**named)) if is_tokens else model(*args))
            used = {i.name for i in sess.get_inputs()}  # the exporter drops inputs the model ignores (a label)
            got = sess.run(None, {n: t.numpy() for n, t in zip(names, args, strict=True) if n in used})[0]
            if got.shape != tuple(ref.shape):
                raise CompatibilityError(f"ONNX Runtime output shape {got.shape} differs from PyTorch {tuple(ref.shape)}")
            diff = np.abs(got - ref.float().numpy())
            if is_tokens and "attention_mask" in names:  # padded positions carry no meaning
                diff = diff[example["attention_mask"].numpy().astype(bool)]
            result.max_abs_diff = float(diff.max()) if diff.size else 0.0
            if config.max_abs_diff is not None and result.max_abs_diff > config.max_abs_diff:
                raise CompatibilityError(
                    f"ONNX Runtime output differs from PyTorch by {result.max_abs_diff:.3g} > max_abs_diff={config.max_abs_diff}; "
                    "nothing was written"
                )
    result.size_bytes = path.stat().st_size
    return result


def _first(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "last_hidden_state"):
        return out.last_hidden_state
    return out[0]


def _axes_as_inputs(proto: Any) -> None:
    # ReduceMax takes axes as an input from opset 18 on.
    from onnx import helper, numpy_helper

    for node in proto.graph.node:
        if node.op_type == "ReduceMax":
            attrs = {a.name: a for a in node.attribute}
            if "axes" in attrs:
                axes = list(attrs["axes"].ints)
                name = node.name or node.output[0]
                init = numpy_helper.from_array(np.array(axes, np.int64), f"{name}__axes")
                proto.graph.initializer.append(init)
                node.input.append(init.name)
                keep = [a for a in node.attribute if a.name != "axes"]
                del node.attribute[:]
                node.attribute.extend(keep)
    del helper


def _op_counts(proto: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in proto.graph.node:
        out[n.op_type] = out.get(n.op_type, 0) + 1
    return dict(sorted(out.items()))


def ort_session(path: str | Path | bytes, *, threads: int | None = 2, optimize: bool = True, spin: bool = False) -> Any:
    """An ONNX Runtime CPU session with fixed threads (``None``: ORT's default).

    ``spin``: worker threads spin while a run lasts and stop when it returns. In side-by-side runs
    at 2 threads (one-off, not committed) MiniLM, hundreds of small ops per run, ran faster with
    it, while the CNN rows of bench-quantization were mixed, so :class:`OrtEncoder` spins by
    default and :class:`OrtModel` does not.
    """
    ort = require("onnxruntime", "onnx")
    so = ort.SessionOptions()
    if threads is not None:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    so.log_severity_level = 3
    # Without spin, threads sleep between calls; with it, force_spinning_stop still ends the
    # spinning when a run returns, so a model timed next, side by side, gets the CPU back.
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    if spin:
        so.add_session_config_entry("session.force_spinning_stop", "1")
    src = path if isinstance(path, bytes) else str(path)
    try:
        return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
        raise CompatibilityError(f"ONNX Runtime cannot load the model: {str(exc).splitlines()[0]}") from exc


class OrtEncoder:
    """Run an exported encoder in ONNX Runtime with the PyTorch call signature.

    ``OrtEncoder(path)(input_ids=..., attention_mask=...)`` returns the last hidden state as a
    torch tensor, so :func:`torchslim.transformers.embed.encode` and the latency tools take it.
    """

    def __init__(self, path: str | Path | bytes, *, threads: int | None = 2, optimize: bool = True, spin: bool = True) -> None:
        self.session = ort_session(path, threads=threads, optimize=optimize, spin=spin)
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, **inputs: torch.Tensor) -> torch.Tensor:
        feed = {}
        for n in self.input_names:
            if n not in inputs:
                raise DataError(f"the ONNX model needs input {n!r}; got {sorted(inputs)}")
            feed[n] = inputs[n].numpy()
        return torch.from_numpy(self.session.run(None, feed)[0])


class OrtModel(nn.Module):
    """An exported single-input model (e.g. an image classifier) run in ONNX Runtime, called like PyTorch.

    A module (no parameters) so ``torchslim.measure.accuracy`` / ``compare_latency`` take it as is.

    >>> import tempfile
    >>> from torchslim.models import create_model
    >>> p = tempfile.mkdtemp() + "/m.onnx"
    >>> _ = export_onnx(create_model("lenet5"), p, architecture="lenet5")
    >>> OrtModel(p)(torch.zeros(3, 1, 28, 28)).shape
    torch.Size([3, 10])
    """

    def __init__(self, path: str | Path | bytes, *, threads: int | None = 2, optimize: bool = True, spin: bool = False) -> None:
        super().__init__()
        self.session = ort_session(path, threads=threads, optimize=optimize, spin=spin)
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise CompatibilityError(f"OrtModel runs single-input models; this one takes {[i.name for i in inputs]} (use OrtEncoder)")
        self.input_name = inputs[0].name
        self.input_shape = list(inputs[0].shape)  # ints for fixed dimensions, names or None for dynamic ones

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise DataError(f"OrtModel takes a torch.Tensor, got {type(x).__name__}")
        if x.dim() != len(self.input_shape) or any(
            isinstance(d, int) and d != n for d, n in zip(self.input_shape, x.shape, strict=True)
        ):
            raise DataError(f"the ONNX model takes input of shape {self.input_shape}; got {list(x.shape)}")
        if not x.is_floating_point():
            raise DataError(f"the ONNX model takes float input; got {x.dtype}")
        arr = np.ascontiguousarray(x.detach().cpu().float().numpy())
        return torch.from_numpy(self.session.run(None, {self.input_name: arr})[0])


os.environ.setdefault("HF_HUB_OFFLINE", "1")

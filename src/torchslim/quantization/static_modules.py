"""Static INT8 layers and the quantized activation that flows between them.

A statically quantized model keeps its own class and ``forward``; only its layers are swapped.
Between swapped layers activations travel as :class:`QTensor` (``uint8`` data plus scale and zero
point), so consecutive integer layers never go back to float: ``ReLU``, max/average pooling,
flatten/reshape and dropout work on the integers directly (``__torch_function__``), and any other
operation dequantizes its inputs and runs in float (correct, only slower).

Residual blocks: a :class:`QConv2d` planned to absorb the ``+`` after it returns a
:class:`PendingConv`; the ``+`` then runs one oneDNN convolution that adds the shortcut into its
accumulator and applies the ReLU (``qconv2d_pointwise.binary``, "sum" post-op), so the sum is
never dequantized. This is what makes INT8 ResNets faster than FP32 on the CPU, where peers that
quantize/dequantize around every add are slower than float.

Kernels: ``torch.ops.onednn.qconv_pointwise`` / ``qconv2d_pointwise.binary`` /
``qlinear_pointwise`` (what PT2E + Inductor lowers to), called eagerly on plain integer tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from torchslim.errors import CompatibilityError
from torchslim.quantization.integer_ops import INTEGER_OPS, op_for_method, op_named

_ZERO = torch.zeros(1, dtype=torch.int64)
_ADD_FUNCTIONS = frozenset(op_named("add").functions)


def quantize_tensor(x: torch.Tensor, scale: float, zp: int, levels: int) -> torch.Tensor:
    """Float -> uint8 with ``q = clamp(round(x / scale) + zp, 0, levels)``."""
    return torch.round(x * (1.0 / scale)).add_(zp).clamp_(0, levels).to(torch.uint8)


def dequantize_uint8(data: torch.Tensor, scale: float, zp: int) -> torch.Tensor:
    """uint8 -> float32 with ``(data - zp) * scale``."""
    return data.to(torch.float32).sub_(zp).mul_(scale)


class QTensor:
    """A quantized activation: ``uint8`` ``data`` standing for ``(data - zp) * scale``.

    Not a ``torch.Tensor``: functions it does not know dequantize it first, so it is always
    safe, and the fast paths are explicit.
    """

    __slots__ = ("data", "scale", "zp")

    def __init__(self, data: torch.Tensor, scale: float, zp: int) -> None:
        self.data, self.scale, self.zp = data, scale, zp

    def dequantize(self) -> torch.Tensor:
        return dequantize_uint8(self.data, self.scale, self.zp)

    # Tensor-like metadata the models' forwards use.
    @property
    def shape(self) -> torch.Size:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.dim()

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def device(self) -> torch.device:
        return self.data.device

    def size(self, dim: int | None = None) -> Any:
        return self.data.size() if dim is None else self.data.size(dim)

    def dim(self) -> int:
        return self.data.dim()

    def numel(self) -> int:
        return self.data.numel()

    def _same(self, data: torch.Tensor) -> QTensor:
        return QTensor(data, self.scale, self.zp)

    def view(self, *shape: Any) -> QTensor:
        return self._same(self.data.reshape(*shape))

    reshape = view

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> QTensor:
        return self._same(torch.flatten(self.data, start_dim, end_dim))

    def contiguous(self, *a: Any, **k: Any) -> QTensor:
        return self._same(self.data.contiguous(*a, **k))

    def __add__(self, other: Any) -> Any:
        return _add(self, other)

    __radd__ = __add__

    def __getattr__(self, name: str) -> Any:
        if op_for_method(name) is not None:  # x.relu() and the like: the same handlers as relu(x)
            func = getattr(torch.Tensor, name)
            return lambda *args, **kwargs: QTensor.__torch_function__(func, (QTensor,), (self, *args), kwargs)
        return getattr(self.dequantize(), name)

    def __repr__(self) -> str:
        return f"QTensor(shape={tuple(self.data.shape)}, scale={self.scale:.4g}, zero_point={self.zp})"

    @classmethod
    def __torch_function__(cls, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        handler = _HANDLERS.get(func)
        if handler is not None:
            out = handler(*args, **kwargs)
            if out is not NotImplemented:
                return out
        return func(*_to_float(args), **_to_float(kwargs))


class PendingConv:
    """A convolution whose result waits for the ``+`` it will absorb (see module docstring)."""

    __slots__ = ("conv", "qx", "x_scale", "x_zp")

    def __init__(self, conv: QConv2d, qx: torch.Tensor, x_scale: float, x_zp: int) -> None:
        self.conv, self.qx, self.x_scale, self.x_zp = conv, qx, x_scale, x_zp

    def materialize(self) -> torch.Tensor:
        return self.conv.integer_forward(self.qx, self.x_scale, self.x_zp, out_float=True)

    @property
    def shape(self) -> torch.Size:
        return self.materialize().shape

    def size(self, dim: int | None = None) -> Any:
        return self.shape if dim is None else self.shape[dim]

    def __add__(self, other: Any) -> Any:
        return _add(self, other)

    __radd__ = __add__

    def __getattr__(self, name: str) -> Any:
        return getattr(self.materialize(), name)

    @classmethod
    def __torch_function__(cls, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in _ADD_FUNCTIONS:
            out = _add(*args, **kwargs)
            if out is not NotImplemented:
                return out
        return func(*_to_float(args), **_to_float(kwargs))


def unfold_columns(qx: torch.Tensor, kw: int, pw: int, sw: int, zp: int) -> torch.Tensor:
    """A one-channel uint8 image ``[n, 1, h, w]`` as ``kw`` channels: channel ``j`` at output column
    ``o`` holds input column ``o * sw + j - pw`` (the zero point where that is padding).

    A ``kh x kw`` convolution over one channel equals a ``kh x 1`` convolution over these ``kw``
    channels. Written here because oneDNN's AVX2 int8 convolution pads the input channels to a
    multiple of 4, so a one-channel 5x5 kernel computes 100 products per output of which 25
    count; over 5 column channels (padded to 8) it computes 40, at the cost of the copy.
    ``make bench-quantization`` times the models that use it (LeNet-5, ResNet-20).
    """
    n, c, h, w = qx.shape
    x = qx.reshape(n, h, w)
    if pw:
        x = F.pad(x, (pw, pw), value=zp)
    wo = (x.shape[2] - kw) // sw + 1
    out = torch.empty((n, h, wo, kw), dtype=torch.uint8)
    for j in range(kw):  # kw strided copies of whole rows: one copy per element measured far slower
        out[..., j] = x[:, :, j : j + sw * (wo - 1) + 1 : sw]
    return out.permute(0, 3, 1, 2)


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    if t.dim() == 4 and not t.is_contiguous(memory_format=torch.channels_last):
        return t.contiguous(memory_format=torch.channels_last)
    return t


def _to_float(x: Any) -> Any:
    if isinstance(x, QTensor):
        return x.dequantize()
    if isinstance(x, PendingConv):
        return x.materialize()
    if isinstance(x, (list, tuple)):
        return type(x)(_to_float(v) for v in x)
    if isinstance(x, dict):
        return {k: _to_float(v) for k, v in x.items()}
    return x


def _add(a: Any, b: Any, *, alpha: Any = 1, out: Any = None) -> Any:
    if out is None and alpha == 1:
        if isinstance(a, PendingConv) and not isinstance(b, PendingConv):
            return a.conv._run_add(a, b)
        if isinstance(b, PendingConv) and not isinstance(a, PendingConv):
            return b.conv._run_add(b, a)
    a, b = _to_float(a), _to_float(b)
    return torch.add(a, b, alpha=alpha, out=out)


def _relu(x: Any, inplace: bool = False) -> Any:
    if not isinstance(x, QTensor):
        return NotImplemented
    if inplace:  # F.relu(x, inplace=True), F.relu_, x.relu_(): the caller may keep using x
        x.data.clamp_min_(x.zp)
        return x
    return x._same(relu_uint8(x.data, x.zp))


def _relu_(x: Any) -> Any:
    return _relu(x, inplace=True)


def relu_uint8(data: torch.Tensor, zp: int) -> torch.Tensor:
    """ReLU on integers standing for ``(data - zp) * scale``: clamp at the zero point."""
    return data if zp == 0 else torch.clamp_min(data, zp)


def _max_pool2d(x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
                ceil_mode: bool = False, return_indices: bool = False) -> Any:  # fmt: skip
    if not isinstance(x, QTensor) or return_indices:
        return NotImplemented
    return x._same(max_pool2d_uint8(x.data, kernel_size, stride, padding, dilation, ceil_mode))


def max_pool2d_uint8(data: torch.Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
                     ceil_mode: bool = False) -> torch.Tensor:  # fmt: skip
    """``F.max_pool2d`` on quantized integers (max commutes with the monotonic dequantization)."""
    k = _pair(kernel_size)
    s = _pair(stride if stride not in (None, []) else kernel_size)
    n, c, h, w = data.shape
    if _pair(padding) == (0, 0) and _pair(dilation) == (1, 1) and k == s and not ceil_mode:
        # Non-overlapping windows: elementwise maxima of strided views. (uint8 amax/max_pool2d
        # reductions measured 100-500x slower than this on the CPU.)
        ho, wo = h // k[0], w // k[1]
        if data.is_contiguous(memory_format=torch.channels_last) and h == ho * k[0] and w == wo * k[1]:
            # NHWC memory: max over contiguous channel blocks, first along W then along H.
            nhwc = data.permute(0, 2, 3, 1).reshape(n, h, wo, k[1] * c)
            row = nhwc[..., :c]
            for j in range(1, k[1]):
                row = torch.maximum(row, nhwc[..., j * c : (j + 1) * c])
            rows = row.reshape(n, ho, k[0], wo, c)
            out = rows[:, :, 0]
            for i in range(1, k[0]):
                out = torch.maximum(out, rows[:, :, i])
            return out.permute(0, 3, 1, 2)
        d = data[:, :, : ho * k[0], : wo * k[1]]
        out = None
        for i in range(k[0]):
            for j in range(k[1]):
                v = d[:, :, i :: k[0], j :: k[1]]
                out = v if out is None else torch.maximum(out, v)
        assert out is not None
        return out
    return F.max_pool2d(data.float(), k, s, padding, dilation, ceil_mode).to(torch.uint8)


def _adaptive_avg_pool2d(x: Any, output_size: Any) -> Any:
    if not isinstance(x, QTensor):
        return NotImplemented
    return x._same(adaptive_avg_pool2d_uint8(x.data, output_size))


def adaptive_avg_pool2d_uint8(data: torch.Tensor, output_size: Any) -> torch.Tensor:
    """``F.adaptive_avg_pool2d`` on quantized integers (averaging keeps scale and zero point)."""
    if _pair(output_size) == (1, 1):
        out = data.float().mean((2, 3), keepdim=True)
    else:
        out = F.adaptive_avg_pool2d(data.float(), output_size)
    return torch.round(out).to(torch.uint8)


def _avg_pool2d(x: Any, *args: Any, **kwargs: Any) -> Any:
    if not isinstance(x, QTensor):
        return NotImplemented
    return x._same(avg_pool2d_uint8(x.data, *args, **kwargs))


def avg_pool2d_uint8(data: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """``F.avg_pool2d`` on quantized integers."""
    return torch.round(F.avg_pool2d(data.float(), *args, **kwargs)).to(torch.uint8)


def _flatten(x: Any, start_dim: int = 0, end_dim: int = -1) -> Any:
    return x.flatten(start_dim, end_dim) if isinstance(x, QTensor) else NotImplemented


def _dropout(x: Any, p: float = 0.5, training: bool = False, inplace: bool = False) -> Any:
    return x if isinstance(x, QTensor) and not training else NotImplemented


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    t = tuple(v)
    return (t[0], t[0]) if len(t) == 1 else (t[0], t[1])


def _same_integers(func: Callable[..., Any]) -> Callable[..., Any]:
    """A reshape that keeps the integers' scale and zero point (``Tensor.view`` and the like)."""

    def run(x: Any, *args: Any, **kwargs: Any) -> Any:
        return x._same(func(x.data, *args, **kwargs)) if isinstance(x, QTensor) else NotImplemented

    return run


# How the eager runtime runs each op of the one table (torchslim.quantization.integer_ops).
_EAGER: dict[str, Callable[..., Any]] = {
    "relu": _relu, "max_pool2d": _max_pool2d, "adaptive_avg_pool2d": _adaptive_avg_pool2d,
    "avg_pool2d": _avg_pool2d, "flatten": _flatten, "identity": _dropout, "add": _add,
}  # fmt: skip
_HANDLERS: dict[Any, Callable[..., Any]] = {
    f: _same_integers(f) if op.name == "reshape" else _EAGER[op.name] for op in INTEGER_OPS for f in op.functions
}
_HANDLERS.update(dict.fromkeys((F.relu_, torch.relu_, torch.Tensor.relu_), _relu_))


def _drop_defaults(cfg: dict[str, Any], cls: type) -> dict[str, Any]:
    import inspect

    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in cfg.items() if k not in params or params[k].default is inspect.Parameter.empty
            or params[k].default != v}  # fmt: skip


class _Bound:
    """A layer's kernel arguments, read from its buffers once: the prepacked weight for one input
    quantization, ``(weight_scale, weight_zero_point, bias)`` and the output ``(scale, zero_point)``.

    Rebuilt when the key (inputs, buffers and their versions) changes; a frozen layer (lowered
    graph) skips the key, because reading module buffers costs microseconds per access, a visible
    share of a small CNN's forward.
    """

    def __init__(self) -> None:
        self.key: tuple[Any, ...] | None = None
        self.packed: torch.Tensor | None = None
        self.weights: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] = ()  # type: ignore[assignment]
        self.out: tuple[float, int] = (1.0, 0)
        self.x: tuple[float, int] | None = None
        self.geometry: tuple[Any, ...] = ()  # a convolution's (stride, padding, dilation, groups) as run

    def __deepcopy__(self, memo: dict[int, Any]) -> _Bound:
        return _Bound()

    def __getstate__(self) -> dict[str, Any]:
        return _Bound().__dict__


class _StaticBase(nn.Module):
    """Shared buffers: int8 weight, per-channel (or one repeated) scale, float bias, qparams."""

    def _init_common(self, out_channels: int, weight_shape: tuple[int, ...], bias: bool, act_levels: int,
                     out_float: bool) -> None:  # fmt: skip
        self.act_levels, self.out_float = act_levels, out_float
        self.register_buffer("weight_int8", torch.zeros(weight_shape, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_channels))
        self.register_buffer("bias", torch.zeros(out_channels) if bias else None)
        # Activation (scale, zero point) of the input, the output and a fused add's shortcut, in
        # one buffer so the checkpoint stores them beside the weights at little header cost.
        self.register_buffer("qparams", torch.tensor([[1.0, 0.0]] * 3))
        self.register_buffer("_w_zp", torch.zeros(out_channels, dtype=torch.int64), persistent=False)
        self._bound = _Bound()
        self.frozen = False  # set on the lowered graph's copy (see lowering.py)
        self._qp_cache: tuple[Any, list[tuple[float, int]]] = (None, [])

    def input_levels(self) -> int:
        """Largest unsigned level of the quantized input (255: 8-bit, 127: 7-bit)."""
        return int(self.act_levels)

    def activation_qparams(self, row: int) -> tuple[float, int]:
        """Row 0: input, 1: output, 2: the fused add's shortcut (accumulator).

        Read as Python numbers once per change of the buffer: indexing the tensor on every call
        costs two tensor ops per layer and forward.
        """
        key = (self.qparams.data_ptr(), self.qparams._version)
        if self._qp_cache[0] != key:
            self._qp_cache = (key, [(s, int(zp)) for s, zp in self.qparams.tolist()])
        return self._qp_cache[1][row]

    def _bind(self, xs: float, xz: int, pack: Callable[[], torch.Tensor]) -> _Bound:
        b = self._bound
        if self.frozen and b.x == (xs, xz):
            return b
        w, sc = self.weight_int8, self.weight_scale
        key = (w.data_ptr(), w._version, sc.data_ptr(), sc._version, self.qparams.data_ptr(), self.qparams._version,
               None if self.bias is None else self.bias.data_ptr(), xs, xz)  # fmt: skip
        if b.key != key:
            b.packed, b.key, b.x = pack(), key, (xs, xz)
            b.weights, b.out = (sc, self._w_zp, self.bias), self.activation_qparams(1)
        return b

    def set_qparams(self, *, input: tuple[float, int], output: tuple[float, int] | None = None,
                    accum: tuple[float, int] | None = None) -> None:  # fmt: skip
        for row, qp in enumerate((input, output, accum)):
            if qp is not None:
                self.qparams[row] = torch.tensor([qp[0], qp[1]])

    def dequantized_weight(self) -> torch.Tensor:
        shape = (-1,) + (1,) * (self.weight_int8.dim() - 1)
        return self.weight_int8.float() * self.weight_scale.view(shape)

    def _input(self, x: Any) -> tuple[torch.Tensor, float, int]:
        if isinstance(x, QTensor):
            return x.data, x.scale, x.zp
        if isinstance(x, PendingConv):
            x = x.materialize()
        s, zp = self.activation_qparams(0)
        return quantize_tensor(x.float(), s, zp, self.act_levels), s, zp


def has_static_layers(model: nn.Module) -> bool:
    """Whether ``model`` holds static INT8 layers (:class:`QConv2d`, :class:`QLinear`)."""
    return any(isinstance(m, _StaticBase) for m in model.modules())


class QConv2d(_StaticBase):
    """INT8 ``nn.Conv2d`` (BatchNorm folded in) with static input/output quantization.

    ``fuse``: ``"none"``, ``"relu"`` (the ReLU after it runs inside the kernel), ``"add"`` or
    ``"add_relu"`` (returns a :class:`PendingConv`; the following ``+ shortcut`` and ReLU run in
    the same kernel). ``out_float``: emit float32 instead of a :class:`QTensor` (for layers
    whose consumers need float).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: list[int],
                 stride: tuple[int, ...] | list[int] = (1, 1), padding: tuple[int, ...] | list[int] = (0, 0),
                 dilation: tuple[int, ...] | list[int] = (1, 1), groups: int = 1, bias: bool = True, *, fuse: str = "none",
                 out_float: bool = False, act_levels: int = 255, accum_inplace: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride = list(kernel_size), list(stride)
        self.padding, self.dilation = list(padding), list(dilation)
        self.fuse, self.accum_inplace = fuse, accum_inplace
        self._init_common(out_channels, (out_channels, in_channels // groups, *kernel_size), bias, act_levels, out_float)

    def config(self) -> dict[str, Any]:
        """Constructor arguments for the checkpoint (defaults left out: the header stays small)."""
        cfg = dict(
            in_channels=self.in_channels, out_channels=self.out_channels, kernel_size=self.kernel_size,
            stride=tuple(self.stride), padding=tuple(self.padding), dilation=tuple(self.dilation), groups=self.groups,
            bias=self.bias is not None, fuse=self.fuse, out_float=self.out_float, act_levels=self.act_levels,
            accum_inplace=self.accum_inplace,
        )  # fmt: skip
        return _drop_defaults(cfg, type(self))

    def _bound_for(self, operand: torch.Tensor, xs: float, xz: int) -> _Bound:
        def pack() -> torch.Tensor:
            w, geometry = self.weight_int8, (self.stride, self.padding, self.dilation, self.groups)
            if self.columns_as_channels:
                oc, c, kh, kw = w.shape
                w = w.permute(0, 3, 1, 2).reshape(oc, kw * c, kh, 1)
                geometry = ([self.stride[0], 1], [self.padding[0], 0], [self.dilation[0], 1], 1)
            self._bound.geometry = geometry
            return torch.ops.onednn.qconv_prepack(w, self.weight_scale, xs, xz, *geometry, list(operand.shape))

        return self._bind(xs, xz, pack)

    @property
    def columns_as_channels(self) -> bool:
        """Whether the kernel's columns run as input channels (one-channel inputs, see :func:`unfold_columns`)."""
        return self.in_channels == 1 and self.groups == 1 and self.kernel_size[1] > 1 and self.dilation[1] == 1

    def _operand(self, qx: torch.Tensor, xz: int, unfolded: bool = False) -> torch.Tensor:
        if unfolded:
            return qx
        if self.columns_as_channels:
            return unfold_columns(qx, self.kernel_size[1], self.padding[1], self.stride[1], xz)
        return _channels_last(qx)

    def forward(self, x: Any) -> Any:
        qx, xs, xz = self._input(x)
        if self.fuse in ("add", "add_relu"):
            return PendingConv(self, _channels_last(qx), xs, xz)
        y = self.integer_forward(qx, xs, xz)
        return y if self.out_float else QTensor(y, *self.activation_qparams(1))

    def integer_forward(self, qx: torch.Tensor, xs: float, xz: int, *, out_float: bool | None = None,
                        unfolded: bool = False) -> torch.Tensor:  # fmt: skip
        """The convolution of uint8 ``qx`` (standing for ``(qx - xz) * xs``), without the fused add.

        Returns uint8 at the layer's output quantization, or float32 when ``out_float``
        (default: the layer's own setting). ``unfolded``: ``qx`` already holds the kernel's
        columns as channels (:func:`unfold_columns`).
        """
        qx = self._operand(qx, xz, unfolded)
        b = self._bound_for(qx, xs, xz)
        if self.out_float if out_float is None else out_float:
            y = torch.ops.onednn.qconv_pointwise(
                qx, xs, xz, b.packed, *b.weights, *b.geometry, 1.0, 0, torch.float32, "none", [], "",
            )  # fmt: skip
            return F.relu(y) if self.fuse == "relu" else y
        attr = "relu" if self.fuse in ("relu", "add_relu") else "none"
        return torch.ops.onednn.qconv_pointwise(
            qx, xs, xz, b.packed, *b.weights, *b.geometry, *b.out, torch.uint8, attr, [], "",
        )  # fmt: skip

    def _run_add(self, pending: PendingConv, other: Any) -> Any:
        if isinstance(other, QTensor):
            y = self.integer_add(pending.qx, pending.x_scale, pending.x_zp, other.data, other.scale, other.zp)
        else:
            a_s, a_z = self.activation_qparams(2)
            shortcut = quantize_tensor(_to_float(other).float(), a_s, a_z, self.act_levels)
            y = self.integer_add(pending.qx, pending.x_scale, pending.x_zp, shortcut, a_s, a_z, owned=True)
        return QTensor(y, *self.activation_qparams(1))

    def integer_add(self, qx: torch.Tensor, xs: float, xz: int, shortcut: torch.Tensor, a_s: float, a_z: int, *,
                    owned: bool = False) -> torch.Tensor:  # fmt: skip
        """The convolution plus ``shortcut`` (uint8 at ``(a_s, a_z)``) and the fused ReLU, in one kernel.

        oneDNN accumulates into the shortcut's memory: it is copied first unless ``owned`` (a
        fresh tensor) or the plan found it dead after the add (``accum_inplace``).
        """
        if owned or self.accum_inplace:
            accum = _channels_last(shortcut)
        else:
            accum = shortcut.clone(memory_format=torch.channels_last)
        qx = self._operand(qx, xz)
        b = self._bound_for(qx, xs, xz)
        w_scale, w_zp, bias = b.weights
        return torch.ops.onednn.qconv2d_pointwise.binary(
            qx, xs, xz, b.packed, w_scale, w_zp, accum, bias, *b.geometry, *b.out, torch.uint8, a_s, a_z, "sum", 1.0, "relu" if self.fuse == "add_relu" else "none", [], "",
        )  # fmt: skip

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={tuple(self.kernel_size)}, "
                f"stride={tuple(self.stride)}, fuse={self.fuse}, out_float={self.out_float}")  # fmt: skip


class QLinear(_StaticBase):
    """INT8 ``nn.Linear`` with static input/output quantization (``fuse``: ``"none"``/``"relu"``).

    The one static INT8 Linear: planned on an FX graph by :class:`StaticInt8Config` (integer
    activations flow between layers), or made alone by :meth:`from_float` with a calibrated input
    range and float output, as the encoder INT8 method does for models torch.fx cannot trace.
    Under ``torch.compile`` (:func:`~torchslim.quantization.compile_int8` of such a model) the
    float-output form reads its scale and zero point as tensors and leaves the weight prepack to
    Inductor's freezing.

    >>> lin = nn.Linear(16, 8)
    >>> q = QLinear.from_float(lin, act_range=(-3.0, 3.0))
    >>> x = torch.randn(4, 16).clamp(-3, 3)
    >>> bool((q(x) - lin(x)).abs().max() < 0.1)
    True
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, fuse: str = "none",
                 out_float: bool = False, act_levels: int = 255) -> None:  # fmt: skip
        super().__init__()
        self.in_features, self.out_features, self.fuse = in_features, out_features, fuse
        self._init_common(out_features, (out_features, in_features), bias, act_levels, out_float)

    def config(self) -> dict[str, Any]:
        """Constructor arguments for the checkpoint (defaults left out)."""
        cfg = dict(in_features=self.in_features, out_features=self.out_features, bias=self.bias is not None,
                   fuse=self.fuse, out_float=self.out_float, act_levels=self.act_levels)  # fmt: skip
        return _drop_defaults(cfg, type(self))

    @classmethod
    @torch.no_grad()
    def from_float(cls, linear: nn.Linear, *, act_range: tuple[float, float], act_bits: int = 8) -> QLinear:
        """Per-channel symmetric int8 weights, the unsigned ``act_bits`` input covering ``act_range``
        (asymmetric, zero exact), float output."""
        from torchslim.quantization.modules import quantize_weight_per_channel
        from torchslim.quantization.observers import qparams

        m = cls(linear.in_features, linear.out_features, linear.bias is not None, out_float=True,
                act_levels=2**act_bits - 1)  # fmt: skip
        q, sc = quantize_weight_per_channel(linear.weight)
        m.weight_int8.copy_(q)
        m.weight_scale.copy_(sc)
        if linear.bias is not None:
            m.bias.copy_(linear.bias.detach().float())
        m.set_qparams(input=qparams(*act_range, bits=act_bits))
        return m

    def forward(self, x: Any) -> Any:
        if torch.compiler.is_compiling():
            return self._traced_forward(x)
        qx, xs, xz = self._input(x)
        y = self.integer_forward(qx, xs, xz)
        return y if self.out_float else QTensor(y, *self.activation_qparams(1))

    def prepare_tracing(self) -> None:
        """Fix the input scale and zero point as Python numbers for ``torch.compile`` (on
        :func:`compile_int8`'s copy): constants of the traced graph, guarded by Dynamo."""
        self._traced_x = self.activation_qparams(0)

    def _traced_forward(self, x: torch.Tensor) -> torch.Tensor:
        """What ``torch.compile`` traces: no cached prepack, no host reads of buffers."""
        traced = getattr(self, "_traced_x", None)
        if traced is None or not self.out_float or not isinstance(x, torch.Tensor):
            raise CompatibilityError(
                "torch.compile takes static INT8 Linear layers with float input and output, through "
                "torchslim.quantization.compile_int8 (which lowers models quantized with StaticInt8Config)"
            )
        xs, xz = traced
        qx = quantize_tensor(x.reshape(-1, self.in_features).float(), xs, xz, self.act_levels)
        packed = torch.ops.onednn.qlinear_prepack(self.weight_int8, None)
        y = torch.ops.onednn.qlinear_pointwise(
            qx, xs, xz, packed, self.weight_scale, self._w_zp, self.bias, 1.0, 0, torch.float32,
            "relu" if self.fuse == "relu" else "none", [], "",
        )  # fmt: skip
        return y.reshape(*x.shape[:-1], self.out_features)

    def integer_forward(self, qx: torch.Tensor, xs: float, xz: int) -> torch.Tensor:
        """The layer on uint8 ``qx`` (standing for ``(qx - xz) * xs``): uint8 at the output
        quantization, or float32 when ``out_float``."""
        lead = qx.shape[:-1]
        if len(lead) != 1:
            qx = qx.reshape(-1, self.in_features)
        b = self._bind(xs, xz, lambda: torch.ops.onednn.qlinear_prepack(self.weight_int8, None))
        attr = "relu" if self.fuse == "relu" else "none"
        os_, oz, dtype = (1.0, 0, torch.float32) if self.out_float else (*b.out, torch.uint8)
        y = torch.ops.onednn.qlinear_pointwise(qx, xs, xz, b.packed, *b.weights, os_, oz, dtype, attr, [], "")
        return y if len(lead) == 1 else y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, fuse={self.fuse}, out_float={self.out_float}"

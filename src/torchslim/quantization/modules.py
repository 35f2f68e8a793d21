"""Quantized layers that run on the CPU and store integer weights (stable public API).

Two drop-in replacements for :class:`torch.nn.Linear`, each built with ``from_float``:

* :class:`Int8DynamicLinear` - INT8 weights (symmetric, one scale per output channel) and
  activations quantized at run time (one scale per token/row by default). The matrix product is
  oneDNN's u8 x s8 -> s32 GEMM with AVX-512 VNNI (``torch.ops.onednn.qlinear_pointwise``, the
  kernel PT2E + Inductor lowers to), called eagerly on plain ``uint8``/``int8`` tensors.
  :func:`compile_int8` runs a model of such layers through ``torch.compile``, which fuses the
  activation quantization into the neighbouring elementwise kernels.
* :class:`WeightOnlyLinear` - INT8 or INT4 weights, asymmetric, one FP16 scale and one integer
  zero point per group of ``group_size`` input features; INT4 values are packed two per byte.
  Activations stay float; the weight is dequantized on the fly and multiplied with SGEMM.

Every tensor a layer needs lives in its buffers, so ``state_dict`` (and torchslim's checkpoint,
see :mod:`torchslim.quantization.codecs`) holds the integer data itself: about 4x (INT8) and
6.5-8x (INT4) smaller than FP32.

>>> import torch, torch.nn as nn
>>> lin = nn.Linear(64, 32)
>>> q = Int8DynamicLinear.from_float(lin)
>>> x = torch.randn(5, 64)
>>> bool((q(x) - lin(x)).norm() / lin(x).norm() < 0.03)
True
>>> w4 = WeightOnlyLinear.from_float(lin, bits=4, group_size=32)
>>> w4.weight_packed.dtype, tuple(w4.weight_packed.shape)
(torch.uint8, (32, 32))
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from typing import Any, ClassVar, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from torchslim.errors import CompatibilityError, ConfigError

ActGranularity = Literal["per_token", "per_tensor"]


def act_qmax() -> int:
    """Largest symmetric activation level the integer GEMM can take without overflow here.

    Without AVX-512 VNNI, oneDNN (like FBGEMM) multiplies u8 x s8 with ``vpmaddubsw``, which sums
    pairs of products into int16 and saturates: ``2 * 255 * 127 > 32767``. Measured on an AVX2
    EPYC: 13% relative output error with 8-bit activations, 1.5% with 7-bit ones. So activations
    use 7 bits (``u8`` in ``[0, 127]``, FBGEMM's "reduce_range") unless the CPU has VNNI.
    """
    return 127 if _has_vnni() else 63


@functools.lru_cache(maxsize=1)
def _has_vnni() -> bool:
    """Whether the integer kernels may use 8 bits on both operands here. ``TORCHSLIM_INT8_ISA=avx2``
    takes the CPU-without-VNNI decisions on any CPU (7-bit ranges are exact everywhere), so the
    test suite can run the other kind's paths: ``TORCHSLIM_INT8_ISA=avx2 make test``."""
    if os.environ.get("TORCHSLIM_INT8_ISA", "").lower() == "avx2":
        return False
    fn = getattr(torch.cpu, "_is_vnni_supported", None)
    return bool(fn()) if fn is not None else False


def quantize_weight_per_channel(weight: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel quantization: ``(int8 values, float32 scales)``.

    ``scale = max|w| / (2^(b-1) - 1)`` per row; ``q = clamp(round(w / scale))``.

    >>> q, s = quantize_weight_per_channel(torch.tensor([[1.0, -0.5], [0.0, 0.25]]))
    >>> q.tolist(), [round(v, 6) for v in s.tolist()]
    ([[127, -64], [0, 127]], [0.007874, 0.001969])
    """
    qmax = 2 ** (bits - 1) - 1
    w = weight.detach().float()
    amax = w.abs().reshape(w.shape[0], -1).amax(1).clamp(min=1e-12)
    scale = amax / qmax
    shape = (-1,) + (1,) * (w.dim() - 1)
    q = torch.clamp(torch.round(w / scale.view(shape)), -qmax - 1, qmax).to(torch.int8)
    return q, scale


class _PackedWeightCache:
    """oneDNN's prepacked (blocked) weight: derived data, rebuilt when the int8 buffer changes.

    It is an opaque MKLDNN tensor that can be neither saved nor deep-copied, so it lives outside
    the state dict and is dropped on copy/pickle.
    """

    def __init__(self) -> None:
        self.key: tuple[int, int] | None = None
        self.packed: torch.Tensor | None = None
        self.narrow = False  # every weight in [-63, 63] (see :func:`weights_fit_7_bits`)

    def get(self, qweight: torch.Tensor) -> torch.Tensor:
        key = (qweight.data_ptr(), qweight._version)
        if self.packed is None or self.key != key:
            self.packed = torch.ops.onednn.qlinear_prepack(qweight, None)
            self.narrow = weights_fit_7_bits(qweight)
            self.key = key
        return self.packed

    def __deepcopy__(self, memo: dict[int, Any]) -> _PackedWeightCache:
        return _PackedWeightCache()

    def __getstate__(self) -> dict[str, Any]:
        return {"key": None, "packed": None}


def _version(t: torch.Tensor) -> int:
    """A tensor's in-place version counter (inference tensors, which cannot change, have none)."""
    return 0 if t.is_inference() else t._version


def weights_fit_7_bits(qweight: torch.Tensor) -> bool:
    """Whether int8 weights lie in ``[-63, 63]``, as torchslim's 7-bit weights (CPUs without
    VNNI) do. Then 8-bit activations are safe on any x86 CPU: ``vpmaddubsw``'s pair sums stay
    below int16's limit (``2 * 255 * 63 = 32130 < 32767``), so :func:`act_qmax` need not cut
    the activations to 7 bits too.

    >>> weights_fit_7_bits(torch.tensor([[63, -63]], dtype=torch.int8)), weights_fit_7_bits(torch.tensor([[64]], dtype=torch.int8))
    (True, False)
    """
    return bool(qweight.numel() == 0 or int(qweight.abs().max()) <= 63)


def saturates_without_vnni(layer: nn.Module) -> bool:
    """Whether a static INT8 layer multiplies 8-bit activations by weights outside ``[-63, 63]``:
    exact with AVX-512 VNNI, but ``vpmaddubsw``'s int16 pair sums overflow on other x86 CPUs."""
    levels = getattr(layer, "input_levels", None)
    return callable(levels) and levels() > 127 and not weights_fit_7_bits(layer.weight_int8)


@torch.no_grad()
def narrow_weights_to_7_bits(layer: nn.Module) -> None:
    """Re-round a layer's int8 weights to ``[-63, 63]`` (half the levels, twice the scale).

    What a CPU without VNNI must do with a model quantized to 8-bit weights and activations on a
    CPU with VNNI: one more rounding of each weight (at most half a 7-bit step) instead of silent
    saturation. The scale stays per output channel, so the layer's float meaning is kept.
    """
    q = layer.weight_int8
    q.copy_(torch.round(q.float() / 2).clamp(-63, 63).to(torch.int8))
    layer.weight_scale.mul_(2)


def _act_levels(narrow: bool) -> int:
    """Largest symmetric activation level for a layer: 127 with VNNI or 7-bit weights, else 63."""
    return 127 if narrow else act_qmax()


@functools.lru_cache(maxsize=1)
def _fbgemm_ready() -> bool:
    """FBGEMM's quantized kernels are the active engine (x86 builds of PyTorch) and still work."""
    if torch.backends.quantized.engine not in ("x86", "fbgemm"):
        return False
    try:
        # Outside inference mode: this cached probe may first run inside a caller's
        # inference_mode, where its buffers would be inference tensors without a version counter.
        with torch.inference_mode(False):
            probe = Int8DynamicLinear(4, 2, activation="per_tensor")
            probe._fbgemm.get(probe)
        return True
    except Exception:  # noqa: BLE001 - any failure means: use the oneDNN path
        return False


class _FbgemmPackCache:
    """FBGEMM's packed weight + bias for ``quantized::linear_dynamic``; derived, never saved."""

    def __init__(self) -> None:
        self.key: tuple[int, ...] | None = None
        self.version = -1  # the int8 weight's version the fast path compares (its buffers change together)
        self.packed: Any = None
        self.reduce_range = True  # 7-bit activations, unless the CPU or the weights allow 8

    def get(self, m: Int8DynamicLinear) -> Any:
        key = (m.weight_int8.data_ptr(), _version(m.weight_int8), _version(m.weight_scale),
               -1 if m.bias is None else _version(m.bias))  # fmt: skip
        if self.packed is None or self.key != key:
            zp = torch.zeros(m.out_features, dtype=torch.int64)
            with warnings.catch_warnings():
                # FBGEMM's prepack takes a qint8 tensor, whose creation PyTorch 2.14 marks as
                # deprecated. It lives only inside this derived cache (the model's buffers are plain
                # int8); if a later PyTorch removes it, _fbgemm_ready() turns False and the oneDNN
                # path below serves.
                warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
                qw = torch._make_per_channel_quantized_tensor(m.weight_int8.detach(), m.weight_scale.detach().double(), zp, 0)
            self.packed = torch.ops.quantized.linear_prepack(qw, None if m.bias is None else m.bias.detach())
            self.reduce_range = _act_levels(weights_fit_7_bits(m.weight_int8)) != 127
            self.key = key
        # Buffers loaded or edited after packing bump the int8 weight's version only if it was
        # written; scale/bias edits alone are caught on the next call through this method.
        self.version = -1 if key[2:] != self.key[2:] else _version(m.weight_int8)
        return self.packed

    def __deepcopy__(self, memo: dict[int, Any]) -> _FbgemmPackCache:
        return _FbgemmPackCache()

    def __getstate__(self) -> dict[str, Any]:
        return {"key": None, "version": -1, "packed": None, "reduce_range": True}


class Int8DynamicLinear(nn.Module):
    """``nn.Linear`` with INT8 per-channel weights and INT8 activations quantized per call.

    ``activation="per_token"`` (default) gives every row of the input (every token of a
    transformer, every sample of a batch) its own symmetric scale ``max|x_row| / 127``; the
    integer GEMM runs once for the whole batch and the per-row scales are applied to its int32
    result, so outliers in one token do not cost the others precision (7-bit activations on CPUs
    without VNNI, see :func:`act_qmax`, unless the weights use 7 bits, see
    :func:`weights_fit_7_bits`). ``"per_tensor"`` uses one
    asymmetric scale/zero point for the whole input (what ``torch.ao``'s dynamic quantization does);
    on x86 it runs FBGEMM's fused dynamic linear kernel on these weights.

    Buffers: ``weight_int8`` ``[out, in]`` int8, ``weight_scale`` ``[out]`` float32, ``bias``
    ``[out]`` float32 (optional). Inputs of any leading shape ``[..., in]``, float32.

    >>> import torch, torch.nn as nn
    >>> torch.manual_seed(0) and None
    >>> lin = nn.Linear(384, 1536)
    >>> q = Int8DynamicLinear.from_float(lin)
    >>> x = torch.randn(2, 7, 384)
    >>> err = (q(x) - lin(x)).norm() / lin(x).norm()
    >>> q(x).shape, bool(err < 0.03)
    (torch.Size([2, 7, 1536]), True)
    """

    # Read by the speed guard (torchslim.measure.speed) when a model is not faster than FP32.
    speed_note: ClassVar[str] = ("dynamic INT8 layers quantize their input on every call (one pass over the "
                                 "activations before each integer product: it pays off on large matrix products only)")

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, activation: ActGranularity = "per_token"
    ) -> None:
        super().__init__()
        if activation not in ("per_token", "per_tensor"):
            raise ConfigError(f"activation must be 'per_token' or 'per_tensor', got {activation!r}")
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self.register_buffer("_w_zp", torch.zeros(out_features, dtype=torch.int64), persistent=False)
        self._cache = _PackedWeightCache()
        self._fbgemm = _FbgemmPackCache()
        self._compiled_qmax: int | None = None  # activation levels (see _act_levels), set by compile_int8

    @classmethod
    def from_float(cls, linear: nn.Linear, *, activation: ActGranularity = "per_token") -> Int8DynamicLinear:
        """Quantize a float ``nn.Linear`` (its weights are copied, the original is untouched)."""
        m = cls(linear.in_features, linear.out_features, linear.bias is not None, activation)
        q, s = quantize_weight_per_channel(linear.weight)
        m.weight_int8.copy_(q)
        m.weight_scale.copy_(s)
        if linear.bias is not None:
            m.bias.copy_(linear.bias.detach().float())
        return m

    def dequantized_weight(self) -> torch.Tensor:
        """The float weight the integer values stand for (``q * scale``)."""
        return self.weight_int8.float() * self.weight_scale[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compiling = torch.compiler.is_compiling()
        if self.activation == "per_tensor" and not compiling and _fbgemm_ready() and x.dtype == torch.float32:
            # One fused kernel (min/max, quantize, u8 x s8 GEMM, float output): FBGEMM's dynamic
            # linear, the kernel the seed's quantize_dynamic runs, here on torchslim's own
            # per-channel weights. At batch 64 separate elementwise passes cost 2x its time, so
            # this path also keeps the Python around the call to a minimum.
            fb = self._fbgemm
            packed = fb.packed if fb.version == _version(self.weight_int8) else fb.get(self)
            return torch.ops.quantized.linear_dynamic(x, packed, fb.reduce_range)
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features).float()
        if compiling:
            # torch.compile through compile_int8: Inductor's freezing turns this prepack into a
            # constant, lowers the GEMM to the same oneDNN kernel and fuses the quantization and
            # the rescale below into the elementwise kernels around it (LayerNorm, GELU, residual).
            if self._compiled_qmax is None:
                raise CompatibilityError("compile models with Int8DynamicLinear layers through torchslim.quantization.compile_int8")
            packed, qmax = torch.ops.onednn.qlinear_prepack(self.weight_int8, None), self._compiled_qmax
        else:
            packed = self._cache.get(self.weight_int8)
            qmax = _act_levels(self._cache.narrow)
        # Few, fused ops: at batch 64 the number of elementwise passes, not the GEMM, decides the
        # speed of small layers. Values are made non-negative before the cast to uint8, so the
        # cast's truncation after adding 0.5 rounds to nearest.
        if self.activation == "per_token":
            amax = x2.abs().amax(1, keepdim=True).clamp_min_(1e-12)
            # |x| / amax <= 1, so x * qmax / amax + qmax + 1 lies in [1, 2 * qmax + 1]. One zero
            # point for all rows turns the symmetric values into oneDNN's native u8 input; the
            # per-row scales are applied to the int32 result.
            qx = torch.addcmul(torch.full((), qmax + 1.5), x2, qmax / amax).to(torch.uint8)
            y = torch.ops.onednn.qlinear_pointwise(
                qx, 1.0, qmax + 1, packed, self.weight_scale, self._w_zp, None, 1.0, 0, torch.float32, "none", [], ""
            )
            y = y.mul_(amax / qmax) if self.bias is None else torch.addcmul(self.bias, y, amax / qmax)
        else:  # scale and zero point stay tensors: no host sync, and traceable
            levels = 2 * qmax + 1
            lo, hi = x2.amin().clamp(max=0.0), x2.amax().clamp(min=0.0)
            scale = ((hi - lo) / levels).clamp_min(1e-12)
            zp = torch.round(-lo / scale)
            # (x - lo) / scale lies in [0, levels] by construction.
            qx = (x2 * (1.0 / scale) + (zp + 0.5)).clamp_(0, levels).to(torch.uint8)
            y = torch.ops.onednn.qlinear_pointwise.tensor(
                qx, scale, zp.to(torch.int32), packed, self.weight_scale, self._w_zp, self.bias, 1.0, 0, torch.float32, "none", [], ""
            )
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


def compile_int8(model: nn.Module, *, attention: str | None = "eager", **options: Any) -> Any:
    """A faster runtime for a torchslim INT8 model; ``model`` itself is not modified.

    Static INT8 models (``StaticInt8Config``, QAT's integer model) are lowered to one flat torch.fx
    graph of integer kernel calls (:func:`~torchslim.quantization.lowering.lower_static`): same
    kernels and outputs, without the per-op Python dispatch of the eager model, and with one-pass
    C++ kernels for the input quantization and 2x2 max pooling (built on first use, once per
    machine, with the system's C++ compiler; without one, PyTorch ops). ``attention`` and
    ``options`` apply to the other models only.

    Other models (dynamic INT8 layers, the transformers' INT8 encoder) get ``torch.compile``:
    Inductor's ``freezing`` turns the weights into constants, so oneDNN's prepacked weight is
    computed once and the INT8 GEMM is lowered to oneDNN with the activation quantization and
    rescaling fused into the elementwise kernels around it. ``realize_opcount_threshold=8``
    stops Inductor from computing a long elementwise chain (GELU's erf) twice, once for the
    per-row max and once for the quantized values. ``options`` override these Inductor settings.
    ``attention``: the attention implementation of a Hugging Face model's compiled copy. With
    ``"eager"`` (explicit matmul, mask and softmax) Inductor fuses the mask and softmax into its
    own kernels; on the short sequences of sentence encoders that ran faster on a 2-core AVX2 CPU
    than PyTorch's fused CPU attention (``"sdpa"``). ``None`` keeps the model's choice.
    Run the result under ``torch.inference_mode()`` (freezing applies to inference only); each
    new input shape compiles once more (pad inputs to a few fixed shapes).

    >>> import torch, torch.nn as nn
    >>> q = nn.Sequential(Int8DynamicLinear.from_float(nn.Linear(16, 8)))
    >>> compiled = compile_int8(q)
    >>> q[0]._compiled_qmax is None  # the caller's model is untouched; the compiled copy is set up
    True
    """
    import copy

    from torchslim.quantization.lowering import lower_static
    from torchslim.quantization.static_modules import has_static_layers

    if has_static_layers(model):
        try:
            return lower_static(model)
        except CompatibilityError:
            if not _float_io_static_layers_only(model):
                raise
            # A model torch.fx cannot trace (a Hugging Face encoder) whose static layers take and
            # return floats (QLinear.from_float): torch.compile below traces them as tensor ops.
    model = copy.deepcopy(model).eval()
    for m in model.modules():
        if isinstance(m, Int8DynamicLinear):
            m._compiled_qmax = _act_levels(weights_fit_7_bits(m.weight_int8))
        elif hasattr(m, "prepare_tracing"):
            m.prepare_tracing()
    if attention is not None and hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(attention)
    opts: dict[str, Any] = {"freezing": True, "realize_opcount_threshold": 8}
    opts.update(options)
    return _Compiled(torch.compile(model, dynamic=False), opts)


class _Compiled:
    """A compiled model whose (re)compilations run under its Inductor settings.

    torch.compile compiles lazily, at the first call for each new input shape, so the settings
    are applied around every call (``torch.compile(options=...)`` does not reach ``freezing``).
    """

    def __init__(self, fn: Any, options: dict[str, Any]) -> None:
        self.fn, self.options = fn, options

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import torch._inductor.config as inductor_config

        with inductor_config.patch(self.options):
            return self.fn(*args, **kwargs)


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """Pack integers in ``[0, 15]`` two per byte (first value in the low nibble), flattened.

    >>> pack_int4(torch.tensor([1, 2, 15])).tolist()
    [33, 15]
    """
    flat = q.reshape(-1).to(torch.uint8)
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    return flat[0::2] | (flat[1::2] << 4)


def unpack_int4(packed: torch.Tensor, numel: int) -> torch.Tensor:
    """Inverse of :func:`pack_int4`: the first ``numel`` values as uint8."""
    return torch.stack([packed & 0x0F, packed >> 4], -1).reshape(-1)[:numel]


def quantize_groupwise(
    weight: torch.Tensor, bits: int, group_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric group-wise quantization of a ``[out, in]`` weight along ``in``.

    The seed's affine formula with an integer zero point, per group of ``group_size`` columns
    (the last group may be shorter): ``scale = (max - min) / (2^b - 1)``,
    ``zp = clamp(round(-min / scale), 0, 2^b - 1)``, ``q = clamp(round(w / scale) + zp, 0, 2^b - 1)``.
    Returns ``(q [out, in] uint8, scale [out, groups] float16, zp [out, groups] uint8)``; min/max
    include 0 so zero is exact. Scales are stored in FP16 (the group's range is rounded up so
    no value clips after the FP16 rounding).
    """
    out_f, in_f = weight.shape
    groups = math.ceil(in_f / group_size)
    qmax = 2**bits - 1
    w = weight.detach().float()
    pad = groups * group_size - in_f
    wp = F.pad(w, (0, pad)).view(out_f, groups, group_size)
    lo = wp.amin(-1).clamp(max=0.0)
    hi = wp.amax(-1).clamp(min=0.0)
    scale = ((hi - lo) / qmax).clamp(min=1e-8).half()
    scale = torch.where(scale.float() < (hi - lo) / qmax, torch.nextafter(scale, torch.tensor(65504.0, dtype=torch.half)), scale)
    s = scale.float()
    zp = torch.clamp(torch.round(-lo / s), 0, qmax)
    q = torch.clamp(torch.round(wp / s[..., None]) + zp[..., None], 0, qmax)
    return q.view(out_f, -1)[:, :in_f].to(torch.uint8), scale, zp.to(torch.uint8)


class WeightOnlyLinear(nn.Module):
    """``nn.Linear`` whose weight is stored as INT8 or packed INT4 with group-wise scales.

    Storage per weight: ``bits`` plus, per group of ``group_size`` inputs, one FP16 scale and one
    uint8 zero point (INT4, group 32: 4.75 bits, 6.7x smaller than FP32). Activations stay
    float32: the forward pass unpacks and dequantizes the weight, then runs SGEMM. (torch 2.14's
    CPU weight-only kernels ``_weight_int4pack_mm_for_cpu`` / ``_weight_int8pack_mm`` measured
    20-60x slower than that on this project's AVX-512 machines with float32 inputs.)

    Buffers: ``weight_packed`` (INT4: ``[out, ceil(in/2)]`` uint8, two values per byte, row-major
    over ``[out, in]``; INT8: ``[out, in]`` uint8), ``scale`` ``[out, groups]`` float16,
    ``zero_point`` ``[out, groups]`` uint8, ``bias`` ``[out]`` float32 (optional).

    >>> import torch, torch.nn as nn
    >>> lin = nn.Linear(100, 10)
    >>> q = WeightOnlyLinear.from_float(lin, bits=4, group_size=32)
    >>> bool((q.dequantized_weight() - lin.weight).abs().max() < 0.01)
    True
    """

    speed_note: ClassVar[str] = ("weight-only INT4/INT8 layers unpack and dequantize their weights on every call, then "
                                 "run the FP32 matrix product: they shrink the file, not the compute")

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, bits: int = 4, group_size: int = 32) -> None:
        super().__init__()
        if bits not in (4, 8):
            raise ConfigError(f"weight-only bits must be 4 or 8, got {bits}")
        if group_size < 1:
            raise ConfigError(f"group_size must be positive, got {group_size}")
        self.in_features, self.out_features, self.bits, self.group_size = in_features, out_features, bits, group_size
        groups = math.ceil(in_features / group_size)
        cols = math.ceil(in_features / 2) if bits == 4 else in_features
        if bits == 4 and in_features % 2:
            # Rows are packed one after another; keep each row byte-aligned by padding odd rows.
            cols = (in_features + 1) // 2
        self.register_buffer("weight_packed", torch.zeros(out_features, cols, dtype=torch.uint8))
        self.register_buffer("scale", torch.ones(out_features, groups, dtype=torch.float16))
        self.register_buffer("zero_point", torch.zeros(out_features, groups, dtype=torch.uint8))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @classmethod
    def from_float(cls, linear: nn.Linear, *, bits: int = 4, group_size: int = 32) -> WeightOnlyLinear:
        """Quantize a float ``nn.Linear`` group-wise (the original is untouched)."""
        q, s, zp = quantize_groupwise(linear.weight, bits, group_size)
        return cls.from_quantized(linear, q, s, zp, bits=bits, group_size=group_size)

    @classmethod
    def from_quantized(cls, linear: nn.Linear, q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, *,
                       bits: int, group_size: int) -> WeightOnlyLinear:  # fmt: skip
        """Pack integer values ``q`` ``[out, in]`` with their group scales and zero points (e.g. GPTQ's)."""
        m = cls(linear.in_features, linear.out_features, linear.bias is not None, bits=bits, group_size=group_size)
        if bits == 4:
            if linear.in_features % 2:
                q = F.pad(q, (0, 1))
            m.weight_packed.copy_(pack_int4(q).view(linear.out_features, -1))
        else:
            m.weight_packed.copy_(q)
        m.scale.copy_(scale)
        m.zero_point.copy_(zero_point)
        if linear.bias is not None:
            m.bias.copy_(linear.bias.detach().float())
        return m

    def int_weight(self) -> torch.Tensor:
        """The integer values ``[out, in]`` (uint8, in ``[0, 2^bits - 1]``)."""
        if self.bits == 8:
            return self.weight_packed
        cols = self.weight_packed.shape[1] * 2
        return unpack_int4(self.weight_packed, self.weight_packed.numel() * 2).view(self.out_features, cols)[:, : self.in_features]

    def dequantized_weight(self) -> torch.Tensor:
        """The float32 weight ``(q - zero_point) * scale`` the stored integers stand for."""
        g = self.group_size
        groups = self.scale.shape[1]
        q = F.pad(self.int_weight().float(), (0, groups * g - self.in_features)).view(self.out_features, groups, g)
        w = (q - self.zero_point.float()[..., None]) * self.scale.float()[..., None]
        return w.view(self.out_features, -1)[:, : self.in_features]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantized_weight().to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, group_size={self.group_size}"


def _float_io_static_layers_only(model: nn.Module) -> bool:
    from torchslim.quantization.static_modules import QConv2d, QLinear

    static = [m for m in model.modules() if isinstance(m, (QConv2d, QLinear))]
    return all(isinstance(m, QLinear) and m.out_float for m in static)


def timed_runtime(model: Any) -> tuple[Any, str]:
    """What to time for ``model``, and its name: ``"compile_int8"`` or ``"eager"``.

    A static INT8 CNN (``StaticInt8Config``, QAT's integer model) is timed as its
    :func:`~torchslim.quantization.compile_int8` lowering: the runtime torchslim ships for it, with
    outputs identical to the eager model's, so accuracy measured on either is the same. Every
    other model is timed as it is, as is a static model whose forward torch.fx cannot trace.
    """
    from torchslim.errors import CompatibilityError
    from torchslim.quantization.lowering import lower_static
    from torchslim.quantization.static_modules import has_static_layers

    if isinstance(model, torch.nn.Module) and has_static_layers(model):
        try:
            return lower_static(model), "compile_int8"
        except CompatibilityError:
            pass
    return model, "eager"

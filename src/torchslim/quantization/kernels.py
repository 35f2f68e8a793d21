"""Two fused uint8 CPU kernels for the lowered static INT8 graph, compiled on first use.

Why hand-written: a static INT8 CNN's time outside oneDNN's convolutions and matmuls goes to a few
passes over memory: quantizing the float input (five elementwise ops), unfolding a one-channel
image's kernel columns into channels (one copy per column), and 2x2 max pooling of NHWC integers
(two ``torch.maximum`` passes). PyTorch has no single op for any of them on plain ``uint8``
tensors (its fused quantize and quantized pooling need the deprecated quantized tensor types), and
Inductor's generated uint8 code for them was not faster than eager on this project's CPUs (a
scratch trial, not a benchmark). Each kernel below is one pass.

The kernels are built with ``torch.utils.cpp_extension.load_inline`` (a C++ compiler and ninja
needed; the build is cached per machine) by :func:`load`, which :func:`~torchslim.quantization.
lowering.lower_static` calls. Without a compiler the lowered graph uses the equivalent PyTorch ops
(identical results) and :func:`load` says why. ``TORCHSLIM_NATIVE=0`` turns the kernels off.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from torchslim.quantization.static_modules import max_pool2d_uint8

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <vector>

// q = clamp(nearbyint(x * (1 / scale)) + zp, 0, levels), as quantize_tensor (round half to even),
// written unfolded: out[n, r, o, j] = q[n, 0, r, o * sw + j - pw] (zp where that is padding).
torch::Tensor quantize_unfold(torch::Tensor x, double scale, int64_t zp, int64_t levels, int64_t kw, int64_t pw,
                              int64_t sw) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == 1 && x.scalar_type() == at::kFloat, "quantize_unfold: float [n, 1, h, w]");
  x = x.contiguous();
  const int64_t n = x.size(0), h = x.size(2), w = x.size(3);
  const int64_t wo = (w + 2 * pw - kw) / sw + 1;
  auto out = torch::empty({n, h, wo, kw}, x.options().dtype(at::kByte));
  const float inv = static_cast<float>(1.0 / scale), fzp = static_cast<float>(zp), hi = static_cast<float>(levels);
  const float* src = x.data_ptr<float>();
  uint8_t* dst = out.data_ptr<uint8_t>();
  at::parallel_for(0, n * h, 64, [&](int64_t begin, int64_t end) {
    std::vector<uint8_t> row(w + 2 * pw, static_cast<uint8_t>(zp));
    for (int64_t r = begin; r < end; ++r) {
      const float* s = src + r * w;
      for (int64_t c = 0; c < w; ++c) {
        const float v = std::nearbyint(s[c] * inv) + fzp;
        row[c + pw] = static_cast<uint8_t>(std::min(std::max(v, 0.0f), hi));
      }
      uint8_t* d = dst + r * wo * kw;
      for (int64_t o = 0; o < wo; ++o)
        for (int64_t j = 0; j < kw; ++j) d[o * kw + j] = row[o * sw + j];
    }
  });
  return out.permute({0, 3, 1, 2});
}

// 2x2 max pooling, stride 2, of a channels-last uint8 tensor (odd rows / columns dropped, as floor mode).
torch::Tensor max_pool2x2_nhwc(torch::Tensor y) {
  TORCH_CHECK(y.dim() == 4 && y.scalar_type() == at::kByte && y.is_contiguous(at::MemoryFormat::ChannelsLast),
              "max_pool2x2_nhwc: channels-last uint8 [n, c, h, w]");
  const int64_t n = y.size(0), c = y.size(1), h = y.size(2), w = y.size(3), ho = h / 2, wo = w / 2;
  auto out = torch::empty({n, c, ho, wo}, y.options().memory_format(at::MemoryFormat::ChannelsLast));
  const uint8_t* src = y.data_ptr<uint8_t>();
  uint8_t* dst = out.data_ptr<uint8_t>();
  at::parallel_for(0, n * ho, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const uint8_t* r0 = src + ((r / ho) * h + 2 * (r % ho)) * w * c;
      const uint8_t* r1 = r0 + w * c;
      uint8_t* d = dst + r * wo * c;
      for (int64_t j = 0; j < wo; ++j) {
        const uint8_t* a = r0 + 2 * j * c;
        const uint8_t* b = r1 + 2 * j * c;
        for (int64_t k = 0; k < c; ++k) d[j * c + k] = std::max(std::max(a[k], a[k + c]), std::max(b[k], b[k + c]));
      }
    }
  });
  return out;
}
"""

_state: dict[str, Any] = {"module": None, "error": None, "tried": False}


def load() -> Any:
    """The compiled kernels, or None (then :func:`unavailable_reason` says why). Built once per process."""
    if not _state["tried"]:
        _state["tried"] = True
        if os.environ.get("TORCHSLIM_NATIVE", "1") == "0":
            _state["error"] = "turned off by TORCHSLIM_NATIVE=0"
        else:
            try:
                from torch.utils.cpp_extension import load_inline

                _state["module"] = load_inline(
                    name="torchslim_uint8_kernels", cpp_sources=_SOURCE,
                    functions=["quantize_unfold", "max_pool2x2_nhwc"], extra_cflags=["-O3"],
                )  # fmt: skip
            except Exception as exc:  # no compiler, no ninja, a failed build: all mean "use PyTorch ops"
                _state["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else ''}"
    return _state["module"]


def unavailable_reason() -> str | None:
    """Why :func:`load` returned None (None when the kernels are loaded or not tried yet)."""
    return _state["error"]


def quantize_unfold(x: torch.Tensor, scale: float, zp: int, levels: int, kw: int, pw: int, sw: int) -> torch.Tensor:
    """``unfold_columns(quantize_tensor(x, scale, zp, levels), kw, pw, sw, zp)`` in one pass."""
    return load().quantize_unfold(x.float(), scale, zp, levels, kw, pw, sw)


def max_pool2x2(data: torch.Tensor) -> torch.Tensor:
    """``max_pool2d_uint8(data, 2)`` in one pass for channels-last tensors (others take the PyTorch ops)."""
    if data.dim() == 4 and data.is_contiguous(memory_format=torch.channels_last):
        return load().max_pool2x2_nhwc(data)
    return max_pool2d_uint8(data, 2)

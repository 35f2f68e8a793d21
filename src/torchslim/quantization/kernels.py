"""Two fused uint8 CPU kernels for the lowered static INT8 graph, compiled on first use.

Why hand-written: a static INT8 CNN's time outside oneDNN's convolutions and matmuls goes to a few
passes over memory: quantizing the float input (five elementwise ops), unfolding a one-channel
image's kernel columns into channels (one copy per column), and 2x2 max pooling of NHWC integers
(two ``torch.maximum`` passes). PyTorch has no single op for any of them on plain ``uint8``
tensors (its fused quantize and quantized pooling need the deprecated quantized tensor types), and
Inductor's generated uint8 code for them was not faster than eager on this project's CPUs (a
scratch trial, not a benchmark). Each kernel below is one pass, split over PyTorch's threads
(built with OpenMP when PyTorch is; without it ``at::parallel_for`` runs on one thread), with
inner loops the compiler vectorizes.

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
#include <cstring>
#include <vector>

// The inner loops live in plain functions with restrict pointers and value arguments: inside the
// parallel_for lambdas (captures by reference) GCC did not vectorize them.

// One image row: q = clamp(nearbyint(x * inv) + zp, 0, levels), round half to even. x * inv is first
// clamped to [-zp - 1, levels - zp + 1] (the final clamp then gives the same q), and
// (v + 1.5 * 2^23) - 1.5 * 2^23 rounds it half to even in IEEE float, exact for |v| < 2^22; unlike
// std::nearbyint (a libm call without SSE4.1) this vectorizes.
static void quantize_row(const float* __restrict__ s, uint8_t* __restrict__ q, int64_t w, float inv, float fzp,
                         float hi) {
  const float vlo = -fzp - 1.0f, vhi = hi - fzp + 1.0f, magic = 12582912.0f;
  for (int64_t c = 0; c < w; ++c) {
    const float v = (std::min(std::max(s[c] * inv, vlo), vhi) + magic) - magic + fzp;
    q[c] = static_cast<uint8_t>(std::min(std::max(v, 0.0f), hi));
  }
}

// out[o * kw + j] = row[o * sw + j]; row holds at least 8 readable bytes from every window start.
static void unfold_row(const uint8_t* __restrict__ row, uint8_t* __restrict__ d, int64_t wo, int64_t kw, int64_t sw) {
  int64_t o = 0;
  if (kw <= 8) {
    for (; o * kw + 8 <= wo * kw; ++o) {  // 8-byte windows; the next output overwrites the spill
      uint64_t win;
      std::memcpy(&win, row + o * sw, 8);
      std::memcpy(d + o * kw, &win, 8);
    }
  }
  for (; o < wo; ++o) std::memcpy(d + o * kw, row + o * sw, kw);
}

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
    std::vector<uint8_t> row(w + 2 * pw + 8, static_cast<uint8_t>(zp));  // padding, then 8 bytes of slack
    for (int64_t r = begin; r < end; ++r) {
      quantize_row(src + r * w, row.data() + pw, w, inv, fzp, hi);
      unfold_row(row.data(), dst + r * wo * kw, wo, kw, sw);
    }
  });
  return out.permute({0, 3, 1, 2});
}

// One output row of 2x2 max pooling over channels-last rows r0, r1 of c channels.
static void pool_row(const uint8_t* __restrict__ r0, const uint8_t* __restrict__ r1, uint8_t* __restrict__ d,
                     int64_t wo, int64_t c) {
  for (int64_t j = 0; j < wo; ++j, r0 += 2 * c, r1 += 2 * c, d += c)
    for (int64_t k = 0; k < c; ++k) d[k] = std::max(std::max(r0[k], r0[k + c]), std::max(r1[k], r1[k + c]));
}

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
      pool_row(r0, r0 + w * c, dst + r * wo * c, wo, c);
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

                # at::parallel_for splits work over threads only when compiled with OpenMP, as
                # PyTorch itself is; without the flag both kernels run on one thread.
                omp = ["-fopenmp"] if torch.backends.openmp.is_available() else []
                _state["module"] = load_inline(
                    name="torchslim_uint8_kernels", cpp_sources=_SOURCE,
                    functions=["quantize_unfold", "max_pool2x2_nhwc"], extra_cflags=["-O3", *omp], extra_ldflags=omp,
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

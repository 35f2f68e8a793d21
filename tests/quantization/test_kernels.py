import pytest
import torch

from torchslim.quantization import kernels
from torchslim.quantization.static_modules import max_pool2d_uint8, quantize_tensor, unfold_columns


@pytest.fixture(scope="module")
def native():
    mod = kernels.load()
    # Where a C++ compiler is missing the lowered graph falls back to PyTorch ops; the reason must be said.
    assert mod is not None or kernels.unavailable_reason()
    return mod


# kw <= 8 copies 8-byte windows (spill overwritten by the next output); kw = 11 the byte-exact path.
@pytest.mark.parametrize("kw,pw,sw", [(5, 0, 1), (3, 1, 2), (5, 2, 1), (1, 0, 1), (8, 0, 1), (11, 2, 4)])
def test_quantize_unfold_matches_quantize_then_unfold(native, kw, pw, sw):
    torch.manual_seed(0)
    x = torch.randn(3, 1, 9, 23) * 2
    x[0, 0, 0, :4] = torch.tensor([0.5, 1.5, 2.5, -0.5]) * 0.1  # exact ties: both round half to even
    x[1, 0, 0, :3] = torch.tensor([1e9, -1e9, 3e7])  # far past the range: clamped before rounding
    want = unfold_columns(quantize_tensor(x, 0.1, 20, 255), kw, pw, sw, 20)
    got = kernels.quantize_unfold(x, 0.1, 20, 255, kw, pw, sw) if native else want
    assert got.shape == want.shape and torch.equal(got, want)
    assert got.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("c,h,w", [(20, 24, 24), (20, 7, 9), (7, 6, 6), (50, 8, 8)])
def test_max_pool2x2_matches_the_pytorch_ops(native, c, h, w):
    torch.manual_seed(0)
    y = torch.randint(0, 256, (2, c, h, w), dtype=torch.uint8)
    for t in (y.contiguous(memory_format=torch.channels_last), y):  # the second takes the PyTorch ops
        out = kernels.max_pool2x2(t) if native else max_pool2d_uint8(t, 2)
        assert out.shape == (2, c, h // 2, w // 2) and torch.equal(out, max_pool2d_uint8(t, 2))


def test_kernels_can_be_turned_off(monkeypatch):
    monkeypatch.setattr(kernels, "_state", {"module": None, "error": None, "tried": False})
    monkeypatch.setenv("TORCHSLIM_NATIVE", "0")
    assert kernels.load() is None and kernels.unavailable_reason() == "turned off by TORCHSLIM_NATIVE=0"

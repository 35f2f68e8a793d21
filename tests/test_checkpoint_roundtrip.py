"""Every model a torchslim verb returns reloads from its checkpoint with identical outputs."""

import pickle
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from torchslim.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from torchslim.models import create_model
from torchslim.pruning import MagnitudeConfig, NMConfig, StructuredConfig, prune
from torchslim.quantization import BF16Config, FP16Config, SeedDynamicConfig, quantize


@pytest.fixture(autouse=True)
def _no_pickle(monkeypatch):
    """Loading must never unpickle: make every pickle entry point fail."""

    def refuse(*_a, **_k):
        raise AssertionError("checkpoint loading used pickle")

    for mod, fn in ((pickle, "load"), (pickle, "loads"), (torch, "load")):
        monkeypatch.setattr(mod, fn, refuse)


def _floats(m: nn.Module) -> set[torch.dtype]:
    return {t.dtype for t in [*m.parameters(), *m.buffers()] if t.is_floating_point()}


# ----------------------------------------------------------------------------- FP16 / BF16
@pytest.mark.parametrize("config, dtype", [(FP16Config(), torch.float16), (BF16Config(), torch.bfloat16)])
def test_cast_model_reloads_in_its_dtype_with_its_hooks(config, dtype, tmp_path: Path):
    m = create_model("resnet8").eval()
    q, _ = quantize(m, config)
    fp32 = save_checkpoint(m, tmp_path / "fp32.safetensors", architecture="resnet8").stat().st_size
    path = save_checkpoint(q, tmp_path / "q.safetensors", architecture="resnet8")
    back, meta = load_checkpoint(path)
    assert _floats(back) == {dtype}
    assert meta["model_codecs"] == {"cast": str(dtype)}
    x = torch.randn(4, 1, 28, 28)  # float32 in, float32 out: the cast hooks came back
    with torch.no_grad():
        out = back(x)
        assert out.dtype == torch.float32 and torch.equal(out, q(x))
    assert path.stat().st_size < 0.55 * fp32  # 2 bytes per weight instead of 4


def test_half_model_without_cast_hooks_keeps_its_dtype(tmp_path: Path):
    m = create_model("lenet300").eval().half()
    back, meta = load_checkpoint(save_checkpoint(m, tmp_path / "h.safetensors", architecture="lenet300"))
    assert _floats(back) == {torch.float16} and meta["model_codecs"] == {}
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), back.state_dict().values(), strict=True))


# ----------------------------------------------------------------------------- pruning masks
@pytest.mark.parametrize("config", [MagnitudeConfig(amount=0.8), NMConfig(n=2, m=4)], ids=["magnitude", "nm"])
def test_masked_model_saves_folded_and_reloads(config, tmp_path: Path):
    m = create_model("lenet300").eval()
    pruned, _ = prune(m, config)  # weight_orig + weight_mask, no make_permanent
    assert any(k.endswith("weight_mask") for k in pruned.state_dict())
    dense = save_checkpoint(m, tmp_path / "fp32.safetensors", architecture="lenet300", sparse=False).stat().st_size
    plain = save_checkpoint(pruned, tmp_path / "plain.safetensors", architecture="lenet300", sparse=False)
    path = save_checkpoint(pruned, tmp_path / "p.safetensors", architecture="lenet300")
    assert plain.stat().st_size <= dense
    sparsity = 0.8 if isinstance(config, MagnitudeConfig) else 0.5
    assert path.stat().st_size < (1 - sparsity + 1 / 32 + 0.02) * dense  # non-zeros + 1 bit per weight
    x = torch.randn(8, 1, 28, 28)
    for p in (plain, path):
        back, _ = load_checkpoint(p)
        assert set(back.state_dict()) == set(m.state_dict())  # a plain dense model...
        assert torch.equal(back(x), pruned(x))  # ...computing exactly what the masked one did
        assert int((back.fc1.weight == 0).sum()) == int((pruned.fc1.weight == 0).sum())


def test_masked_model_as_load_target_is_left_alone(tmp_path: Path):
    pruned, _ = prune(create_model("lenet300").eval(), MagnitudeConfig(amount=0.5))
    path = save_checkpoint(pruned, tmp_path / "p.safetensors")
    back, _ = load_checkpoint(path, model=pruned)
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(back(x), pruned(x))
    assert "fc1.weight_mask" in pruned.state_dict() and "fc1.weight_mask" not in back.state_dict()


# ----------------------------------------------------------------------------- structured pruning
class _CNBlock(nn.Module):
    """ConvNeXt's block: depthwise conv, LayerNorm over channels, MLP, layer scale, residual."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c)
        self.fc1, self.fc2 = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.full((c, 1, 1), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dw(x).permute(0, 2, 3, 1))
        return x + self.gamma * self.fc2(F.gelu(self.fc1(y))).permute(0, 3, 1, 2)


class _TinyConvNeXt(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 4, 4)
        self.blocks = nn.Sequential(_CNBlock(16), _CNBlock(16))
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


class _ConvLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 16, 3, padding=1)
        self.bn = nn.BatchNorm1d(16)
        self.lstm = nn.LSTM(16, 12, batch_first=True)
        self.fc = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm(self.bn(self.conv(x)).transpose(1, 2))
        return self.fc(y[:, -1])


def _prune_structured(model: nn.Module, x: torch.Tensor) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Torch-Pruning warns about the unwrapped layer scale
        pruned, _ = prune(model, StructuredConfig(ratio=0.5), calib_data=x)
    return pruned.eval()


def test_structured_convnext_like_block_reloads(tmp_path: Path):
    m, x = _TinyConvNeXt().eval(), torch.randn(2, 3, 32, 32)
    pruned = _prune_structured(m, x)
    assert pruned.blocks[0].gamma.shape == (8, 1, 1) and pruned.blocks[0].dw.groups == 8
    back, meta = load_checkpoint(save_checkpoint(pruned, tmp_path / "c.safetensors"), model=m)
    shapes = {s["name"]: s["shapes"] for s in meta["structure"] if s["kind"] == "tensor_shapes"}
    assert shapes["blocks.0"] == {"gamma": [8, 1, 1]}
    assert back.blocks[1].norm.normalized_shape == (8,) and back.blocks[1].dw.groups == 8
    with torch.no_grad():
        assert torch.equal(back(x), pruned(x))


def test_structured_conv1d_lstm_reloads(tmp_path: Path):
    m, x = _ConvLSTM().eval(), torch.randn(3, 4, 10)
    pruned = _prune_structured(m, x)
    assert pruned.lstm.input_size == 8
    back, meta = load_checkpoint(save_checkpoint(pruned, tmp_path / "r.safetensors"), model=m)
    lstm = next(s for s in meta["structure"] if s["name"] == "lstm")
    assert lstm["kind"] == "lstm" and lstm["config"]["input_size"] == 8
    assert (back.conv.out_channels, back.bn.num_features, back.lstm.input_size) == (8, 8, 8)
    with torch.no_grad():
        assert torch.equal(back(x), pruned(x))


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.RNN])
def test_recurrent_layers_with_changed_sizes_reload(cls, tmp_path: Path):
    m = nn.Sequential(cls(6, 10, num_layers=2, batch_first=True, bidirectional=True))
    small = nn.Sequential(cls(4, 7, num_layers=2, batch_first=True, bidirectional=True)).eval()
    back, _ = load_checkpoint(save_checkpoint(small, tmp_path / "r.safetensors"), model=m)
    x = torch.randn(2, 5, 4)
    with torch.no_grad():
        assert torch.equal(back(x)[0], small(x)[0])


@pytest.mark.slow
def test_structured_torchvision_convnext_tiny_reloads(tmp_path: Path):
    m, x = create_model("tv/convnext_tiny").eval(), torch.randn(1, 3, 32, 32)
    pruned = _prune_structured(m, x)
    path = save_checkpoint(pruned, tmp_path / "cnx.safetensors", architecture="tv/convnext_tiny")
    back, meta = load_checkpoint(path)  # rebuilt from the registry alone
    kinds = {s["kind"] for s in meta["structure"]}
    assert {"conv2d", "linear", "layernorm", "tv_layernorm2d", "tensor_shapes"} <= kinds
    assert back.features[1][0].layer_scale.shape == pruned.features[1][0].layer_scale.shape
    with torch.no_grad():
        assert torch.equal(back(x), pruned(x))


# ----------------------------------------------------------------------------- seed dynamic INT8
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.ao.quantization is the seed's API
@pytest.mark.parametrize("scheme", ["seed", "per_channel", "float16"])
def test_seed_dynamic_int8_round_trips(scheme, tmp_path: Path):
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    m = create_model("lenet300").eval()
    if scheme == "seed":
        q, _ = quantize(m, SeedDynamicConfig())  # quantize_dynamic(m, {nn.Linear}, dtype=torch.qint8)
    elif scheme == "per_channel":
        q = quantize_dynamic(m, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
    else:
        q = quantize_dynamic(m, {nn.Linear}, dtype=torch.float16)
    fp32 = save_checkpoint(m, tmp_path / "fp32.safetensors", architecture="lenet300").stat().st_size
    path = save_checkpoint(q, tmp_path / "s.safetensors", architecture="lenet300")
    tensors, _ = read_checkpoint(path)
    assert tensors["fc1.bias"].dtype == torch.float32
    if scheme == "float16":
        assert tensors["fc1.weight"].dtype == torch.float16 and path.stat().st_size < 0.52 * fp32
    else:
        assert tensors["fc1.weight"].dtype == torch.int8 and path.stat().st_size < 0.3 * fp32
        assert tensors["fc1.weight_scale"].dim() == (1 if scheme == "per_channel" else 0)
    x = torch.randn(8, 1, 28, 28)
    for back, _ in (load_checkpoint(path), load_checkpoint(path, model=m)):
        assert type(back.fc1) is type(q.fc1)
        assert torch.equal(back(x), q(x))


def test_quantized_transformer_encoder_reloads_into_a_fresh_model_and_runs_fused_paths_off(tmp_path):
    """A fresh TransformerEncoder would take torch's fused path, which reads each Linear's float weight."""
    from torchslim.quantization import DynamicInt8Config, quantize

    def make() -> nn.Module:
        torch.manual_seed(0)
        return nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64, batch_first=True), 2).eval()

    q, _ = quantize(make(), DynamicInt8Config())
    save_checkpoint(q, tmp_path / "q.safetensors")
    r, _ = load_checkpoint(tmp_path / "q.safetensors", model=make())
    x = torch.randn(4, 10, 32)
    with torch.inference_mode():
        assert torch.equal(r(x), q(x))


def test_pruned_int8_weights_are_stored_sparse_and_reload_identically(tmp_path):
    """Pruning and INT8 compound in the file: zeros of symmetric integer weights are stored as a bitmask."""
    from torchslim.data import load_dataset
    from torchslim.pruning import MagnitudeConfig, prune
    from torchslim.quantization import StaticInt8Config, quantize

    calib = load_dataset("digits", "train").images[:128]
    model = create_model("lenet5", num_classes=10)
    dense, _ = quantize(model, StaticInt8Config(), calib_data=calib)
    pruned, _ = prune(model, MagnitudeConfig(amount=0.8))
    sparse, _ = quantize(pruned, StaticInt8Config(), calib_data=calib)
    a = save_checkpoint(dense, tmp_path / "dense.safetensors", architecture="lenet5").stat().st_size
    b = save_checkpoint(sparse, tmp_path / "sparse.safetensors", architecture="lenet5").stat().st_size
    # 8 bits -> 1 + 8 * 0.2 = 2.6 bits per weight: the file is well under half the dense INT8 file
    assert b < 0.45 * a
    back, _ = load_checkpoint(tmp_path / "sparse.safetensors")
    with torch.inference_mode():
        assert torch.equal(back.eval()(calib[:16]), sparse.eval()(calib[:16]))

import pytest
import torch

from torchslim.checkpoint import load_checkpoint, save_checkpoint
from torchslim.compression import (
    CodedConv2d,
    CodedLinear,
    HuffmanCodingConfig,
    WeightSharingConfig,
    bits_table,
    huffman_code,
    share_weights,
)
from torchslim.errors import CheckpointError, CompatibilityError
from torchslim.models import create_model


@pytest.fixture(scope="module")
def shared_lenet5():
    torch.manual_seed(0)
    m = create_model("lenet5")
    with torch.no_grad():
        for name, keep in (("conv1", 0.66), ("conv2", 0.12), ("fc1", 0.08), ("fc2", 0.19)):
            w = getattr(m, name).weight
            thr = w.abs().flatten().kthvalue(int((1 - keep) * w.numel())).values
            w.mul_((w.abs() > thr).float())
    s, _ = share_weights(m, WeightSharingConfig(layer_bits={"Conv2d": 8, "Linear": 5}, bias_bits=6))
    return m, s


def test_reload_gives_identical_predictions(shared_lenet5, tmp_path):
    _, s = shared_lenet5
    coded, _ = huffman_code(s, HuffmanCodingConfig(index_bits=5))
    assert isinstance(coded.conv2, CodedConv2d) and isinstance(coded.fc1, CodedLinear)
    x = torch.randn(32, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(coded(x), s(x))
    path = save_checkpoint(coded, tmp_path / "dc.safetensors", architecture="lenet5")
    back, meta = load_checkpoint(path)
    assert {e["kind"] for e in meta["structure"]} == {"coded-conv2d", "coded-linear"}
    with torch.no_grad():
        assert torch.equal(back(x), s(x))
    # The file holds only packed bytes: no float weight tensors at all.
    assert set(back.state_dict()) == {f"{n}.packed" for n in ("conv1", "conv2", "fc1", "fc2")}


def test_bits_table_rows_match_the_paper_columns(shared_lenet5):
    _, s = shared_lenet5
    coded, rep = huffman_code(s, HuffmanCodingConfig(index_bits=5, layer_index_bits={"fc1": 4}))
    rows = {r["layer"]: r for r in bits_table(coded)}
    assert rows["fc1"]["kept_pct"] == pytest.approx(8.0, abs=0.01)
    assert rows["conv1"]["weight_bits"] == 8 and rows["fc1"]["weight_bits"] == 5
    assert rows["fc1"]["index_bits"] == 4 and rows["conv2"]["index_bits"] == 5
    for name in ("conv2", "fc1", "fc2"):
        assert rows[name]["weight_bits_huffman"] < rows[name]["weight_bits"]
        assert rows[name]["index_bits_huffman"] <= rows[name]["index_bits"]
    total = rows["total"]
    assert total["weights"] == 430500
    assert total["bytes"] == sum(rows[n]["bytes"] for n in ("conv1", "conv2", "fc1", "fc2"))
    assert total["bytes"] == sum(m.packed.numel() for m in coded.modules() if hasattr(m, "packed"))
    # 8% of fc1 at ~4 bits per weight + ~4 bits per index is about 2-3% of its FP32 bytes.
    assert 1.5 < rows["fc1"]["compress_rate_pct"] < 4.0
    assert {e.name for e in rep.layers} == {"conv1", "conv2", "fc1", "fc2"}


def test_huffman_artifact_smaller_than_fixed_width(shared_lenet5):
    _, s = shared_lenet5
    fixed, _ = huffman_code(s, HuffmanCodingConfig(huffman=False))
    coded, _ = huffman_code(s, HuffmanCodingConfig())
    nbytes = [sum(m.packed.numel() for m in x.modules() if hasattr(m, "packed")) for x in (fixed, coded)]
    assert nbytes[1] < 0.9 * nbytes[0]
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(fixed(x), coded(x))


def test_corrupt_artifact_is_refused(shared_lenet5, tmp_path):
    _, s = shared_lenet5
    coded, _ = huffman_code(s)
    with torch.no_grad():
        coded.fc1.packed[20:] = 255
    path = save_checkpoint(coded, tmp_path / "bad.safetensors", architecture="lenet5")
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_needs_weight_sharing_first():
    with pytest.raises(CompatibilityError, match="weight sharing first"):
        huffman_code(create_model("lenet300"))


def test_auto_index_width_is_never_larger_than_any_fixed_width(shared_lenet5):
    _, s = shared_lenet5
    auto, _ = huffman_code(s, HuffmanCodingConfig(index_bits="auto"))
    best = auto.fc1.packed.numel()
    for ib in (3, 4, 5, 6, 8):
        fixed, _ = huffman_code(s, HuffmanCodingConfig(layer_index_bits={"fc1": ib}, index_bits=5))
        assert best <= fixed.fc1.packed.numel()
    assert auto.fc1.bits_stats.index_bits in range(2, 11)

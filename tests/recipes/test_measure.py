import torch

from torchslim.compression import WeightSharingConfig, huffman_code, share_weights
from torchslim.data import load_dataset
from torchslim.measure import count_macs
from torchslim.models import create_model
from torchslim.recipes.measure import (
    histograms,
    layer_macs,
    layer_table,
    measure_stage,
    weights_by_layer,
)


def test_layer_macs_match_the_flop_counter_on_float_models():
    x = torch.zeros(1, 1, 28, 28)
    for name in ("lenet300", "lenet5"):
        m = create_model(name)
        assert layer_macs(m, x) == count_macs(m, x)


def test_layer_table_sees_through_shared_and_coded_layers():
    m = create_model("lenet300")
    with torch.no_grad():
        m.fc1.weight[:, :392] = 0
    shared, _ = share_weights(m, WeightSharingConfig(bits=4))
    coded, _ = huffman_code(shared)
    for model, bits in ((m, 32.0), (shared, 4.0), (coded, 4.0)):
        rows = {r["name"]: r for r in layer_table(model)}
        assert set(rows) == {"fc1", "fc2", "fc3"}
        assert rows["fc1"]["sparsity"] == 0.5 and rows["fc1"]["numel"] == 235200
        assert rows["fc2"]["bits"] == bits
    assert layer_macs(coded, torch.zeros(1, 1, 28, 28)) == 266200


def test_quantized_layers_count_eight_bits_and_dense_macs():
    from torchslim.quantization import quantize
    from torchslim.quantization.config import StaticInt8Config

    m = create_model("lenet5")
    calib = load_dataset("digits", "train").subset(64)
    q, _ = quantize(m, StaticInt8Config(), calib_data=calib)
    rows = {r["name"]: r for r in layer_table(q)}
    assert {r["bits"] for r in rows.values()} == {8.0}
    from torchslim.quantization import timed_runtime

    runtime, name = timed_runtime(q)  # which runtime is timed is the caller's argument
    stage = measure_stage(q, load_dataset("digits", "test"), architecture="lenet5", architecture_config=None,
                          latency_runs=2, runtime=runtime, runtime_name=name)  # fmt: skip
    assert stage["macs"] == 2293000 and stage["latency_runtime"] == "compile_int8"
    assert stage["size_bytes"] < 1724000 / 3.5


def test_histograms_share_edges_and_count_zeros():
    m = create_model("lenet300")
    after = {k: v.clone() for k, v in weights_by_layer(m).items()}
    after["fc1"][after["fc1"].abs() < 0.01] = 0
    h = histograms(weights_by_layer(m), after)["fc1"]
    assert len(h["edges"]) == 61 and sum(h["before"]) == 235200
    assert sum(h["after"]) + h["after_zeros"] == 235200
    assert h["after_zeros"] == int((after["fc1"] == 0).sum())

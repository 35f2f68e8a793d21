"""The one data protocol: DataLoaders, tuples, dicts, input_fn / target_fn, clear errors."""

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from torchslim.data.protocol import Data, ModelInput, as_data, default_input, default_target
from torchslim.errors import ConfigError, DataError


class DictNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 3)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.fc(batch["features"])


class KwNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.fc(input_ids.float() * attention_mask)


def test_loader_batches_targets_and_counts():
    loader = DataLoader(TensorDataset(torch.randn(10, 6), torch.arange(10)), batch_size=4)
    d = as_data(loader)
    assert [d.inputs(b).batch_size for b in d] == [4, 4, 2]
    assert torch.equal(torch.cat([d.target(b) for b in d]), torch.arange(10))
    assert d.samples() == 10 and len(d) == 3


def test_tensor_source_is_split_into_batches():
    d = Data(torch.randn(130, 2), batch_size=64)
    assert [d.inputs(b).batch_size for b in d] == [64, 64, 2]
    assert d.target(d.first()) is None


def test_dict_batches_follow_the_forward_signature():
    batch = {"features": torch.randn(5, 6), "labels": torch.arange(5)}
    as_positional = default_input(batch, DictNet())
    assert len(as_positional.args) == 1 and set(as_positional.args[0]) == {"features", "labels"}
    kw = default_input({"input_ids": torch.ones(5, 6), "attention_mask": torch.ones(5, 6), "labels": torch.zeros(5)}, KwNet())
    assert set(kw.kwargs) == {"input_ids", "attention_mask"} and kw.args == ()
    assert torch.equal(default_target(batch), torch.arange(5))


def test_generator_is_read_once_and_kept():
    d = Data(x for x in [torch.randn(3, 6), torch.randn(2, 6)])
    assert d.samples() == 5 and d.samples() == 5


def test_input_fn_and_target_fn():
    rows = [{"img": torch.randn(4, 6), "y": torch.tensor([0, 1, 2, 0])}]
    d = as_data(rows, input_fn=lambda b: b["img"], target_fn=lambda b: b["y"])
    out = d.inputs(rows[0])(nn.Linear(6, 3))
    assert out.shape == (4, 3) and d.target(rows[0]).tolist() == [0, 1, 2, 0]


def test_resized_repeats_and_truncates_every_tensor():
    inp = ModelInput((torch.arange(3).view(3, 1),), {"m": torch.ones(3, 2)})
    big = inp.resized(7)
    assert big.batch_size == 7 and big.args[0].view(-1).tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert big.kwargs["m"].shape == (7, 2) and inp.resized(2).batch_size == 2


def test_check_says_what_the_model_got_and_expects():
    with pytest.raises(DataError, match=r"args\[0\]: float32\[4, 5\].*forward\(input: torch.Tensor\).*input_fn"):
        as_data([torch.randn(4, 5)]).check(nn.Linear(6, 3))
    bad = torch.randn(4, 6)
    bad[0, 0] = float("nan")
    with pytest.raises(DataError, match="1 NaN or infinite"):
        as_data([bad]).check(nn.Linear(6, 3))
    with pytest.raises(DataError, match="has no batches"):
        as_data([]).check(nn.Linear(6, 3))


def test_model_mode_is_restored_by_check():
    m = nn.Sequential(nn.Linear(6, 3), nn.Dropout()).train()
    as_data([torch.randn(2, 6)]).check(m)
    assert m.training and m[1].training


def test_bad_sources_are_typed_errors():
    with pytest.raises(DataError, match="not a DataLoader"):
        as_data("train.csv")
    with pytest.raises(DataError, match="not iterable"):
        as_data(3)
    with pytest.raises(ConfigError, match="input_fn must be callable"):
        as_data([torch.ones(1)], input_fn=5)

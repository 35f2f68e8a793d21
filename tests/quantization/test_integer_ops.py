"""The one table of what runs on integers: the planner, the eager runtime and the lowering agree.

For every op of ``INTEGER_OPS`` in each spelling a forward can use (module, function, method), a
conv -> op -> layer model is quantized statically; the test asserts that the planner hands
integers across the op, that the eager runtime receives a ``QTensor`` after it, that the lowered
graph dequantizes nothing before the output layer, and that both runtimes give the same numbers.
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from torchslim.quantization import QTensor, StaticInt8Config, quantize
from torchslim.quantization.integer_ops import INTEGER_OPS, op_for_function
from torchslim.quantization.lowering import lower_static
from torchslim.quantization.static_modules import _HANDLERS, dequantize_uint8

# spelling -> (op name, the op, whether the next layer is a Linear on the flattened map)
SPELLINGS = {
    "nn.ReLU": ("relu", nn.ReLU(), False),
    "F.relu": ("relu", F.relu, False),
    "F.relu_": ("relu", F.relu_, False),
    "Tensor.relu": ("relu", lambda x: x.relu(), False),
    "nn.MaxPool2d": ("max_pool2d", nn.MaxPool2d(2), False),
    "F.max_pool2d 3/2/1": ("max_pool2d", lambda x: F.max_pool2d(x, 3, 2, 1), False),
    "nn.AdaptiveAvgPool2d": ("adaptive_avg_pool2d", nn.AdaptiveAvgPool2d(2), False),
    "F.adaptive_avg_pool2d": ("adaptive_avg_pool2d", lambda x: F.adaptive_avg_pool2d(x, 3), False),
    "nn.AvgPool2d": ("avg_pool2d", nn.AvgPool2d(2), False),
    "F.avg_pool2d": ("avg_pool2d", lambda x: F.avg_pool2d(x, 2), False),
    "nn.Flatten": ("flatten", nn.Flatten(), True),
    "torch.flatten": ("flatten", lambda x: torch.flatten(x, 1), True),
    "Tensor.flatten": ("flatten", lambda x: x.flatten(1), True),
    "Tensor.view": ("reshape", lambda x: x.view(x.size(0), -1), True),
    "Tensor.reshape": ("reshape", lambda x: x.reshape(x.shape[0], -1), True),
    "Tensor.contiguous": ("reshape", lambda x: x.contiguous(), False),
    "nn.Identity": ("identity", nn.Identity(), False),
    "nn.Dropout": ("identity", nn.Dropout(0.3), False),
    "F.dropout": ("identity", lambda x: F.dropout(x, 0.3, False), False),
}


class _Net(nn.Module):
    def __init__(self, op, flat: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.op = op if isinstance(op, nn.Module) else None
        self.fn = None if isinstance(op, nn.Module) else op
        self.flat = flat
        self.tail = nn.LazyLinear(5) if flat else nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.conv1(x)
        y = self.op(y) if self.op is not None else self.fn(y)
        return self.tail(y)


def test_every_function_of_the_table_has_an_eager_handler():
    names = {op.name for op in INTEGER_OPS}
    assert names == {"relu", "max_pool2d", "adaptive_avg_pool2d", "avg_pool2d", "flatten", "reshape", "identity", "add"}
    for op in INTEGER_OPS:
        for f in op.functions:
            assert f in _HANDLERS and op_for_function(f) is op
    assert {n for _, (n, _, _) in SPELLINGS.items()} == names - {"add"}  # add: tests/quantization/test_static.py


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_op_runs_on_integers_in_planner_eager_runtime_and_lowering(spelling):
    _, op, flat = SPELLINGS[spelling]
    torch.manual_seed(0)
    model = _Net(op, flat).eval()
    x = torch.randn(16, 3, 8, 8)
    with torch.no_grad():
        model(x)  # materialize the LazyLinear
    q, _ = quantize(model, StaticInt8Config(), calib_data=x)
    assert q.conv1.out_float is False  # planner: integers cross the op

    seen = []
    q.tail.register_forward_pre_hook(lambda m, args: seen.append(type(args[0])))
    with torch.no_grad():
        eager = q(x[:4])
    assert seen == [QTensor]  # eager runtime: the op ran on the integers

    low = lower_static(q, native=False)
    deq = [n for n in low.graph.nodes if n.op == "call_function" and n.target is dequantize_uint8]
    assert deq == []  # lowering: nothing dequantized (the tail emits float itself)
    with torch.no_grad():
        assert torch.equal(low(x[:4]), eager)
        ref = model(x[:4])
    assert ((eager - ref).norm() / ref.norm()).item() < 0.05

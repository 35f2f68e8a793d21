"""LeNet-300-100 and LeNet-5 in the Caffe variants used by Deep Compression (Han et al., 2016).

Parameter counts match the paper's Table 2/3 models: 266,610 and 431,080.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from torchslim.models.registry import register_model


class LeNet300(nn.Module):
    def __init__(self, num_classes: int = 10, in_features: int = 784) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        return self.fc3(self.relu(self.fc2(self.relu(self.fc1(x)))))


class LeNet5(nn.Module):
    """Caffe's LeNet: conv(20,5x5) - pool - conv(50,5x5) - pool - fc500 - fc10.

    ReLUs follow the convolutions too (Caffe's prototxt has only the fc one); they add no
    parameters and make the 91% Fashion-MNIST bar reachable.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.pool = nn.MaxPool2d(2)
        self.relu = nn.ReLU()
        self.fc1 = nn.Linear(50 * 4 * 4, 500)
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        return self.fc2(self.relu(self.fc1(torch.flatten(x, 1))))


@register_model("lenet300", family="lenet", description="LeNet-300-100 MLP (Deep Compression)")
def lenet300(num_classes: int = 10) -> nn.Module:
    return LeNet300(num_classes)


@register_model("lenet5", family="lenet", description="LeNet-5, Caffe variant (Deep Compression)")
def lenet5(num_classes: int = 10) -> nn.Module:
    return LeNet5(num_classes)

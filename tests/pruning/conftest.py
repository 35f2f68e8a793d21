import torch
import torch.nn as nn


class Branchy(nn.Module):
    """Residual add, concatenation and a depthwise convolution in one tiny network."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
        self.dw_bn = nn.BatchNorm2d(16)
        self.a = nn.Conv2d(16, 16, 1)
        self.b = nn.Conv2d(16, 8, 3, padding=1)
        self.head = nn.Conv2d(24, 32, 1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x)))
        x = x + torch.relu(self.dw_bn(self.dw(x)))  # depthwise + residual
        y = torch.cat([self.a(x), self.b(x)], dim=1)  # concat
        y = torch.relu(self.head(y))
        return self.fc(y.mean((2, 3)))

"""Example MLPs and convolutional networks: plain PyTorch, built for cipm's tests."""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
    "sigmoid": nn.Sigmoid,
}


def mlp(
    depth: int = 3,
    width: int = 32,
    bias: bool = True,
    activation: str = "relu",
    d_in: int = 8,
    d_out: int = 4,
    batch: int = 4,
) -> tuple[nn.Module, torch.Tensor]:
    """`depth` hidden layers of `width` units."""
    layers: list[nn.Module] = []
    sizes = [d_in] + [width] * depth
    for a, b in pairwise(sizes):
        layers += [nn.Linear(a, b, bias=bias), ACTIVATIONS[activation]()]
    layers.append(nn.Linear(sizes[-1], d_out, bias=bias))
    return nn.Sequential(*layers).eval(), torch.randn(batch, d_in)


def _conv_bn(c_in: int, c_out: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out)
    )


def cnn_bn(width: int = 8) -> tuple[nn.Module, torch.Tensor]:
    model = nn.Sequential(
        _conv_bn(3, width),
        nn.ReLU(),
        _conv_bn(width, 2 * width, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, 10),
    )
    return randomize_bn(model).eval(), torch.randn(2, 3, 16, 16)


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn(c_in, c_out, stride=stride)
        self.conv2 = _conv_bn(c_out, c_out)
        self.shortcut = (
            _conv_bn(c_in, c_out, k=1, stride=stride)
            if stride != 1 or c_in != c_out
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(F.relu(self.conv1(x))) + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet: 3 stages of `blocks` basic blocks (ResNet-20 has 3)."""

    def __init__(self, blocks: int = 3, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = _conv_bn(3, width)
        stages, c = [], width
        for i, w in enumerate([width, 2 * width, 4 * width]):
            layers = [
                BasicBlock(c if j == 0 else w, w, 2 if (j == 0 and i > 0) else 1)
                for j in range(blocks)
            ]
            stages.append(nn.Sequential(*layers))
            c = w
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def resnet20(width: int = 16) -> tuple[nn.Module, torch.Tensor]:
    return randomize_bn(ResNet(3, width)).eval(), torch.randn(2, 3, 16, 16)


class Bottleneck(nn.Module):
    def __init__(self, c_in: int, mid: int, stride: int) -> None:
        super().__init__()
        c_out = 4 * mid
        self.conv1 = _conv_bn(c_in, mid, k=1)
        self.conv2 = _conv_bn(mid, mid, stride=stride)
        self.conv3 = _conv_bn(mid, c_out, k=1)
        self.shortcut = (
            _conv_bn(c_in, c_out, k=1, stride=stride)
            if stride != 1 or c_in != c_out
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv2(F.relu(self.conv1(x))))
        return F.relu(self.conv3(y) + self.shortcut(x))


class ResNet50(nn.Module):
    """ImageNet ResNet-50 layout (3, 4, 6, 3 bottlenecks; 25.6 M parameters)."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = _conv_bn(3, 64, k=7, stride=2)
        layers, c = [], 64
        for i, (n, mid) in enumerate([(3, 64), (4, 128), (6, 256), (3, 512)]):
            blocks = []
            for j in range(n):
                blocks.append(Bottleneck(c, mid, 2 if (j == 0 and i > 0) else 1))
                c = 4 * mid
            layers.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.stem(x)), 3, 2, 1)
        return self.fc(F.adaptive_avg_pool2d(self.layers(x), 1).flatten(1))


def resnet50() -> tuple[nn.Module, torch.Tensor]:
    return ResNet50().eval(), torch.randn(1, 3, 224, 224)


def vgg(widths: tuple[int, ...] = (8, 16), hidden: int = 32) -> tuple[nn.Module, torch.Tensor]:
    """Conv stack, then flatten of channels x H x W into a Linear."""
    layers: list[nn.Module] = []
    c = 3
    for w in widths:
        layers += [nn.Conv2d(c, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        c = w
    side = 16 // 2 ** len(widths)
    layers += [nn.Flatten(), nn.Linear(c * side * side, hidden), nn.ReLU(), nn.Linear(hidden, 10)]
    return nn.Sequential(*layers).eval(), torch.randn(2, 3, 16, 16)


class DenseNet(nn.Module):
    """Dense block: each layer sees the concatenation of all earlier feature maps."""

    def __init__(self, growth: int = 6, layers: int = 3, stem: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, stem, 3, padding=1)
        self.convs = nn.ModuleList(_conv_bn(stem + i * growth, growth) for i in range(layers))
        self.fc = nn.Linear(stem + layers * growth, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [self.stem(x)]
        for conv in self.convs:
            features.append(F.relu(conv(torch.cat(features, dim=1))))
        return self.fc(torch.cat(features, dim=1).mean(dim=(2, 3)))


def densenet() -> tuple[nn.Module, torch.Tensor]:
    return randomize_bn(DenseNet()).eval(), torch.randn(2, 3, 8, 8)


def mobilenet(width: int = 8) -> tuple[nn.Module, torch.Tensor]:
    """Depthwise-separable blocks: depthwise 3x3 then pointwise 1x1, each with BatchNorm."""

    def separable(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
        return [
            _conv_bn(c_in, c_in, stride=stride, groups=c_in),
            nn.ReLU6(),
            _conv_bn(c_in, c_out, k=1),
            nn.ReLU6(),
        ]

    model = nn.Sequential(
        _conv_bn(3, width, stride=2),
        nn.ReLU6(),
        *separable(width, 2 * width, 1),
        *separable(2 * width, 4 * width, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * width, 10),
    )
    return randomize_bn(model).eval(), torch.randn(2, 3, 16, 16)


def cnn_groupnorm(width: int = 16, groups: int = 4) -> tuple[nn.Module, torch.Tensor]:
    model = nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.GroupNorm(groups, width),
        nn.SiLU(),
        nn.Conv2d(width, width, 3, padding=1),
        nn.GroupNorm(groups, width),
        nn.SiLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, 10),
    )
    for m in model.modules():
        if isinstance(m, nn.GroupNorm):
            nn.init.normal_(m.weight, 1.0, 0.3)
            nn.init.normal_(m.bias, 0.0, 0.3)
    return model.eval(), torch.randn(2, 3, 8, 8)


def randomize_bn(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, so tests can see mistakes."""
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None:
            assert m.running_var is not None
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.randn(n, generator=gen) * 0.3 + 1)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.3)
    return model

"""Built-in example models: the architectures the tests, demo and benchmarks trace.

Every factory returns ``(model, example_input)`` with the model in eval mode. These are plain
PyTorch; nothing in cipm's core knows about them.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ZOO", "build"]

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
    return _randomize_bn(model).eval(), torch.randn(2, 3, 16, 16)


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
    return _randomize_bn(ResNet(3, width)).eval(), torch.randn(2, 3, 16, 16)


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
    return _randomize_bn(DenseNet()).eval(), torch.randn(2, 3, 8, 8)


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
    return _randomize_bn(model).eval(), torch.randn(2, 3, 16, 16)


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


class SequenceClassifier(nn.Module):
    """nn.TransformerEncoder between an input projection and a classification head."""

    def __init__(
        self,
        norm_first: bool,
        d_in: int = 6,
        d: int = 16,
        heads: int = 4,
        layers: int = 2,
        classes: int = 3,
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(d_in, d)
        layer = nn.TransformerEncoderLayer(
            d, heads, 2 * d, dropout=0.1, batch_first=True, norm_first=norm_first
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x)).mean(dim=1))


def transformer_encoder(norm_first: bool = False) -> tuple[nn.Module, torch.Tensor]:
    return SequenceClassifier(norm_first).eval(), torch.randn(2, 5, 6)


class Attention(nn.Module):
    """Multi-head self-attention with separate q/k/v projections (BERT and GPT style)."""

    def __init__(self, d: int, heads: int, causal: bool) -> None:
        super().__init__()
        self.heads, self.head_dim, self.causal = heads, d // heads, causal
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.out = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = (
            p(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
            for p in (self.query, self.key, self.value)
        )
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.out(y.transpose(1, 2).reshape(b, t, self.heads * self.head_dim))


class Block(nn.Module):
    def __init__(self, d: int, heads: int, ff: int, causal: bool, pre_norm: bool) -> None:
        super().__init__()
        self.attn = Attention(d, heads, causal)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, ff), nn.GELU(), nn.Linear(ff, d))
        self.pre_norm = pre_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.attn(self.ln1(x))
            return x + self.mlp(self.ln2(x))
        x = self.ln1(x + self.attn(x))
        return self.ln2(x + self.mlp(x))


class GPT(nn.Module):
    """Decoder-only LM: causal SDPA, GELU MLP, pre-LayerNorm, output head tied to embedding."""

    def __init__(
        self, vocab: int = 50, d: int = 32, heads: int = 4, layers: int = 2, context: int = 16
    ) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(context, d)
        self.blocks = nn.ModuleList(Block(d, heads, 4 * d, True, True) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.tok.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tok(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def gpt() -> tuple[nn.Module, torch.Tensor]:
    return GPT().eval(), torch.randint(0, 50, (2, 8))


class Encoder(nn.Module):
    """BERT-style classifier: embeddings, LayerNorm, post-norm blocks, pooler on token 0."""

    def __init__(
        self,
        vocab: int = 100,
        d: int = 32,
        heads: int = 4,
        layers: int = 2,
        ff: int = 64,
        context: int = 16,
    ) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(context, d)
        self.ln = nn.LayerNorm(d)
        self.blocks = nn.ModuleList(Block(d, heads, ff, False, False) for _ in range(layers))
        self.pooler = nn.Linear(d, d)
        self.classifier = nn.Linear(d, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.ln(self.tok(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device)))
        for block in self.blocks:
            x = block(x)
        return self.classifier(torch.tanh(self.pooler(x[:, 0])))


def encoder() -> tuple[nn.Module, torch.Tensor]:
    return Encoder().eval(), torch.randint(0, 100, (2, 8))


def bert_base() -> tuple[nn.Module, torch.Tensor]:
    """BERT-base sized: 12 layers, hidden 768, 12 heads, intermediate 3072 (~110 M params)."""
    model = Encoder(vocab=30522, d=768, heads=12, layers=12, ff=3072, context=512)
    return model.eval(), torch.randint(0, 30522, (1, 128))


def _randomize_bn(model: nn.Module) -> nn.Module:
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


ZOO: dict[str, Callable[[], tuple[nn.Module, torch.Tensor]]] = {
    "mlp": mlp,
    "cnn_bn": cnn_bn,
    "resnet20": resnet20,
    "vgg": vgg,
    "densenet": densenet,
    "mobilenet": mobilenet,
    "cnn_groupnorm": cnn_groupnorm,
    "transformer_post_norm": lambda: transformer_encoder(norm_first=False),
    "transformer_pre_norm": lambda: transformer_encoder(norm_first=True),
    "gpt": gpt,
    "encoder": encoder,
}

LARGE: dict[str, Callable[[], tuple[nn.Module, torch.Tensor]]] = {
    "resnet50": resnet50,
    "bert_base": bert_base,
}


def build(name: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """Build a zoo model by name with a fixed seed."""
    factories = {**ZOO, **LARGE}
    if name not in factories:
        from cipm.errors import CipmError

        raise CipmError(f"no example model '{name}'; choose one of {sorted(factories)}")
    torch.manual_seed(seed)
    return factories[name]()

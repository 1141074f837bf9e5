"""Small built-in data for examples and benchmarks: scikit-learn's handwritten digits."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cipm.errors import CipmError

__all__ = ["Batches", "digits", "digits_cnn", "digits_mlp", "train_classifier"]

Batches = list[tuple[torch.Tensor, torch.Tensor]]


def digits(image: bool = False, batch: int = 128, seed: int = 0) -> tuple[Batches, Batches]:
    """Train and test batches (80/20) of the 1797 8x8 digits, standardized per pixel.

    Args:
        image: (N, 1, 8, 8) images instead of (N, 64) vectors.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise CipmError("digits need scikit-learn: pip install 'cipm[data]'") from e
    x_np, y_np = load_digits(return_X_y=True)
    x = torch.tensor(x_np, dtype=torch.float32)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    if image:
        x = x.reshape(-1, 1, 8, 8)
    y = torch.tensor(y_np)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x, y = x[order], y[order]
    split = int(0.8 * len(x))

    def batches(a: torch.Tensor, b: torch.Tensor) -> Batches:
        return list(zip(a.split(batch), b.split(batch), strict=True))

    return batches(x[:split], y[:split]), batches(x[split:], y[split:])


def digits_mlp(width: int = 256) -> torch.nn.Module:
    """An MLP for the (N, 64) digit vectors: two hidden ReLU layers of `width` units."""
    from torch import nn

    return nn.Sequential(
        nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10)
    )


def digits_cnn(width: int = 32) -> torch.nn.Module:
    """A small CNN for the (N, 1, 8, 8) digit images: three conv-BatchNorm-ReLU blocks of
    `width`, 2 `width` and 2 `width` channels (a max-pool after the second), global average
    pooling and a linear classifier."""
    from torch import nn

    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]

    return nn.Sequential(
        *block(1, width),
        *block(width, 2 * width),
        nn.MaxPool2d(2),
        *block(2 * width, 2 * width),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, 10),
    )


def train_classifier(
    model: torch.nn.Module, data: Batches, *, epochs: int, seed: int, lr: float = 1e-3
) -> torch.nn.Module:
    """Train `model` in place with Adam and cross-entropy; returns it in eval mode.

    `seed` fixes the batch order and any randomness inside the model (dropout), on a fork
    of torch's global generator: the caller's random state is left as it was.
    """
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(epochs):
            for i in torch.randperm(len(data), generator=gen).tolist():
                x, y = data[i]
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                opt.step()
    return model.eval()

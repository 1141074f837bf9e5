"""Small built-in data for examples and benchmarks: scikit-learn's handwritten digits."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from cipm.errors import CipmError

__all__ = [
    "Batches",
    "accuracy",
    "digits",
    "digits_cnn",
    "digits_mlp",
    "of_classes",
    "train_classifier",
]

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


def of_classes(data: Batches, classes: range | list[int], batch: int = 64) -> Batches:
    """The examples of `data` whose label is in `classes`, in order, re-batched (to split
    digits into tasks: 0-4 and 5-9)."""
    x = torch.cat([x for x, _ in data])
    y = torch.cat([y for _, y in data])
    keep = torch.isin(y, torch.tensor(list(classes)))
    if not bool(keep.any()):
        raise CipmError(f"no examples of classes {list(classes)}")
    return list(zip(x[keep].split(batch), y[keep].split(batch), strict=True))


def accuracy(
    model: torch.nn.Module, data: Batches, classes: range | list[int] | None = None
) -> float:
    """Fraction of examples whose highest output is their label; with `classes`, the highest
    among those classes' outputs only (task-aware: a task's accuracy when the task is known)."""
    right = 0
    with torch.no_grad():
        for x, y in data:
            out = model(x)
            if classes is None:
                right += int((out.argmax(1) == y).sum())
            else:
                ids = torch.tensor(list(classes))
                right += int((ids[out[:, ids].argmax(1)] == y).sum())
    return right / sum(len(y) for _, y in data)


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
    model: torch.nn.Module,
    data: Batches,
    *,
    epochs: int,
    seed: int,
    lr: float = 1e-3,
    trainable: Mapping[str, torch.Tensor] | None = None,
) -> torch.nn.Module:
    """Train `model` in place with Adam and cross-entropy; returns it in eval mode.

    `seed` fixes the batch order and any randomness inside the model (dropout), on a fork
    of torch's global generator: the caller's random state is left as it was. With
    `trainable` (parameter name -> boolean mask of its shape, e.g.
    `cipm.Partition.block_masks`), only those entries train: gradients elsewhere are zeroed
    and, after every step, every other entry (and every parameter not named) is put back
    exactly as it was.
    """
    named = dict(model.named_parameters())
    frozen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    if trainable is not None:
        unknown = sorted(set(trainable) - set(named))
        if unknown:
            raise CipmError(f"trainable names parameters the model does not have: {unknown}")
        for name, p in named.items():
            mask = trainable.get(name, torch.zeros(p.shape, dtype=torch.bool))
            if tuple(mask.shape) != tuple(p.shape) or mask.dtype != torch.bool:
                raise CipmError(f"the mask of '{name}' must be a bool tensor of shape {p.shape}")
            frozen[name] = (mask.to(p.device), p.detach().clone())
    params = [p for n, p in named.items() if n not in frozen or bool(frozen[n][0].any())]
    if not params:
        raise CipmError("train_classifier: the masks leave nothing to train")
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(epochs):
            for i in torch.randperm(len(data), generator=gen).tolist():
                x, y = data[i]
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                for name, (mask, _) in frozen.items():
                    grad = named[name].grad
                    if grad is not None:
                        grad.mul_(mask)
                opt.step()
                with torch.no_grad():
                    for name, (mask, before) in frozen.items():
                        named[name].copy_(torch.where(mask, named[name], before))
    return model.eval()

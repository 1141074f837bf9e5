"""The zoo's four families: their data, how their models are built and trained."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cipm.errors import CipmError
from cipm.examples.data import Batches, digits
from cipm.examples.sequences import Block
from cipm.meta.zoo.specs import FAMILIES, HEADS, ZooSpec

__all__ = ["FAMILY", "accuracy_on", "family_data", "one_thread", "untrained"]

BATCH = 128
SEQUENCE, VOCAB = 12, 16  # the transformer family's task


@dataclass(frozen=True)
class _Family:
    """How a family's models are made and trained; the data is the same for every seed."""

    data: Callable[[], tuple[Batches, Batches]]  # (train, test) batches
    model: Callable[[int, int], nn.Module]  # (width, depth) -> an untrained model
    epochs: int
    lr: float


def _mlp(inputs: int) -> Callable[[int, int], nn.Module]:
    def build(width: int, depth: int) -> nn.Module:
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(inputs if i == 0 else width, width), nn.ReLU()]
        return nn.Sequential(*layers, nn.Linear(width, 10))

    return build


def _cnn(width: int, depth: int) -> nn.Module:
    """`depth` conv3x3-BatchNorm-ReLU blocks (a max-pool after the first: 8x8 -> 4x4, which
    quarters the cost of the rest), global average pooling, a linear classifier."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Conv2d(1 if i == 0 else width, width, 3, padding=1), nn.BatchNorm2d(width)]
        layers += [nn.ReLU(), nn.MaxPool2d(2)] if i == 0 else [nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))


class _SequenceClassifier(nn.Module):
    """Token and position embeddings, pre-norm transformer blocks, mean over tokens, head."""

    # the module it had when the zoo was one module: `structure()` digests the class's module,
    # so this keeps the graphs of zoos built before the split (out/zoo) this model's
    __module__ = "cipm.meta.zoo"

    def __init__(self, width: int, depth: int) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(VOCAB, width), nn.Embedding(SEQUENCE, width)
        self.blocks = nn.ModuleList(
            Block(width, HEADS, 2 * width, False, True) for _ in range(depth)
        )
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, 10)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tok(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x).mean(dim=1))


def _batches(x: torch.Tensor, y: torch.Tensor) -> Batches:
    return list(zip(x.split(BATCH), y.split(BATCH), strict=True))


def _split(x: torch.Tensor, y: torch.Tensor) -> tuple[Batches, Batches]:
    cut = int(0.8 * len(x))
    return _batches(x[:cut], y[:cut]), _batches(x[cut:], y[cut:])


@contextmanager
def _kept_global_random() -> Iterator[None]:
    """Leave numpy's and Python's global generators as they were: mnist1d seeds both, and
    loading scikit-learn's digits draws from Python's."""
    state = np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        np.random.set_state(state[0])
        random.setstate(state[1])


@functools.cache
def _digits(image: bool) -> tuple[Batches, Batches]:
    with _kept_global_random():
        return digits(image=image, batch=BATCH)


@functools.cache
def _mnist1d() -> tuple[Batches, Batches]:
    """MNIST-1D's 4000/1000 split, made procedurally (nothing is downloaded), standardized
    per position with the training set's mean and std."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as e:
        raise CipmError("the mlp-mnist1d family needs mnist1d: pip install 'cipm[data]'") from e
    with _kept_global_random():
        data = make_dataset(get_dataset_args())
    x, x_test = (torch.tensor(data[k], dtype=torch.float32) for k in ("x", "x_test"))
    mean, std = x.mean(0), x.std(0) + 1e-6
    return (
        _batches((x - mean) / std, torch.tensor(data["y"])),
        _batches((x_test - mean) / std, torch.tensor(data["y_test"])),
    )


@functools.cache
def _majority_sequences(count: int = 3000, seed: int = 0) -> tuple[Batches, Batches]:
    """Name the majority token: sequences of `SEQUENCE` tokens of which 4 are the class
    (one of the first 10 tokens) and the rest any other token, each fewer than 4 times."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (count,), generator=gen)
    x = torch.empty(count, SEQUENCE, dtype=torch.long)
    todo = torch.arange(count)
    while len(todo):  # draw again the rare sequences where another token ties the class
        label = y[todo, None]
        drawn = torch.randint(0, VOCAB - 1, (len(todo), SEQUENCE), generator=gen)
        drawn += (drawn >= label).long()  # any token but the class
        at = torch.rand(len(todo), SEQUENCE, generator=gen).argsort(1)[:, :4]
        drawn.scatter_(1, at, label.expand(-1, 4))
        others = F.one_hot(drawn, VOCAB).sum(1).scatter(1, label, 0)
        fine = others.max(1).values < 4
        x[todo[fine]] = drawn[fine]
        todo = todo[~fine]
    return _split(x, y)


FAMILY: dict[str, _Family] = {
    "mlp-digits": _Family(functools.partial(_digits, False), _mlp(64), epochs=30, lr=1e-3),
    "cnn-digits": _Family(functools.partial(_digits, True), _cnn, epochs=12, lr=3e-3),
    "mlp-mnist1d": _Family(_mnist1d, _mlp(40), epochs=40, lr=2e-3),
    "transformer-seq": _Family(_majority_sequences, _SequenceClassifier, epochs=6, lr=3e-3),
}


def family_data(family: str) -> tuple[Batches, Batches]:
    """The (train, test) batches of a family's task, the same for every seed: its models
    were trained on the first and their `accuracy` is on the second.

    Raises:
        CipmError: an unknown family, or its data's package is missing.
    """
    if family not in FAMILY:
        raise CipmError(f"unknown zoo family {family!r}; use one of {list(FAMILIES)}")
    train, test = FAMILY[family].data()
    return list(train), list(test)  # the cached lists stay as they are


def untrained(spec: ZooSpec) -> nn.Module:
    """An untrained model of `spec`, initialized from its seed (the caller's generator is
    left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        return FAMILY[spec.family].model(spec.width, spec.depth)


@contextmanager
def one_thread() -> Iterator[None]:
    """Run on one thread: torch's parallel reductions add in an order that depends on the
    thread count, so this makes the same models on any machine (and a busy one does not
    stall on thread barriers); the caller's setting is restored."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def accuracy_on(model: nn.Module, test: Batches) -> float:
    with torch.no_grad():
        right = sum(int((model(x).argmax(1) == y).sum()) for x, y in test)
    return right / sum(len(y) for _, y in test)

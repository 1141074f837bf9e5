"""The catalog of built-in example models: the architectures the tests, demo and benchmarks
trace, by name.

Every factory returns ``(model, example_input)`` with the model in eval mode. These are plain
PyTorch (`cipm.examples.convnets`, `cipm.examples.sequences`); nothing in cipm's core knows
about them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from cipm.errors import CipmError
from cipm.examples.convnets import (
    ACTIVATIONS,
    BasicBlock,
    ResNet,
    cnn_bn,
    cnn_groupnorm,
    densenet,
    mlp,
    mobilenet,
    resnet20,
    resnet50,
    vgg,
)
from cipm.examples.sequences import Encoder, bert_base, encoder, gpt, transformer_encoder

__all__ = ["ACTIVATIONS", "LARGE", "MODELS", "BasicBlock", "Encoder", "ResNet", "build", "mlp"]

MODELS: dict[str, Callable[[], tuple[nn.Module, torch.Tensor]]] = {
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
    """Build a catalog model by name with a fixed seed."""
    factories = {**MODELS, **LARGE}
    if name not in factories:
        raise CipmError(f"no example model '{name}'; choose one of {sorted(factories)}")
    torch.manual_seed(seed)
    return factories[name]()

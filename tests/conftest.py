"""Shared test helpers: float64 function comparison and traced-zoo caching."""

from __future__ import annotations

import functools
import os
import warnings

import torch
from hypothesis import settings

import cipm
from cipm.examples import catalog

settings.register_profile("ci", max_examples=8, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=8, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@functools.cache
def traced(name: str) -> cipm.SymmetryGraph:
    """Symmetry graph of a zoo model (the architecture, so one trace serves every seed)."""
    model, x = catalog.build(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cipm.trace(model, x)


def as_double(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.nn.Module, torch.Tensor]:
    return model.double(), (x.double() if x.is_floating_point() else x)


def assert_same_function(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor) -> None:
    """Outputs agree in float64 up to summation-order rounding."""
    with torch.no_grad():
        ya, yb = a(x), b(x)
    torch.testing.assert_close(ya, yb, rtol=1e-9, atol=1e-10)


def assert_state_equal(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@functools.cache
def zoo_stats(name: str) -> tuple[torch.nn.Module, torch.Tensor, cipm.Statistics]:
    """(float64 zoo model, its example input, statistics on that input and two more
    batches), built once per test session."""
    graph = traced(name)
    model, x = as_double(*catalog.build(name))
    if x.is_floating_point():
        gen = torch.Generator().manual_seed(1)
        loader = [x] + [torch.randn(x.shape, generator=gen).double() for _ in "ab"]
    else:
        loader = [x] + [catalog.build(name, seed=seed)[1] for seed in (1, 2)]
    return model, x, cipm.collect(model, graph, loader, config=cipm.CollectConfig(progress=False))

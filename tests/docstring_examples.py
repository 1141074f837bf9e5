"""A pytest plugin (``-p docstring_examples`` in pyproject.toml): the names every docstring
example in cipm/ may use (pytest runs them: --doctest-modules):
`cipm`, `torch`, a small float64 MLP `model` with example inputs `x`, its symmetry graph
`graph` and calibration batches `data`. Examples run in a fresh temporary folder, so the
files they write go there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from _pytest.doctest import DoctestItem

import cipm


@pytest.fixture(autouse=True)
def _doctest_names(request: pytest.FixtureRequest, doctest_namespace: dict[str, Any]) -> None:
    if not isinstance(request.node, DoctestItem):  # tests/ have their own helpers
        return
    tmp_path: Path = request.getfixturevalue("tmp_path")
    request.getfixturevalue("monkeypatch").chdir(tmp_path)
    gen = torch.Generator().manual_seed(0)
    layers = torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.ReLU()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torch.nn.Sequential(*layers, torch.nn.Linear(8, 2)).double().eval()
    x = torch.randn(5, 4, dtype=torch.float64, generator=gen)
    data = [torch.randn(32, 4, dtype=torch.float64, generator=gen) for _ in range(3)]
    doctest_namespace.update(
        cipm=cipm, torch=torch, model=model, x=x, data=data, graph=cipm.trace(model, x)
    )

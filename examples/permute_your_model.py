"""Find the symmetries of a model nobody wrote a spec for, and permute it without changing it.

python examples/permute_your_model.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import cipm


class TinyMixer(nn.Module):
    """A made-up model: a gated MLP block with a residual, a LayerNorm and a classifier."""

    def __init__(self, d: int = 24, hidden: int = 64, classes: int = 5) -> None:
        super().__init__()
        self.embed = nn.Linear(10, d)
        self.norm = nn.LayerNorm(d)
        self.gate = nn.Linear(d, hidden)
        self.up = nn.Linear(d, hidden)
        self.down = nn.Linear(hidden, d)
        self.head = nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        y = self.norm(h)
        h = h + self.down(F.silu(self.gate(y)) * self.up(y))
        return self.head(h)


def main() -> None:
    torch.manual_seed(0)
    model = TinyMixer().eval().double()
    x = torch.randn(8, 10, dtype=torch.float64)

    graph = cipm.trace(model, x)
    print(graph)

    perm = graph.random_permutation(seed=0)
    permuted = cipm.permute(model, perm)  # a new model; `model` is unchanged
    print(f"\nmax |output difference| after permuting: {(model(x) - permuted(x)).abs().max():.1e}")
    moved = (model.down.weight - permuted.down.weight).abs().max()
    print(f"max |weight change| in down.weight:      {moved:.2f}")

    restored = cipm.permute(permuted, perm.inverse())
    same = all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), restored.state_dict().values(), strict=True)
    )
    print(f"permute then inverse restores every tensor exactly: {same}")


if __name__ == "__main__":
    main()

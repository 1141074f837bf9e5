"""`MetaNetwork`: message passing over a model's units, one score per unit.

Every round updates each unit's embedding from four messages: its correlated neighbours in
its group (intra-layer), the units that feed it and the units it feeds through weights
(inter-layer, two relations since the directions differ), and the means over its group and
over all groups (global). Messages are means, every map is applied unit by unit, and nothing
reads a unit's position, so permuting a model's units permutes the scores (equivariance) and
the same weights serve groups of any width.
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import scatter

from cipm.meta.config import MetaConfig
from cipm.meta.inputs import FEATURES, MetaInput

__all__ = ["MetaNetwork"]


class _Relation(MessagePassing):
    """Mean over a unit's neighbours of relu(W h_j + U e_ij): the node map runs once per
    unit, so a message costs one addition per edge and channel."""

    def __init__(self, hidden: int, edge_dim: int) -> None:
        super().__init__(aggr="mean")
        self.node = nn.Linear(hidden, hidden)
        self.edge = nn.Linear(edge_dim, hidden, bias=False)

    def forward(
        self, h: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor
    ) -> torch.Tensor:
        return self.propagate(edge_index, x=self.node(h), e=self.edge(edge_attr))

    def message(self, x_j: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return torch.relu(x_j + e)


class _Round(nn.Module):
    """One round of message passing at the three scales, with a residual update."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.intra = _Relation(hidden, 2)
        self.feeds_me = _Relation(hidden, 1)
        self.i_feed = _Relation(hidden, 1)
        self.update = nn.Sequential(
            nn.Linear(6 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden)
        )
        self.norm = nn.LayerNorm(hidden)

    def forward(self, h: torch.Tensor, g: MetaInput, hierarchical: bool) -> torch.Tensor:
        groups = len(g.groups)
        group_mean = scatter(h, g.node_group, dim=0, dim_size=groups, reduce="mean")
        parts = [h, self.intra(h, g.intra_index, g.intra_attr), group_mean[g.node_group]]
        if hierarchical:
            backwards = g.weight_index.flip(0)
            every = group_mean.mean(0, keepdim=True).expand_as(h)
            parts += [
                self.feeds_me(h, g.weight_index, g.weight_attr),
                self.i_feed(h, backwards, g.weight_attr),
                every,
            ]
        else:
            parts += [torch.zeros_like(h)] * 3
        return self.norm(h + self.update(torch.cat(parts, 1)))


class MetaNetwork(nn.Module):
    """Scores (nodes,) for a `MetaInput`: encode features, `config.layers` rounds, read out."""

    def __init__(self, config: MetaConfig) -> None:
        super().__init__()
        self.config = config
        h = config.hidden
        self.encode = nn.Sequential(nn.Linear(len(FEATURES), h), nn.ReLU(), nn.Linear(h, h))
        self.rounds = nn.ModuleList(_Round(h) for _ in range(config.layers))
        self.read = nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 1))
        self.double()

    def forward(self, g: MetaInput) -> torch.Tensor:
        h = self.encode(g.x)
        for r in self.rounds:
            h = r(h, g, self.config.hierarchical)
        return self.read(h).squeeze(-1)

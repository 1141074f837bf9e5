"""Rules for ops met beyond classification (issue 30): interpolation, instance norm, prelu,
glu, pixel (un)shuffle, weight and spectral norm, unfold / fold, scatter_add and friends,
diagonals. Each op sits between layers with weights in a small model traced with no
``unknown="freeze"``: the groups its config implies are found, permuting them keeps the output
exactly (float64), a wrong permutation does not, and pruning at half gives a smaller model
that runs. A tiny UNet finds its decoder groups; a GCN-like layer aggregates with scatter_add.
"""

from __future__ import annotations

import copy
import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations

import cipm
from cipm.graph.layout import Leaf, Product
from cipm.plugin import freeze

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def spatial_mean(y: torch.Tensor) -> torch.Tensor:
    return y.flatten(2).mean(-1)


class Sandwich(nn.Module):
    """a: ConvNd(2 -> width) -> op -> b: ConvNd(b_in -> 4) -> mean over positions."""

    def __init__(
        self, op: Callable[[nn.Module, torch.Tensor], torch.Tensor], width: int = 6, **kw: Any
    ) -> None:
        super().__init__()
        dims, b_in = kw.pop("dims", 2), kw.pop("b_in", width)
        self.a = CONV[dims](2, width, 3, padding=1)
        self.mid = kw.pop("mid", nn.Identity())
        self.b = CONV[dims](b_in, 4, 3, padding=1)
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return spatial_mean(self.b(F.relu(self.op(self.mid, self.a(x)))))


def interpolating(dims: int, **kw: Any) -> Callable[[], nn.Module]:
    return lambda: Sandwich(lambda m, h: F.interpolate(h, **kw), dims=dims)


def image(*shape: int) -> Callable[[], tuple[torch.Tensor, ...]]:
    return lambda: (torch.randn(*shape, dtype=torch.float64),)


class Weighted(nn.Module):
    """Two convs and a linear head, each wrapped (weight norm, spectral norm)."""

    def __init__(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        super().__init__()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch's old weight_norm
            self.a = wrap(nn.Conv2d(2, 6, 3, padding=1))
            self.b = wrap(nn.Conv2d(6, 5, 3, padding=1))
            self.c = wrap(nn.Linear(5, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(spatial_mean(F.relu(self.b(F.relu(self.a(x))))))


class Patches(nn.Module):
    """a: Conv2d(2 -> 4) -> unfold 2x2 patches (4 channels x 4 offsets) -> Linear -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(2, 4, 3, padding=1)
        self.lin = nn.Linear(16, 6)
        self.out = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = F.unfold(self.a(x), 2, stride=2).transpose(1, 2)  # (N, L, 16)
        return self.out(F.relu(self.lin(patches))).mean(1)


class Folded(nn.Module):
    """lin: Linear(3 -> 4 channels x 4 offsets) per patch -> fold to an image -> Conv2d."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 16)
        self.b = nn.Conv2d(4, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, L=16, 3)
        image = F.fold(self.lin(x).transpose(1, 2), (8, 8), 2, stride=2)
        return spatial_mean(self.b(F.relu(image)))


def aggregate(how: str, h: torch.Tensor, m: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Messages m (E, F) summed (or reduced) into their destination nodes of h (N, F)."""
    where = dst[:, None].expand(-1, m.shape[1])
    if how == "scatter_add":
        return torch.zeros_like(h).scatter_add(0, where, m)
    if how == "index_add":
        return torch.zeros_like(h).index_add(0, dst, m)
    return torch.zeros_like(h).scatter_reduce(0, where, m, how, include_self=False)


class GraphConv(nn.Module):
    """A GCN-like layer: node features -> messages along edges -> aggregated per node."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.inp = nn.Linear(5, 8)
        self.msg = nn.Linear(8, 7)
        self.out = nn.Linear(7, 3)
        self.how = how

    def forward(self, x: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.inp(x))
        return self.out(F.relu(aggregate(self.how, self.msg(h), self.msg(h)[src], dst)))


def edges() -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    src, dst = torch.randint(0, 6, (2, 15), generator=gen)
    return torch.randn(6, 5, dtype=torch.float64, generator=gen), src, dst


class Diagonal(nn.Module):
    """The diagonal of a (B, 6, 6) similarity of two projections, then a linear head."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.p = nn.Linear(5, 6)
        self.q = nn.Linear(5, 6)
        self.out = nn.Linear(6 if kind != "offset" else 5, 2)
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, 5)
        p, q = self.p(x), self.q(x)
        if self.kind == "diag_embed":  # diag(p) @ q: p * q, through a (B, T, 6, 6) matrix
            return self.out((torch.diag_embed(p) @ q[..., None]).squeeze(-1).mean(1))
        if self.kind == "diag":  # unbatched: diag(p^T q) of the first sample
            return self.out(torch.diag(p[0].T @ q[0]))
        sim = torch.einsum("bti,btj->bij", p, q)
        return self.out(torch.diagonal(sim, 1 if self.kind == "offset" else 0, -2, -1))


class TinyUNet(nn.Module):
    """Encoder convs, max pools, nearest and bilinear upsampling, skip concatenations."""

    def __init__(self) -> None:
        super().__init__()
        self.enc1 = nn.Conv2d(3, 8, 3, padding=1)
        self.enc2 = nn.Conv2d(8, 12, 3, padding=1)
        self.bottom = nn.Conv2d(12, 16, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.dec2 = nn.Conv2d(16 + 12, 12, 3, padding=1)
        self.dec1 = nn.Conv2d(12 + 8, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = F.relu(self.enc1(x))
        e2 = F.relu(self.enc2(F.max_pool2d(e1, 2)))
        b = F.relu(self.bottom(F.max_pool2d(e2, 2)))
        d2 = F.relu(self.dec2(torch.cat([self.up(b), e2], 1)))
        up = F.interpolate(d2, size=e1.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(F.relu(self.dec1(torch.cat([up, e1], 1))))


# -- wrong permutations: the controls ----------------------------------------------------------

Control = Callable[[nn.Module, cipm.SymmetryGraph], nn.Module]


def left_out(key: str) -> Control:
    """Every group permuted, but tensor `key` left as it was."""

    def wrong(model: nn.Module, graph: cipm.SymmetryGraph) -> nn.Module:
        permuted = cipm.permute(model, graph.random_permutation(seed=0))
        with torch.no_grad():
            permuted.state_dict()[key].copy_(model.state_dict()[key])
        return permuted

    return wrong


def reindexed(changes: dict[str, tuple[int, list[int]]]) -> Control:
    """Tensors indexed along a dim as given: a permutation the rules say is not a symmetry."""

    def wrong(model: nn.Module, graph: cipm.SymmetryGraph) -> nn.Module:
        new = copy.deepcopy(model)
        state = new.state_dict()
        with torch.no_grad():
            for key, (dim, index) in changes.items():
                state[key].copy_(state[key].index_select(dim, torch.tensor(index)))
        return new

    return wrong


def within_blocks(blocks: int, order: list[int]) -> list[int]:
    """Positions reordered by `order` inside each of `blocks` consecutive blocks."""
    return [b * len(order) + k for b in range(blocks) for k in order]


# -- the cases ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    build: Callable[[], nn.Module]
    inputs: Callable[[], tuple[torch.Tensor, ...]]
    groups: dict[str, int]  # name -> units, from the module config
    control: Control
    op: str  # the overload the trace must have seen (at a group's site)
    pruned: Callable[[nn.Module], bool] = field(default=lambda small: True)  # sizes agree


def norm_control(affine: bool, stats: bool) -> Control:
    # without affine or running statistics instance norm removes a's bias: a's weight matters
    return left_out("mid.weight" if affine else "mid.running_mean" if stats else "a.weight")


def instance_norm(affine: bool, stats: bool) -> Case:
    def pruned(small: nn.Module) -> bool:  # without tensors it is no module cipm resizes
        return not (affine or stats) or small.mid.num_features == small.a.out_channels < 6

    return Case(
        lambda: Sandwich(
            lambda m, h: m(h), mid=nn.InstanceNorm2d(6, affine=affine, track_running_stats=stats)
        ),
        image(2, 2, 5, 5),
        {"a:channels": 6},
        norm_control(affine, stats),
        "aten.instance_norm.default",
        pruned,
    )


def weight_norm_pruned(g: str, v: str) -> Callable[[nn.Module], bool]:
    def check(small: nn.Module) -> bool:  # g and v pruned together (a scalar g is kept)
        for layer, n in ((small.a, 6), (small.b, 5)):
            state = layer.state_dict()
            if not state[v].shape[0] == layer.out_channels < n:
                return False
            if state[g].numel() not in (1, layer.out_channels):
                return False
        return small.b.in_channels == small.a.out_channels == small.b.weight.shape[1]

    return check


def spectral_pruned(u: str, v: str) -> Callable[[nn.Module], bool]:
    def check(small: nn.Module) -> bool:  # u along a's rows, v along b's (in x 3 x 3) columns
        rows, columns = small.a.state_dict()[u].shape, small.b.state_dict()[v].shape
        return rows == (small.a.out_channels,) and columns == (small.b.in_channels * 9,)

    return check


PARAM_G, PARAM_V = "parametrizations.weight.original0", "parametrizations.weight.original1"
SPECTRAL_U, SPECTRAL_V = "parametrizations.weight.0._u", "parametrizations.weight.0._v"


def old_weight_norm(dim: int | None) -> Callable[[nn.Module], nn.Module]:
    return lambda m: nn.utils.weight_norm(m, dim=dim)  # type: ignore[arg-type]


def prelu_pruned(small: nn.Module) -> bool:
    return bool(small.mid.num_parameters == small.mid.weight.shape[0] == small.a.out_channels < 6)


def scaled(mode: str, factor: float = 2, **kw: Any) -> dict[str, Any]:
    return {"scale_factor": factor, "mode": mode, **kw}


# name: convolution dims, input positions, the op torch.export emits, F.interpolate's arguments
INTERPOLATIONS: dict[str, tuple[int, tuple[int, ...], str, dict[str, Any]]] = {
    "nearest1d": (1, (7,), "upsample_nearest1d", scaled("nearest")),
    "linear1d": (1, (7,), "upsample_linear1d", scaled("linear")),
    "nearest2d": (2, (5, 5), "upsample_nearest2d", scaled("nearest")),
    "nearest_exact2d": (2, (5, 5), "_upsample_nearest_exact2d", scaled("nearest-exact")),
    "bilinear2d": (2, (5, 5), "upsample_bilinear2d", {"size": (9, 7), "mode": "bilinear"}),
    "bicubic2d": (2, (5, 5), "upsample_bicubic2d", scaled("bicubic", 1.5, align_corners=True)),
    "bilinear2d_aa": (
        2,
        (8, 8),
        "_upsample_bilinear2d_aa",
        scaled("bilinear", 0.5, antialias=True),
    ),
    "bicubic2d_aa": (2, (8, 8), "_upsample_bicubic2d_aa", scaled("bicubic", 0.5, antialias=True)),
    "nearest3d": (3, (3, 4, 3), "upsample_nearest3d", scaled("nearest")),
    "trilinear3d": (3, (3, 4, 3), "upsample_trilinear3d", scaled("trilinear")),
}

CASES: dict[str, Case] = {
    # interpolation: every overload torch.export emits for F.interpolate / nn.Upsample
    **{
        name: Case(
            interpolating(dims, **kw),
            image(2, 2, *shape),
            {"a:channels": 6},
            left_out("a.bias"),
            f"aten.{op}.vec",
        )
        for name, (dims, shape, op, kw) in INTERPOLATIONS.items()
    },
    "nearest2d_default": Case(
        lambda: Sandwich(lambda m, h: torch.ops.aten.upsample_nearest2d(h, [7, 9])),
        image(2, 2, 5, 5),
        {"a:channels": 6},
        left_out("a.bias"),
        "aten.upsample_nearest2d.default",
    ),
    **{
        f"instance_norm_affine{int(affine)}_stats{int(stats)}": instance_norm(affine, stats)
        for affine in (False, True)
        for stats in (False, True)
    },
    "prelu_per_channel": Case(
        lambda: Sandwich(lambda m, h: m(h), mid=nn.PReLU(6)),
        image(2, 2, 5, 5),
        {"a:channels": 6},
        left_out("mid.weight"),
        "aten.prelu.default",
        prelu_pruned,
    ),
    "prelu_shared": Case(
        lambda: Sandwich(lambda m, h: m(h), mid=nn.PReLU()),
        image(2, 2, 5, 5),
        {"a:channels": 6},
        left_out("a.bias"),
        "aten.prelu.default",
    ),
    # glu: a's 8 channels are a | b halves; unit c gates with c + 4. Moving only the gate
    # half (value half and b's inputs as they were) is no symmetry
    "glu_conv": Case(
        lambda: Sandwich(lambda m, h: F.glu(h, 1), width=8, b_in=4),
        image(2, 2, 5, 5),
        {"a:channels": 4},
        reindexed(
            {"a.weight": (0, [0, 1, 2, 3, 5, 6, 7, 4]), "a.bias": (0, [0, 1, 2, 3, 5, 6, 7, 4])}
        ),
        "aten.glu.default",
        lambda small: small.a.out_channels == 2 * small.b.in_channels,
    ),
    "glu_linear": Case(
        lambda: nn.Sequential(nn.Linear(5, 12), nn.GLU(), nn.Linear(6, 3)),
        image(4, 5),
        {"0:hidden": 6},
        reindexed({"0.weight": (0, [*range(6), 7, 6, *range(8, 12)])}),
        "aten.glu.default",
    ),
    # pixel_shuffle: a's 12 channels are 3 channels x 4 sub-pixel offsets, which are positions
    "pixel_shuffle": Case(
        lambda: Sandwich(lambda m, h: F.pixel_shuffle(h, 2), width=12, b_in=3),
        image(2, 2, 4, 4),
        {"a:channels": 3},
        reindexed({"a.weight": (0, within_blocks(3, [1, 0, 2, 3]))}),
        "aten.pixel_shuffle.default",
        lambda small: small.a.out_channels == 4 * small.b.in_channels,
    ),
    "pixel_unshuffle": Case(
        lambda: Sandwich(lambda m, h: F.pixel_unshuffle(h, 2), width=3, b_in=12),
        image(2, 2, 4, 4),
        {"a:channels": 3},
        reindexed({"b.weight": (1, within_blocks(3, [0, 2, 1, 3]))}),
        "aten.pixel_unshuffle.default",
        lambda small: 4 * small.a.out_channels == small.b.in_channels,
    ),
    # weight norm (w = g v / |v|) and spectral norm (w / u.(W v), u and v power-iteration
    # vectors along W's rows and columns): g, v, u, v move with the layer's units
    "weight_norm": Case(
        lambda: Weighted(parametrizations.weight_norm),
        image(2, 2, 5, 5),
        {"a:channels": 6, "b:channels": 5},
        left_out(f"a.{PARAM_G}"),
        "aten._weight_norm.default",
        weight_norm_pruned(PARAM_G, PARAM_V),
    ),
    "weight_norm_old": Case(
        lambda: Weighted(old_weight_norm(0)),
        image(2, 2, 5, 5),
        {"a:channels": 6, "b:channels": 5},
        left_out("a.weight_g"),
        "aten._weight_norm.default",
        weight_norm_pruned("weight_g", "weight_v"),
    ),
    "weight_norm_old_whole": Case(
        lambda: Weighted(old_weight_norm(None)),
        image(2, 2, 5, 5),
        {"a:channels": 6, "b:channels": 5},
        left_out("b.weight_v"),
        "aten._weight_norm.default",
        weight_norm_pruned("weight_g", "weight_v"),
    ),
    "spectral_norm": Case(
        lambda: Weighted(parametrizations.spectral_norm),
        image(2, 2, 5, 5),
        {"a:channels": 6, "b:channels": 5},
        left_out(f"a.{SPECTRAL_U}"),
        "aten.mv.default",
        spectral_pruned(SPECTRAL_U, SPECTRAL_V),
    ),
    "spectral_norm_old": Case(
        lambda: Weighted(nn.utils.spectral_norm),
        image(2, 2, 5, 5),
        {"a:channels": 6, "b:channels": 5},
        left_out("b.weight_v"),
        "aten.mv.default",
        spectral_pruned("weight_u", "weight_v"),
    ),
    # unfold / fold: 4 channels x 4 kernel offsets
    "unfold": Case(
        Patches,
        image(2, 2, 8, 8),
        {"a:channels": 4, "lin:hidden": 6},
        reindexed({"lin.weight": (1, within_blocks(4, [3, 1, 2, 0]))}),
        "aten.im2col.default",
        lambda small: small.lin.in_features == 4 * small.a.out_channels,
    ),
    "fold": Case(
        Folded,
        lambda: (torch.randn(2, 16, 3, dtype=torch.float64),),
        {"lin:hidden": 4},
        reindexed({"lin.weight": (0, within_blocks(4, [0, 1, 3, 2]))}),
        "aten.col2im.default",
        lambda small: small.lin.out_features == 4 * small.b.in_channels,
    ),
    # message passing: node features scattered along edges, summed (or reduced) per node
    **{
        f"gcn_{how}": Case(
            functools.partial(GraphConv, how),
            edges,
            {"inp:hidden": 8, "msg:hidden": 7},
            left_out("msg.bias"),
            op,
        )
        for how, op in [
            ("scatter_add", "aten.scatter_add.default"),
            ("index_add", "aten.index_add.default"),
            ("amax", "aten.scatter_reduce.two"),
            ("mean", "aten.scatter_reduce.two"),
        ]
    },
    # the main diagonal: diag(P S P^T) = P diag(S), so p's and q's units are one group
    **{
        kind: Case(
            functools.partial(Diagonal, kind),
            image(3, 4, 5),
            {"p:hidden": 6},
            left_out("q.weight"),
            f"aten.{kind}.default",
        )
        for kind in ("diagonal", "diag_embed", "diag")
    },
}


@functools.cache
def traced(name: str) -> tuple[nn.Module, tuple[torch.Tensor, ...], cipm.SymmetryGraph]:
    torch.manual_seed(0)
    model = CASES[name].build().double().eval()
    with torch.no_grad():  # torch's initial values that hide a wrong permutation: varied
        for key, t in model.state_dict().items():
            if key.endswith("mid.weight"):  # negative prelu slopes: the ReLU after keeps them
                t.uniform_(-1.5, -0.2)
            elif key.endswith(("mid.bias", "running_mean")):
                t.uniform_(0.2, 1.5)
            elif key.endswith("running_var"):
                t.uniform_(0.5, 1.5)
    x = CASES[name].inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("error", cipm.CipmWarning)
        # torch on the old weight_norm's forward pre-hook, which sets `weight` each call
        warnings.filterwarnings("ignore", "The tensor attributes", UserWarning)
        return model, x, cipm.trace(model, x)  # unknown="error": every op has a rule


def run(model: nn.Module, x: tuple[torch.Tensor, ...]) -> torch.Tensor:
    with torch.no_grad():
        return model(*x)


@pytest.mark.parametrize("name", sorted(CASES))
def test_op_has_a_rule_that_finds_its_groups_exactly(name: str) -> None:
    model, x, graph = traced(name)
    case = CASES[name]
    assert {g.name: g.size for g in graph} == case.groups
    assert case.op in {site.op for g in graph for site in g.sites}
    ref = run(model, x)
    for seed in range(3):
        out = run(cipm.permute(model, graph.random_permutation(seed=seed)), x)
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    wrong = run(case.control(model, graph), x)
    assert (wrong - ref).abs().max() > 1e-6, "the control permutation changed nothing"


@pytest.mark.parametrize("name", sorted(CASES))
def test_op_pruned_at_half_runs_smaller(name: str) -> None:
    model, x, graph = traced(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error", cipm.CipmWarning)  # nothing kept whole
        # InstanceNorm without affine or statistics holds no tensor: its num_features is
        # stale, which torch only warns about (it reads nothing from it)
        warnings.filterwarnings("ignore", "input's size at dim", UserWarning)
        result = cipm.prune(model, graph, ratio=0.5, method="magnitude")
        out = run(result.model, x)
    small = result.model
    assert result.report.verified and not result.report.kept_whole
    assert set(result.report.sizes) == set(CASES[name].groups)
    assert all(k < n for n, k in result.report.sizes.values())
    count = [sum(t.numel() for t in m.state_dict().values()) for m in (model, small)]
    assert count[1] < count[0]
    assert out.shape == run(model, x).shape and out.isfinite().all()
    assert CASES[name].pruned(small), "sizes of the pruned modules disagree"


def test_pixel_shuffle_channels_are_a_product_with_fixed_offsets() -> None:
    _, _, graph = traced("pixel_shuffle")
    assert graph.layout("a.weight", 0) == Product((Leaf(3, "a:channels"), Leaf(4, None)))
    _, _, graph = traced("unfold")
    assert graph.layout("lin.weight", 1) == Product((Leaf(4, "a:channels"), Leaf(4, None)))


def test_an_off_diagonal_fixes_both_dims() -> None:
    """diagonal(offset=1) pairs i with i + 1: the same permutation of both dims (what the
    main diagonal allows) changes it, so no group is claimed."""
    torch.manual_seed(0)
    model = Diagonal("offset").double().eval()
    x = (torch.randn(3, 4, 5, dtype=torch.float64),)
    assert len(cipm.trace(model, x)) == 0
    p = [3, 0, 5, 1, 4, 2]
    moved = reindexed({"p.weight": (0, p), "p.bias": (0, p), "q.weight": (0, p), "q.bias": (0, p)})
    assert (run(moved(model, cipm.trace(model, x)), x) - run(model, x)).abs().max() > 1e-6


def test_tiny_unet_traces_without_freeze_and_finds_its_decoder() -> None:
    torch.manual_seed(0)
    model = TinyUNet().double().eval()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    graph = cipm.trace(model, x)
    sizes = {g.name: g.size for g in graph}
    assert sizes == {
        "enc1:channels": 8,
        "enc2:channels": 12,
        "bottom:channels": 16,
        "dec2:channels": 12,
        "dec1:channels": 8,
    }
    # bottom's channels pass the nearest upsampling, dec2's the bilinear one
    ops = {s.op for g in graph for s in g.sites}
    assert {"aten.upsample_nearest2d.vec", "aten.upsample_bilinear2d.vec"} <= ops
    ref = run(model, (x,))
    for seed in range(3):
        out = run(cipm.permute(model, graph.random_permutation(seed=seed)), (x,))
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    wrong = left_out("dec2.bias")(model, graph)
    assert (run(wrong, (x,)) - ref).abs().max() > 1e-6
    result = cipm.prune(model, graph, ratio=0.5, method="magnitude")
    assert set(result.report.sizes) == set(sizes) and not result.report.kept_whole
    assert run(result.model, (x,)).shape == ref.shape
    assert (
        result.model.dec1.in_channels
        == result.model.dec2.out_channels + result.model.enc1.out_channels
    )
    # with upsampling frozen (as unknown="freeze" did before it had rules), both are lost
    manager = cipm.get_plugin_manager()
    manager.register(FrozenUpsampling(), name="frozen_upsampling")
    try:
        frozen = cipm.trace(model, x)
    finally:
        manager.unregister(name="frozen_upsampling")
    assert {g.name for g in frozen} == set(sizes) - {"bottom:channels", "dec2:channels"}


class FrozenUpsampling:
    """The two upsamplings with every axis fixed: what tracing them with no rule did."""

    @cipm.hookimpl(tryfirst=True)
    def cipm_rules(self) -> dict[str, Callable[..., None]]:
        return {"aten.upsample_nearest2d": freeze, "aten.upsample_bilinear2d": freeze}


def test_weight_norm_direction_consumes_the_units_its_layer_reads() -> None:
    """_weight_norm is a view of v: a layer reading the normalized weight consumes v's input
    axis, as it would its own weight's (what pruning's fold corrects)."""
    _, _, graph = traced("weight_norm")
    consumed = {(m.key, m.dim) for m in graph["a:channels"].members if m.consumes}
    assert consumed == {(f"b.{PARAM_V}", 1)}


def test_attention_that_lost_units_within_its_heads_is_refused_by_its_resizer() -> None:
    """MViT's first block has one head of 96 channels; halving them used to divide by zero
    (48 // 96 heads) in the attention resizer, a raw error that stopped `prune` instead of
    keeping that group whole. A width that is no whole number of heads is a CipmError."""
    from cipm.plugins.attention import cipm_resized

    class FusedOneHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.Linear(8, 12)  # q | k | v of 4 units each: half of one 8-unit head
            self.head_dim, self.num_heads = 8, 1

    with pytest.raises(cipm.CipmError, match="not a whole number of heads of 8"):
        cipm_resized(FusedOneHead())

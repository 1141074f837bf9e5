"""Reorganization and partitioning: correlated units made contiguous, then cut into blocks."""

from __future__ import annotations

import functools
from itertools import pairwise
from pathlib import Path

import pytest
import torch
from conftest import assert_same_function, zoo_stats
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import cipm
from cipm.examples import catalog

METHODS = ["spectral", "olo"]
PNG = b"\x89PNG\r\n\x1a\n"


def setup(name: str) -> tuple[nn.Module, torch.Tensor, cipm.Statistics]:
    """(float64 zoo model, example input, statistics on a few batches), built once."""
    return zoo_stats(name)


# -- planted block structure ------------------------------------------------------------------

N_IN, BLOCKS, PER = 8, 4, 8


def planted(
    seed: int, noise: float = 0.02
) -> tuple[nn.Sequential, list[torch.Tensor], torch.Tensor]:
    """Linear(8, 32) -> ReLU -> Linear(32, 2) whose 32 hidden units come in 4 blocks of 8 noisy
    positive copies of 4 different input features, shuffled; with data and, per hidden unit
    of the model, the block it was planted in."""
    gen = torch.Generator().manual_seed(seed)
    n = BLOCKS * PER
    block = torch.arange(n) // PER
    feature = torch.randperm(N_IN, generator=gen)[:BLOCKS]
    w = noise * torch.randn(n, N_IN, generator=gen, dtype=torch.float64)
    w[torch.arange(n), feature[block]] += 0.5 + torch.rand(n, generator=gen, dtype=torch.float64)
    shuffle = torch.randperm(n, generator=gen)
    model = nn.Sequential(nn.Linear(N_IN, n), nn.ReLU(), nn.Linear(n, 2)).double().eval()
    with torch.no_grad():
        model[0].weight.copy_(w[shuffle])
        model[0].bias.copy_(0.1 * torch.randn(n, generator=gen, dtype=torch.float64))
    data = [torch.randn(256, N_IN, generator=gen, dtype=torch.float64) for _ in range(2)]
    return model, data, block[shuffle]


@functools.cache
def planted_graph() -> cipm.SymmetryGraph:
    model, data, _ = planted(0)
    return cipm.trace(model, data[0])


def blocks_of(part: cipm.Partition, group: str, label: torch.Tensor) -> list[list[int]]:
    order = part.permutation[group]
    return [label[order[b.start : b.stop]].tolist() for b in part.blocks[group]]


@given(seed=st.integers(0, 2**31 - 1))
def test_reorganize_and_partition_recover_planted_blocks(seed: int) -> None:
    model, data, label = planted(seed)
    graph = planted_graph()
    stats = cipm.collect(model, graph, data, config=cipm.CollectConfig(progress=False))
    group = graph.groups[0].name
    corr = stats[group].corr
    shuffled = cipm.diagonality(corr)
    by_block = cipm.diagonality(corr, torch.sort(label, stable=True).indices)
    assert abs(shuffled) < 0.4 and by_block > 0.45
    # spectral seriation can interleave two of the four blocks (one Fiedler vector), which
    # costs it some diagonality; optimal leaf ordering is as good as the planted order
    spectral = cipm.reorganize(model, stats, method="spectral")[group]
    assert cipm.diagonality(corr, spectral) > max(0.25, shuffled + 0.2)
    olo = cipm.reorganize(model, stats, method="olo")[group]
    assert cipm.diagonality(corr, olo) > 0.5
    assert cipm.diagonality(corr, olo) >= by_block - 0.05
    # optimal leaf ordering puts each planted block in one place ...
    runs = [int(label[olo[i * PER]]) for i in range(BLOCKS)]
    assert sorted(runs) == list(range(BLOCKS))
    assert all(bool((label[olo[i * PER : (i + 1) * PER]] == runs[i]).all()) for i in range(4))
    # ... and the partition into 4 cuts exactly there
    found = blocks_of(cipm.partition(model, stats, k=BLOCKS, method="olo"), group, label)
    assert sorted(b[0] for b in found) == list(range(BLOCKS))
    assert all(len(set(b)) == 1 and len(b) == PER for b in found), found


def test_default_partition_recovers_planted_blocks() -> None:
    """The default seriation (optimal leaf ordering at this size) keeps four weakly coupled
    blocks apart; one Fiedler vector (method="spectral") mixes two of them on some seeds."""
    graph = planted_graph()
    group = graph.groups[0].name
    for seed in range(10):
        model, data, label = planted(seed)
        stats = cipm.collect(model, graph, data, config=cipm.CollectConfig(progress=False))
        found = blocks_of(cipm.partition(model, stats, k=BLOCKS), group, label)
        assert all(len(set(b)) == 1 for b in found), (seed, found)


# -- diagonality --------------------------------------------------------------------------------


def diagonality_by_hand(a: torch.Tensor) -> float:
    """1 - E|i - j| / ((n + 1) / 3) over pairs i != j weighted by |a_ij|, in plain Python."""
    n = a.shape[0]
    weight = spread = 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                weight += abs(float(a[i, j]))
                spread += abs(float(a[i, j])) * abs(i - j)
    return 1.0 - spread / weight / ((n + 1) / 3)


@pytest.mark.parametrize("n", [3, 5, 12])
def test_diagonality_of_hand_computable_matrices(n: int) -> None:
    tri = torch.eye(n, dtype=torch.float64) * 7.0  # the diagonal does not count
    idx = torch.arange(n - 1)
    tri[idx, idx + 1] = tri[idx + 1, idx] = -0.4
    # all |corr| mass one step from the diagonal: E|i - j| = 1
    assert cipm.diagonality(tri) == pytest.approx(1 - 3 / (n + 1), abs=1e-12)
    # uniform mass: E|i - j| over all pairs is (n + 1) / 3, the random-order value
    assert cipm.diagonality(torch.ones(n, n, dtype=torch.float64)) == pytest.approx(0.0, abs=1e-12)
    # reversing the order keeps every distance
    assert cipm.diagonality(tri, torch.arange(n).flip(0)) == pytest.approx(1 - 3 / (n + 1))
    assert cipm.diagonality(torch.zeros(n, n)) == 0.0


@given(seed=st.integers(0, 2**31 - 1), n=st.integers(3, 30))
def test_diagonality_matches_its_definition(seed: int, n: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(4 * n, n, generator=gen, dtype=torch.float64)
    corr = torch.corrcoef(x.T)
    before = corr.clone()
    order = torch.randperm(n, generator=gen)
    assert cipm.diagonality(corr) == pytest.approx(diagonality_by_hand(corr), abs=1e-12)
    expected = diagonality_by_hand(corr[order][:, order])
    assert cipm.diagonality(corr, order) == pytest.approx(expected, abs=1e-12)
    assert torch.equal(corr, before)  # not modified


def test_diagonality_of_random_orders_is_near_zero() -> None:
    gen = torch.Generator().manual_seed(0)
    n = 64
    corr = torch.corrcoef(torch.randn(32, n, generator=gen, dtype=torch.float64).T)
    values = [cipm.diagonality(corr, torch.randperm(n, generator=gen)) for _ in range(50)]
    assert abs(sum(values) / len(values)) < 0.03
    assert max(abs(v) for v in values) < 0.15
    # while seriating the same matrix does find structure in it
    block = torch.block_diag(*[torch.ones(8, 8, dtype=torch.float64)] * 8)
    shuffled = torch.randperm(n, generator=gen)
    assert abs(cipm.diagonality(block[shuffled][:, shuffled])) < 0.15
    assert cipm.diagonality(block) > 0.7


# -- reorganize on zoo models ---------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", ["mlp", "resnet20", "gpt"])
def test_reorganize_returns_a_valid_permutation(name: str, method: str) -> None:
    model, x, stats = setup(name)
    perm = cipm.reorganize(model, stats, method=method)
    assert isinstance(perm, cipm.Permutation) and perm.graph == stats.graph
    assert not perm.is_identity()
    assert_same_function(model, cipm.permute(model, perm), x)
    for group in stats.graph:  # seriation does not lose what is next to what
        if group.size >= 8:
            corr = stats[group.name].corr
            assert cipm.diagonality(corr, perm[group.name]) > cipm.diagonality(corr) - 0.05

    first, second = stats.graph.groups[0].name, stats.graph.groups[1].name
    only = cipm.reorganize(model, stats, method=method, groups=[first, second])
    assert torch.equal(only[first], perm[first]) and torch.equal(only[second], perm[second])
    assert all(
        torch.equal(v, torch.arange(len(v))) for g, v in only.items() if g not in {first, second}
    )
    assert not torch.equal(only[first], torch.arange(len(only[first])))


# -- partition and masks --------------------------------------------------------------------


@pytest.mark.parametrize(("name", "k"), [("mlp", 4), ("resnet20", 3), ("gpt", 2)])
def test_partition_gives_contiguous_blocks(name: str, k: int) -> None:
    model, _, stats = setup(name)
    part = cipm.partition(model, stats, k)
    seriated = cipm.reorganize(model, stats)
    assert set(part.blocks) == {g.name for g in stats.graph if g.size >= 2 * k}
    for group in stats.graph:
        if group.name not in part.blocks:
            assert torch.equal(part.permutation[group.name], torch.arange(group.size))
            continue
        blocks = part.blocks[group.name]
        assert len(blocks) == k
        assert blocks[0].start == 0 and blocks[-1].stop == group.size
        assert all(a.stop == b.start for a, b in pairwise(blocks))
        assert all(len(b) >= max(1, group.size // (2 * k)) for b in blocks)
        assert torch.equal(part.permutation[group.name], seriated[group.name])
        assert part.cut[group.name] >= 0.0


def test_masks_split_an_mlp_layer_into_blocks() -> None:
    """The middle hidden layer: its rows (weight, bias) and the next layer's columns."""
    model, _, stats = setup("mlp")
    k = 4
    part = cipm.partition(model, stats, k)
    group = "2:hidden"
    masks = part.masks(group)
    assert len(masks) == k
    permuted = cipm.permute(model, part.permutation)
    state = permuted.state_dict()
    for mask in masks:
        assert set(mask) == {"2.weight", "2.bias", "4.weight"}
        assert all(mask[key].shape == state[key].shape for key in mask)
    for key, dim in [("2.weight", 0), ("2.bias", 0), ("4.weight", 1)]:
        count = sum(m[key].long() for m in masks)
        assert bool((count == 1).all()), key  # disjoint, and together cover every entry
        for mask, block in zip(masks, part.blocks[group], strict=True):
            inside = torch.zeros(32, dtype=torch.bool)
            inside[block.start : block.stop] = True
            along = mask[key].movedim(dim, 0).reshape(32, -1)
            assert torch.equal(along, inside[:, None].expand_as(along)), key

    batch = torch.randn(256, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    for mask, block in zip(masks, part.blocks[group], strict=True):
        only = cipm.permute(model, part.permutation)
        with torch.no_grad():
            for key, m in mask.items():
                only.get_parameter(key)[~m] = 0.0
            hidden = only[:4](batch)  # after the second ReLU
        outside = torch.ones(32, dtype=torch.bool)
        outside[block.start : block.stop] = False
        assert bool((hidden[:, outside] == 0).all())
        assert bool((hidden[:, block.start : block.stop] != 0).any())  # the control
    with pytest.raises(cipm.CipmError, match="was not partitioned"):
        cipm.partition(model, stats, k, groups=[group]).masks("0:hidden")


@pytest.mark.parametrize(("name", "k"), [("mlp", 4), ("cnn_bn", 2)])
def test_masks_are_shaped_like_their_tensors(name: str, k: int) -> None:
    model, _, stats = setup(name)
    part = cipm.partition(model, stats, k)
    permuted = cipm.permute(model, part.permutation)
    tensors = dict(permuted.named_parameters())
    tensors.update(permuted.named_buffers())
    for group in part.blocks:
        masks = part.masks(group)
        for key in masks[0]:
            assert masks[0][key].shape == tensors[key].shape, (group, key)
            assert bool((sum(m[key].long() for m in masks) == 1).all()), (group, key)
            for m in masks:
                tensors[key].detach().clone()[~m[key]] = 0.0  # usable as an index


def test_masks_of_attention_heads_are_disjoint_and_cover() -> None:
    model, _, stats = setup("gpt")
    heads = stats.graph.by_kind("heads")[0]
    part = cipm.partition(model, stats, 2, groups=[heads.name])
    masks = part.masks(heads.name)
    state = dict(model.named_parameters())
    assert set(masks[0]) == {m.key for m in heads.members}
    for key in masks[0]:
        count = sum(m[key].long() for m in masks)
        assert count.shape == state[key].shape
        assert bool((count == 1).all()), key


# -- plots and bad input ---------------------------------------------------------------------


def test_plot_correlation_writes_pngs(tmp_path: Path) -> None:
    model, _, stats = setup("mlp")
    group = "0:hidden"
    orders = {
        "plain": None,
        "reorganized": cipm.reorganize(model, stats),
        "partitioned": cipm.partition(model, stats, 4),
    }
    for label, order in orders.items():
        path = cipm.plot_correlation(stats, group, tmp_path / f"{label}.png", order=order)
        assert Path(path).read_bytes()[:8] == PNG, label


def test_bad_input_raises_useful_errors() -> None:
    model, _, stats = setup("mlp")
    with pytest.raises(cipm.CipmError, match=r"k >= 2 blocks, got 1"):
        cipm.partition(model, stats, 1)
    other = catalog.build("mlp", seed=9)[0].double()
    with pytest.raises(cipm.CipmError, match="collected on another model"):
        cipm.reorganize(other, stats)
    with pytest.raises(cipm.CipmError, match="collected on another model"):
        cipm.partition(other, stats, 2)
    with pytest.raises(cipm.CipmError, match=r"unknown groups \['nope'\]"):
        cipm.reorganize(model, stats, groups=["nope"])
    with pytest.raises(cipm.CipmError, match=r"unknown groups \['nope'\]"):
        cipm.partition(model, stats, 2, groups=["0:hidden", "nope"])
    with pytest.raises(cipm.CipmError, match=r"unknown reorganize method 'random'.*'spectral'"):
        cipm.reorganize(model, stats, method="random")  # type: ignore[arg-type]
    with pytest.raises(cipm.CipmError, match=r"expected cipm\.collect statistics"):
        cipm.reorganize(model, stats.graph)  # type: ignore[arg-type]

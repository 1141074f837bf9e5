"""Statistics: equal to a direct float64 computation, exact merging, cross-covariances."""

from __future__ import annotations

import pytest
import torch
from conftest import snapshot, traced
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import cipm
from cipm.examples import catalog
from cipm.meta.edges import top_k_edges, weight_links
from cipm.statistics.capture import SiteRecorder, representative_site
from cipm.statistics.moments import CrossMoments, MomentAccumulator, Moments


def batches(name: str, n: int, seed: int = 0) -> list[torch.Tensor]:
    out = []
    for i in range(n):
        _, x = catalog.build(name, seed=seed * 1000 + i)
        out.append(x.double() if x.is_floating_point() else x)
    return out


def direct(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, covariance and correlation of stacked rows, straight from torch."""
    x = torch.cat(rows).double()
    cov = torch.cov(x.T)
    return x.mean(0), cov, torch.corrcoef(x.T).nan_to_num(0.0)  # dead units: 0, as documented


def hooked(model: nn.Module, module: nn.Module, loader: list[torch.Tensor]) -> list[torch.Tensor]:
    """Activations of `module`'s output, captured with a forward hook (independent of cipm)."""
    rows: list[torch.Tensor] = []

    def hook(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
        rows.append(
            out.movedim(1, -1).reshape(-1, out.shape[1])
            if out.dim() == 4
            else out.reshape(-1, out.shape[-1])
        )

    handle = module.register_forward_hook(hook)
    with torch.no_grad():
        for x in loader:
            model(x)
    handle.remove()
    return rows


@pytest.mark.parametrize(
    ("name", "group", "module"),
    [
        ("mlp", "2:hidden", lambda m: m[3]),  # after the second ReLU
        ("cnn_bn", "0.0:channels", lambda m: m[1]),  # conv -> BN -> ReLU, channels of a map
        ("gpt", "tok:residual", lambda m: m.ln_f),  # the stream where the head reads it
    ],
)
def test_statistics_equal_direct_float64(name: str, group: str, module) -> None:  # type: ignore[no-untyped-def]
    model = catalog.build(name)[0].double()
    loader = batches(name, 4)
    stats = cipm.collect(model, traced(name), loader, config=cipm.CollectConfig(progress=False))
    mean, cov, corr = direct(hooked(model, module(model), loader))
    s = stats[group]
    assert s.count == sum(r.shape[0] for r in hooked(model, module(model), loader))
    torch.testing.assert_close(s.mean, mean, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(s.cov, cov, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(s.corr, corr, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(s.std, cov.diagonal().sqrt(), rtol=1e-10, atol=1e-12)


def _samples_at_each_site(name: str, group: str) -> tuple[list[int], int]:
    """Samples per unit at each whole-dimension site of a group, measured by running the
    model with that site observed, and the index of the representative site."""
    model, x = catalog.build(name)
    graph = traced(name)
    whole = [s for s in graph[group].sites if s.layout is None]
    counts = []
    for site in whole:
        blocks = SiteRecorder(model, graph, {group: site}).run(x, 0)[group]
        counts.append(blocks.shape[0] * blocks.shape[2])
    return counts, whole.index(representative_site(graph[group]))


@pytest.mark.parametrize(
    ("name", "group"),
    [
        ("encoder", "tok:residual"),  # last read: the [CLS] vector (select)
        ("transformer_pre_norm", "embed:residual"),  # last read: the mean over tokens
        ("resnet20", "layer3.0.conv2.0:residual"),  # last read: the global average pool
    ],
)
def test_residual_stream_is_observed_at_every_position(name: str, group: str) -> None:
    """A residual stream is read by every layer at every position: its site is the last one
    with the most samples per unit, not the pooled or selected vector the classifier reads."""
    counts, chosen = _samples_at_each_site(name, group)
    assert counts[chosen] == max(counts) > min(counts), counts
    assert all(c < counts[chosen] for c in counts[chosen + 1 :]), counts


@pytest.mark.parametrize(
    ("name", "group"),
    [("cnn_bn", "2.0:channels"), ("vgg", "0:channels"), ("mobilenet", "8.0:channels")],
)
def test_chain_groups_are_observed_where_their_consumer_reads_them(name: str, group: str) -> None:
    """Channels that feed a pool are observed after it (fewer samples, but what the next layer
    reads, which least-squares folds when pruning need): the last whole-dimension site."""
    counts, chosen = _samples_at_each_site(name, group)
    assert chosen == len(counts) - 1 and counts[chosen] < max(counts), counts


@given(
    sizes=st.lists(st.integers(1, 6), min_size=2, max_size=5),
    shift=st.floats(-1e3, 1e3),
    seed=st.integers(0, 1000),
)
def test_moments_merge_is_exact_and_associative(sizes: list[int], shift: float, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    parts = [torch.randn(n, 3, generator=gen, dtype=torch.float64) + shift for n in sizes]
    whole = Moments.of(torch.cat(parts))
    left = Moments.of(parts[0])
    for p in parts[1:]:
        left = left.merge(Moments.of(p))
    right = Moments.of(parts[-1])
    for p in reversed(parts[:-1]):
        right = Moments.of(p).merge(right)
    for m in (left, right):
        assert m.count == whole.count
        torch.testing.assert_close(m.mean, whole.mean, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(m.comoment, whole.comoment, rtol=1e-10, atol=1e-10)


@given(
    n=st.sampled_from([1, 7, 255, 257, 600]),  # one strip, and several (256 rows each)
    layout=st.sampled_from(["rows", "one block", "blocks"]),  # the three product paths
    batches=st.integers(1, 4),
    flush=st.sampled_from([1, 1 << 16]),  # fold into float64 after every batch, or at the end
    seed=st.integers(0, 1000),
)
def test_accumulator_equals_direct_covariance(
    n: int, layout: str, batches: int, flush: int, seed: int
) -> None:
    """The accumulator computes only the lower triangle of each batch's outer products (in
    strips); its co-moment must still equal torch.cov of the stacked samples."""
    gen = torch.Generator().manual_seed(seed)
    shape = {"rows": (9, n, 1), "one block": (1, n, 11), "blocks": (5, n, 3)}[layout]
    blocks = [torch.randn(shape, generator=gen, dtype=torch.float64) + 3.0 for _ in range(batches)]
    acc = MomentAccumulator()
    acc.FLUSH_SAMPLES = flush
    for b in blocks:
        acc.add(b)
    rows = torch.cat([b.movedim(1, -1).reshape(-1, n) for b in blocks])
    m = acc.moments()
    torch.testing.assert_close(m.mean, rows.mean(0), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(m.cov, torch.cov(rows.T).reshape(n, n), rtol=1e-10, atol=1e-12)


def test_half_precision_activations_accumulate_in_float32() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4096, 40, generator=gen) * 0.3 + 1.0
    m = Moments.of(x.bfloat16())
    ref = torch.cov(x.bfloat16().double().T)  # the same bf16 values, in float64
    torch.testing.assert_close(m.cov, ref, rtol=1e-4, atol=1e-5)


def test_mean_only_accumulator_reads_zero_comoment() -> None:
    acc = MomentAccumulator(gram=False)
    acc.add(torch.randn(10, 3, 1, dtype=torch.float64) + 5.0)
    acc.add(torch.randn(10, 3, 1, dtype=torch.float64) - 5.0)
    assert torch.equal(acc.moments().comoment, torch.zeros(3, 3, dtype=torch.float64))


def test_merged_shards_equal_the_whole() -> None:
    model = catalog.build("resnet20")[0].double()
    graph = traced("resnet20")
    loader = batches("resnet20", 6)
    whole = cipm.collect(model, graph, loader, config=cipm.CollectConfig(progress=False))
    merged = cipm.collect(
        model, graph, loader[:2], config=cipm.CollectConfig(progress=False)
    ).merge(cipm.collect(model, graph, loader[2:], config=cipm.CollectConfig(progress=False)))
    for name in whole:
        assert merged[name].count == whole[name].count
        torch.testing.assert_close(merged[name].cov, whole[name].cov, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(merged[name].mean, whole[name].mean, rtol=1e-10, atol=1e-10)


def test_cross_moments_match_direct() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(50, 4, generator=gen, dtype=torch.float64)
    b = torch.randn(50, 3, generator=gen, dtype=torch.float64)
    b[:, 0] += a[:, 1]
    m = CrossMoments.of(a[:20], b[:20]).merge(CrossMoments.of(a[20:], b[20:]))
    full = torch.corrcoef(torch.cat([a, b], 1).T)
    torch.testing.assert_close(m.corr, full[:4, 4:], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", ["resnet20", "gpt", "mlp"])
def test_cross_covariance_with_permuted_copy_is_permuted_covariance(name: str) -> None:
    model = catalog.build(name)[0].double()
    graph = traced(name)
    loader = batches(name, 3)
    plain = {"heads", "within_head"}
    perm = cipm.Permutation(  # heads' units fold within-head dims into samples: keep those fixed
        graph,
        {
            g.name: (
                torch.arange(g.size)
                if g.kind.value in plain
                else torch.randperm(g.size, generator=torch.Generator().manual_seed(7))
            )
            for g in graph
        },
    )
    other = cipm.permute(model, perm)
    cross = cipm.collect_cross(
        model, other, graph, loader, config=cipm.CollectConfig(progress=False)
    )
    stats = cipm.collect(model, graph, loader, config=cipm.CollectConfig(progress=False))
    for g in graph:
        expected = stats[g.name].cov[:, perm[g.name]]
        torch.testing.assert_close(cross.cov(g.name), expected, rtol=1e-9, atol=1e-11)


def _edge_set(index: torch.Tensor, relabel: torch.Tensor | None = None) -> set[tuple[int, int]]:
    if relabel is not None:
        index = relabel[index]
    return set(map(tuple, index.T.tolist()))


def test_meta_input_edges_are_permutation_equivariant_with_dead_units() -> None:
    """Dead ReLUs correlate 0 with everything, a tie that plain top-k breaks by position:
    the edges of a permuted model must still be the permuted edges."""
    model = catalog.build("mlp")[0].double()
    graph = traced("mlp")
    with torch.no_grad():  # units 3, 10, 11 of the first hidden layer never fire
        for unit in (3, 10, 11):
            model[0].weight[unit] = 0.0
            model[0].bias[unit] = -1.0
        model[2].weight[:, 5] = model[2].weight[:, 6]  # two equal columns: tied magnitudes
    data = batches("mlp", 5)
    perm = graph.random_permutation(seed=3)
    other = cipm.permute(model, perm)
    stats = cipm.collect(model, graph, data, config=cipm.CollectConfig(progress=False))
    stats_p = cipm.collect(other, graph, data, config=cipm.CollectConfig(progress=False))
    group = "0:hidden"
    plain, _ = top_k_edges(stats[group].corr, 4, exclude_self=True)
    permuted, _ = top_k_edges(stats_p[group].corr, 4, exclude_self=True)
    assert _edge_set(permuted, perm[group]) == _edge_set(plain)
    dead = {3, 10, 11}
    assert not dead & set(plain.flatten().tolist())  # no edges of zero correlation
    links = {
        (a, b): w for a, b, w in weight_links(graph, cipm.tensors.fitted_tensors(model, graph))
    }
    links_p = {
        (a, b): w for a, b, w in weight_links(graph, cipm.tensors.fitted_tensors(other, graph))
    }
    assert links.keys() == links_p.keys() and links
    for (out, inp), w in links.items():
        rows, cols = torch.argsort(perm[out]), torch.argsort(perm[inp])
        torch.testing.assert_close(links_p[(out, inp)][rows][:, cols], w, rtol=0, atol=0)


def test_top_k_edges_are_each_units_strongest_correlations() -> None:
    model = catalog.build("mlp")[0].double()
    stats = cipm.collect(
        model, traced("mlp"), batches("mlp", 5), config=cipm.CollectConfig(progress=False)
    )
    corr = stats["0:hidden"].corr
    index, attr = top_k_edges(corr, 5, exclude_self=True)
    n = 32
    live = (stats["0:hidden"].std > 0).nonzero().squeeze(1).tolist()
    assert 0 < len(live) < n  # this seed has dead units: they get no edges
    assert index.shape == (2, len(live) * 5) and attr.shape == (len(live) * 5,)
    for unit in range(n):
        row = corr[unit].abs().clone()
        row[unit] = -1
        expected = set(row.argsort(descending=True)[:5].tolist()) if unit in live else set()
        got = index[1, index[0] == unit].tolist()
        assert set(got) == expected
        torch.testing.assert_close(attr[index[0] == unit], corr[unit, got])


def test_constant_units_correlate_zero_not_nan() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double().eval()
    with torch.no_grad():
        model[0].weight[1] = 0.0
        model[0].bias[1] = 0.5  # unit 1 is constant 0.5
    graph = cipm.trace(model, torch.randn(2, 3, dtype=torch.float64))
    stats = cipm.collect(
        model,
        graph,
        [torch.randn(8, 3, dtype=torch.float64)],
        config=cipm.CollectConfig(progress=False),
    )
    corr = stats["0:hidden"].corr
    assert torch.isfinite(corr).all() and (corr[1] == 0).all() and (corr[:, 1] == 0).all()


def test_empty_loader() -> None:
    model, _ = catalog.build("mlp")
    with pytest.raises(cipm.CipmError, match="no batches"):
        cipm.collect(model, traced("mlp"), [], config=cipm.CollectConfig(progress=False))


def test_batch_that_does_not_fit_names_the_batch() -> None:
    model, x = catalog.build("mlp")
    with pytest.raises(cipm.CipmError, match=r"batch 1 does not fit"):
        cipm.collect(
            model, traced("mlp"), [x, torch.randn(4, 5)], config=cipm.CollectConfig(progress=False)
        )


def test_non_finite_activation_names_group_and_batch() -> None:
    model, x = catalog.build("mlp")
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(cipm.CipmError, match=r"group '0:hidden' on batch 2"):
        cipm.collect(model, traced("mlp"), [x, x, bad], config=cipm.CollectConfig(progress=False))


def test_collect_cross_rejects_a_model_of_another_graph() -> None:
    model, x = catalog.build("mlp")
    narrow, _ = catalog.mlp(width=16)
    with pytest.raises(cipm.CipmError, match=r"model_b.*0:hidden"):
        cipm.collect_cross(
            model, narrow, traced("mlp"), [x], config=cipm.CollectConfig(progress=False)
        )


def test_model_mode_and_weights_are_left_as_they_came() -> None:
    model, x = catalog.build("resnet20")
    model.train()
    before = snapshot(model)
    cipm.collect(model, traced("resnet20"), [x], config=cipm.CollectConfig(progress=False))
    assert all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_merge_rejects_other_graphs() -> None:
    a = cipm.collect(
        catalog.build("mlp")[0],
        traced("mlp"),
        [catalog.build("mlp")[1]],
        config=cipm.CollectConfig(progress=False),
    )
    b = cipm.collect(
        catalog.build("cnn_bn")[0],
        traced("cnn_bn"),
        [catalog.build("cnn_bn")[1]],
        config=cipm.CollectConfig(progress=False),
    )
    with pytest.raises(cipm.CipmError, match="different symmetry graphs"):
        a.merge(b)


def test_pairs_of_inputs_and_targets_and_sampling() -> None:
    model = catalog.build("mlp")[0].double()
    graph = traced("mlp")
    loader = batches("mlp", 4)
    pairs = [(x, torch.zeros(len(x))) for x in loader]
    plain = cipm.collect(model, graph, loader, config=cipm.CollectConfig(progress=False))
    paired = cipm.collect(model, graph, pairs, config=cipm.CollectConfig(progress=False))
    torch.testing.assert_close(plain["0:hidden"].cov, paired["0:hidden"].cov, rtol=0, atol=0)
    half = cipm.collect(model, graph, loader, config=cipm.CollectConfig(sample=0.5, progress=False))
    assert half["0:hidden"].count == plain["0:hidden"].count // 2
    again = cipm.collect(
        model, graph, loader, config=cipm.CollectConfig(sample=0.5, progress=False)
    )
    assert torch.equal(half["0:hidden"].cov, again["0:hidden"].cov)  # reproducible
    with pytest.raises(cipm.CipmError, match="sample must be"):
        cipm.collect(model, graph, loader, config=cipm.CollectConfig(sample=0.0, progress=False))


def test_sampled_cross_statistics_stay_aligned() -> None:
    model = catalog.build("resnet20")[0].double()
    graph = traced("resnet20")
    loader = batches("resnet20", 2)
    cross = cipm.collect_cross(
        model, model, graph, loader, config=cipm.CollectConfig(sample=0.3, progress=False)
    )
    for name in graph.by_kind("channels")[:3]:
        corr = cross.corr(name.name)  # a model against itself: the diagonal is 1 (live units)
        live = cross[name.name].a.std > 0
        torch.testing.assert_close(
            corr.diagonal()[live], torch.ones(int(live.sum()), dtype=torch.float64)
        )


def test_float32_model_statistics_are_float32_accurate() -> None:
    model, _ = catalog.build("cnn_bn")
    loader = [x.float() for x in batches("cnn_bn", 3)]
    stats = cipm.collect(model, traced("cnn_bn"), loader, config=cipm.CollectConfig(progress=False))
    model = model.double()
    _, cov, _ = direct(hooked(model, model[1], [x.double() for x in loader]))
    torch.testing.assert_close(stats["0.0:channels"].cov, cov, rtol=1e-5, atol=1e-6)


def test_progress_bar_is_quiet_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    model, x = catalog.build("mlp")
    cipm.collect(model, traced("mlp"), [x, x], config=cipm.CollectConfig(progress=False))
    assert capsys.readouterr().err == ""
    cipm.collect(model, traced("mlp"), [x, x], config=cipm.CollectConfig(progress=True))
    assert "collect" in capsys.readouterr().err

"""Pruning: physically smaller models of the same class, shaped as the symmetry graph says."""

from __future__ import annotations

import copy
import functools
import io
from itertools import pairwise

import pytest
import test_transformers as hf
import torch
import torch.nn.functional as F
from conftest import snapshot, zoo_stats
from torch import nn

import cipm
from cipm.examples import catalog
from cipm.examples.data import digits, train_classifier
from cipm.graph import Layout, Leaf, Product, SymmetryGraph
from cipm.plugins.multihead import HeadPrunedMultiheadAttention
from cipm.pruning import prune_plan

# the zoo's statistics come from three small batches: fewer samples than units (tested below)
pytestmark = pytest.mark.filterwarnings("ignore:.*least-squares fold is underdetermined")

PRUNED = [
    "mlp",
    "cnn_bn",
    "resnet20",
    "vgg",
    "densenet",
    "mobilenet",
    "cnn_groupnorm",
    "encoder",
    "gpt",
    "bert",
    "gpt2",
    "llama",
    "vit",
]
METHODS = ["fold", "magnitude", "activation"]
DEFAULT_KINDS = {"hidden", "channels", "heads"}


# -- helpers ---------------------------------------------------------------------------------


@functools.cache
def setup(name: str) -> tuple[nn.Module, object, SymmetryGraph, cipm.Statistics]:
    """(float64 model, example inputs, graph, statistics on a few batches), built once."""
    if name not in hf.MODELS:
        model, x, stats = zoo_stats(name)
        return model, x, stats.graph, stats
    model, x, graph = hf.traced(name)
    return (
        model,
        x,
        graph,
        cipm.collect(model, graph, [x], config=cipm.CollectConfig(progress=False)),
    )


def run(model: nn.Module, x: object) -> torch.Tensor:
    with torch.no_grad():
        out = model(**x) if isinstance(x, dict) else model(x)
    return hf.first_output(out) if not isinstance(out, torch.Tensor) else out


def resized(layout: Layout, keep: dict[str, int]) -> int:
    """Size of a dimension laid out as `layout` once each group g in `keep` has keep[g] units."""
    if isinstance(layout, Leaf):
        return keep.get(layout.group, layout.size) if layout.group else layout.size
    if isinstance(layout, Product):
        size = 1
        for f in layout.factors:
            size *= resized(f, keep)
        return size
    return sum(resized(p, keep) for p in layout.parts)


def leaves(layout: Layout, group: str) -> int:
    if isinstance(layout, Leaf):
        return int(layout.group == group)
    children = layout.factors if isinstance(layout, Product) else layout.parts
    return sum(leaves(c, group) for c in children)


def positions(layout: Layout, group: str) -> torch.Tensor:
    """The unit of `group` at every position of the dimension (-1 where none)."""
    if isinstance(layout, Leaf):
        if layout.group == group:
            return torch.arange(layout.size)
        return torch.full((layout.size,), -1)
    if isinstance(layout, Product):
        ids = torch.tensor([-1])
        for f in layout.factors:
            ids = torch.maximum(ids[:, None], positions(f, group)[None, :]).flatten()
        return ids
    return torch.cat([positions(p, group) for p in layout.parts])


def tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer by every name (tied and non-persistent ones too)."""
    named = dict(model.named_parameters(remove_duplicate=False))
    named.update(model.named_buffers(remove_duplicate=False))
    return named


def expected_shapes(
    model: nn.Module, graph: SymmetryGraph, keep: dict[str, int]
) -> dict[str, tuple[int, ...]]:
    """Every state tensor's shape after the groups in `keep` are cut to keep[g] units."""
    shapes = {k: list(v.shape) for k, v in tensors(model).items()}
    for axis in graph.axes:
        shapes[axis.key][axis.dim] = resized(axis.layout, keep)
    return {k: tuple(v) for k, v in shapes.items()}


def check_pruned_shapes(
    model: nn.Module, pruned: nn.Module, graph: SymmetryGraph, keep: dict[str, int]
) -> None:
    got = {k: tuple(v.shape) for k, v in tensors(pruned).items()}
    assert got == expected_shapes(model, graph, keep)
    before = tensors(model)
    for name, k in keep.items():
        group = graph[name]
        assert 1 <= k < group.size
        for m in group.members:
            layout = graph.layout(m.key, m.dim)
            if any(leaves(layout, other) for other in keep if other != name):
                continue  # two cut groups in one dim: covered by the layout check above
            # each unit spans m.unit contiguous entries, and as many of those as the dim
            # holds copies of the group (q|k|v) or outer factors (GroupNorm groups x channels)
            per_unit = int((positions(layout, name) == 0).sum())
            assert per_unit % m.unit == 0 and per_unit >= m.unit * leaves(layout, name), m
            shrink = before[m.key].shape[m.dim] - got[m.key][m.dim]
            assert shrink == (group.size - k) * per_unit, m


def ratio_targets(graph: SymmetryGraph, ratio: float, kinds: set[str]) -> dict[str, int]:
    """Groups a ratio prunes: those of `kinds`, except blocks that other groups are nested in
    (GroupNorm groups; attention heads are the exception: their count follows the weights).
    Query heads within key/value heads keep what brings all query heads nearest the ratio,
    given the key/value heads kept."""
    outer = {g.within for g in graph if g.within}
    kept = {
        g.name: max(1, round(g.size * (1 - ratio)))
        for g in graph
        if g.kind.value in kinds and (g.name not in outer or g.kind.value == "heads")
    }
    for g in graph.by_kind("heads"):
        if g.within is not None and graph[g.within].kind.value == "heads":
            total = g.size * graph[g.within].size * (1 - ratio)
            kept[g.name] = min(g.size, max(1, round(total / kept[g.within])))
    return {name: k for name, k in kept.items() if k < graph[name].size}


def zero_removed(
    model: nn.Module, graph: SymmetryGraph, keep: dict[str, torch.Tensor]
) -> nn.Module:
    """A copy of `model` whose consumers ignore every unit not in keep[g] (its input columns
    zeroed): what removing those units must compute, for units that nothing normalizes over."""
    out = copy.deepcopy(model)
    state = out.state_dict()
    with torch.no_grad():
        for name, kept in keep.items():
            for m in graph[name].members:
                if not m.consumes:
                    continue
                ids = positions(graph.layout(m.key, m.dim), name)
                drop = (ids >= 0) & ~torch.isin(ids, kept)
                state[m.key].index_fill_(m.dim, drop.nonzero().flatten(), 0.0)
    return out


# -- every architecture, every method ---------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", PRUNED)
def test_prune_by_ratio_shrinks_every_group_as_planned(name: str, method: str) -> None:
    model, x, graph, stats = setup(name)
    before = snapshot(model)
    ratio = 0.3  # no n * 0.7 of these sizes is a rounding tie
    pruned_result = cipm.prune(
        model, stats, ratio=ratio, method=method, config=cipm.PruneConfig(example_inputs=x)
    )
    pruned = pruned_result.model
    assert type(pruned) is type(model) and pruned is not model
    keep = ratio_targets(graph, ratio, DEFAULT_KINDS)
    assert keep  # something was pruned
    check_pruned_shapes(model, pruned, graph, keep)
    out, ref = run(pruned, x), run(model, x)
    assert out.shape == ref.shape and bool(torch.isfinite(out).all())
    # the caller's model is untouched
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())

    plans = prune_plan(model, stats, ratio=ratio, method=method)
    assert {g: len(p.keep) for g, p in plans.items()} == keep
    if method != "fold" and name != "cnn_groupnorm":
        # selecting units computes what the original computes with the others switched off
        # (except where a norm reads them: GroupNorm normalizes over fewer channels)
        kept = {g: p.keep for g, p in plans.items()}
        tol = hf.MODELS[name][3] if name in hf.MODELS else 1e-10
        torch.testing.assert_close(
            out, run(zero_removed(model, graph, kept), x), rtol=tol, atol=tol
        )


def test_magnitude_keeps_the_largest_weight_paths() -> None:
    model, _, graph, _ = setup("mlp")
    linears = [m for m in model if isinstance(m, nn.Linear)]
    plans = prune_plan(model, graph, ratio=0.5, method="magnitude")
    for group, (a, b) in zip(graph, pairwise(linears), strict=True):
        score = ((a.weight.square().sum(1) + a.bias.square()) * b.weight.square().sum(0)).sqrt()
        top = score.argsort(descending=True)[:16].sort().values
        assert torch.equal(plans[group.name].keep, top)


@pytest.mark.parametrize("name", ["transformer_post_norm", "transformer_pre_norm"])
def test_multihead_attention_heads_are_pruned(name: str) -> None:
    """nn.MultiheadAttention with fewer heads computes what the original computes with the
    removed heads' outputs ignored (a forward of cipm's own, checked against torch's)."""
    model, x, graph, stats = setup(name)
    keep = ratio_targets(graph, 0.5, DEFAULT_KINDS)
    heads = {g.name for g in graph.by_kind("heads")}
    assert heads and heads <= set(keep)
    pruned_result = cipm.prune(model, stats, ratio=0.5, method="magnitude")
    pruned = pruned_result.model
    check_pruned_shapes(model, pruned, graph, keep)
    report = pruned_result.report
    assert report.verified and not report.kept_whole and set(report.sizes) == set(keep)
    attention = [m for m in pruned.modules() if isinstance(m, nn.MultiheadAttention)]
    assert attention and all(type(m) is HeadPrunedMultiheadAttention for m in attention)
    plans = prune_plan(model, stats, ratio=0.5, method="magnitude")
    kept = {g: p.keep for g, p in plans.items()}
    torch.testing.assert_close(run(pruned, x), run(zero_removed(model, graph, kept), x))


@pytest.mark.parametrize("method", METHODS)
def test_ratio_zero_is_a_copy_and_the_input_is_unchanged(method: str) -> None:
    model, x, _, stats = setup("gpt")
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    same = cipm.prune(model, stats, ratio=0.0, method=method).model
    assert same is not model
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in same.state_dict().items())
    assert same.state_dict().keys() == model.state_dict().keys()
    cipm.prune(model, stats, ratio=0.5, method=method)
    assert {k: v.shape for k, v in model.state_dict().items()} == shapes
    assert run(model, x).shape == run(same, x).shape


# -- merging: exact on duplicates, better than magnitude ---------------------------------------


def duplicated_mlp(n: int, dup: int) -> tuple[nn.Sequential, list[torch.Tensor]]:
    """Linear(8, n) -> ReLU -> Linear(n, 3) whose last `dup` hidden units are the first `dup`
    scaled by positive factors (so after ReLU too); and some data."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, n), nn.ReLU(), nn.Linear(n, 3)).double().eval()
    scale = torch.rand(dup, dtype=torch.float64) * 2 + 0.5
    with torch.no_grad():
        model[0].weight[n - dup :] = model[0].weight[:dup] * scale[:, None]
        model[0].bias[n - dup :] = model[0].bias[:dup] * scale
    gen = torch.Generator().manual_seed(1)
    return model, [torch.randn(64, 8, dtype=torch.float64, generator=gen) for _ in range(4)]


def test_fold_folds_exact_duplicates_without_changing_the_function() -> None:
    n, dup = 16, 5
    model, data = duplicated_mlp(n, dup)
    graph = cipm.trace(model, data[0])
    stats = cipm.collect(model, graph, data, config=cipm.CollectConfig(progress=False))
    group = graph.groups[0].name
    sizes = {group: n - dup}

    keep = set(prune_plan(model, stats, sizes=sizes, method="fold")[group].keep.tolist())
    # the plan must drop one unit of each duplicated pair and keep every other unit
    assert all((i in keep) != (n - dup + i in keep) for i in range(dup))
    assert set(range(dup, n - dup)) <= keep

    fresh = torch.randn(100, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    merged = cipm.prune(model, stats, sizes=sizes, method="fold").model
    assert merged[0].weight.shape == (n - dup, 8) and merged[2].weight.shape == (3, n - dup)
    for x in [*data, fresh]:
        torch.testing.assert_close(run(merged, x), run(model, x), rtol=1e-8, atol=1e-8)
    # the control: keeping the same number of units by magnitude does change the function
    picked = cipm.prune(model, stats, sizes=sizes, method="magnitude").model
    assert not torch.allclose(run(picked, fresh), run(model, fresh), rtol=1e-3, atol=1e-3)


def test_fold_folds_exact_duplicates_to_float64_precision() -> None:
    n, dup = 16, 5
    model, data = duplicated_mlp(n, dup)
    graph = cipm.trace(model, data[0])
    stats = cipm.collect(model, graph, data, config=cipm.CollectConfig(progress=False))
    merged = cipm.prune(model, stats, sizes={graph.groups[0].name: n - dup}, method="fold").model
    # the fold's ridge (1e-12 of the kept units' mean second moment) is all that is left
    torch.testing.assert_close(run(merged, data[0]), run(model, data[0]), rtol=1e-10, atol=1e-10)


def test_fold_beats_magnitude_on_trained_digits_mlp() -> None:
    train, test = digits()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    train_classifier(model, train, epochs=10, seed=0, lr=3e-3)
    graph = cipm.trace(model, train[0][0])
    stats = cipm.collect(model, graph, train, config=cipm.CollectConfig(progress=False))

    def accuracy(m: nn.Module) -> float:
        right = sum(int((run(m, x).argmax(1) == y).sum()) for x, y in test)
        return right / sum(len(y) for _, y in test)

    original = accuracy(model)
    merged = accuracy(cipm.prune(model, stats, ratio=0.5, method="fold").model)
    magnitude = accuracy(cipm.prune(model, stats, ratio=0.5, method="magnitude").model)
    assert original > 0.9
    assert merged >= magnitude
    assert merged >= 0.95 * original


# -- pruned models are ordinary models ---------------------------------------------------------


@pytest.mark.parametrize("name", ["gpt", "bert"])
def test_pruned_model_trains_saves_and_loads(name: str) -> None:
    model, x, _, stats = setup(name)
    pruned_result = cipm.prune(model, stats, ratio=0.5, method="fold")
    pruned = pruned_result.model
    if name == "gpt":
        assert pruned.head.weight is pruned.tok.weight  # ties survive pruning

    buffer = io.BytesIO()
    torch.save(pruned, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert type(loaded) is type(model)
    torch.testing.assert_close(run(loaded, x), run(pruned, x), rtol=0, atol=0)

    clone = copy.deepcopy(pruned)
    with torch.no_grad():
        for p in clone.parameters():
            p.add_(1.0)
    clone.load_state_dict(pruned.state_dict())
    torch.testing.assert_close(run(clone, x), run(pruned, x), rtol=0, atol=0)

    trained = copy.deepcopy(pruned).train()
    start = {k: v.clone() for k, v in trained.named_parameters()}
    opt = torch.optim.SGD(trained.parameters(), lr=0.1)
    out = trained(**x) if isinstance(x, dict) else trained(x)
    out = out if isinstance(out, torch.Tensor) else hf.first_output(out)
    loss = F.mse_loss(out, torch.zeros_like(out))
    assert bool(torch.isfinite(loss))
    loss.backward()
    opt.step()
    moved = [k for k, v in trained.named_parameters() if not torch.equal(v, start[k])]
    assert len(moved) > len(start) // 2


@pytest.mark.parametrize("name", ["encoder", "bert", "gpt"])
def test_pruning_the_residual_stream(name: str) -> None:
    model, x, graph, stats = setup(name)
    residual = graph.by_kind("residual")
    assert len(residual) == 1
    stream = residual[0]
    k = stream.size - 8
    pruned_result = cipm.prune(
        model,
        stats,
        sizes={stream.name: k},
        method="fold",
        config=cipm.PruneConfig(example_inputs=x),
    )
    pruned = pruned_result.model
    check_pruned_shapes(model, pruned, graph, {stream.name: k})
    embeddings = [m for m in pruned.modules() if isinstance(m, nn.Embedding)]
    norms = [m for m in pruned.modules() if isinstance(m, nn.LayerNorm)]
    assert embeddings and all(m.embedding_dim == k and m.weight.shape[1] == k for m in embeddings)
    assert norms and all(m.normalized_shape == (k,) and m.weight.shape == (k,) for m in norms)
    out = run(pruned, x)
    if name == "bert":  # the stream is BERT's output (outputs="free")
        assert out.shape[-1] == k
    else:
        assert out.shape == run(model, x).shape
    if name == "gpt":
        assert pruned.head.weight is pruned.tok.weight


def test_pruning_bert_heads_updates_head_counts() -> None:
    model, x, graph, stats = setup("bert")
    heads = {g.name: 4 - i - 1 for i, g in enumerate(graph.by_kind("heads"))}  # 3 and 2
    pruned_result = cipm.prune(
        model, stats, sizes=heads, method="fold", config=cipm.PruneConfig(example_inputs=x)
    )
    pruned = pruned_result.model
    check_pruned_shapes(model, pruned, graph, heads)
    layers = [m for m in pruned.modules() if type(m).__name__ == "BertSelfAttention"]
    assert [m.num_attention_heads for m in layers] == [3, 2]
    assert [m.all_head_size for m in layers] == [3 * 8, 2 * 8]
    assert [m.query.out_features for m in layers] == [3 * 8, 2 * 8]
    assert run(pruned, x).shape == run(model, x).shape


def test_pruning_gpt2_heads_updates_split_size_and_conv1d_widths() -> None:
    model, x, graph, stats = setup("gpt2")
    heads = {g.name: 4 - i - 1 for i, g in enumerate(graph.by_kind("heads"))}
    pruned_result = cipm.prune(
        model, stats, sizes=heads, method="magnitude", config=cipm.PruneConfig(example_inputs=x)
    )
    pruned = pruned_result.model
    check_pruned_shapes(model, pruned, graph, heads)
    attns = [m for m in pruned.modules() if type(m).__name__ == "GPT2Attention"]
    assert [m.num_heads for m in attns] == [3, 2]
    assert [m.split_size for m in attns] == [3 * 8, 2 * 8]
    assert [m.c_attn.nf for m in attns] == [3 * 3 * 8, 3 * 2 * 8]
    assert [m.c_proj.nx for m in attns] == [3 * 8, 2 * 8]
    assert all(m.c_attn.weight.shape[1] == m.c_attn.nf for m in attns)
    kept = {g: p.keep for g, p in prune_plan(model, graph, sizes=heads, method="magnitude").items()}
    torch.testing.assert_close(
        run(pruned, x), run(zero_removed(model, graph, kept), x), rtol=1e-10, atol=1e-10
    )


def test_pruning_channels_within_groupnorm_groups() -> None:
    """Cutting the channels inside each GroupNorm group (not whole groups) keeps num_groups."""
    model, x, graph, stats = setup("cnn_groupnorm")
    inner = {g.name: 3 for g in graph if g.within is not None}
    assert len(inner) == 2
    pruned_result = cipm.prune(
        model, stats, sizes=inner, method="fold", config=cipm.PruneConfig(example_inputs=x)
    )
    pruned = pruned_result.model
    check_pruned_shapes(model, pruned, graph, inner)
    norms = [m for m in pruned.modules() if isinstance(m, nn.GroupNorm)]
    assert [(m.num_groups, m.num_channels) for m in norms] == [(4, 12), (4, 12)]
    assert run(pruned, x).shape == run(model, x).shape


def test_whole_groupnorm_groups_are_not_pruned() -> None:
    """GroupNorm records its group count, which no plugin can infer from its tensors alone,
    so blocks other groups nest in are left out of a ratio and refused by name."""
    model, x, graph, _ = setup("cnn_groupnorm")
    outer = [g.name for g in graph if g.within is None]
    assert len(outer) == 2
    with pytest.raises(cipm.CipmError, match=f"group '{outer[0]}' cannot be pruned: .*GroupNorm"):
        cipm.prune(model, graph, sizes={outer[0]: 2}, method="magnitude")
    pruned_result = cipm.prune(
        model, graph, ratio=0.5, method="magnitude", config=cipm.PruneConfig(example_inputs=x)
    )
    pruned = pruned_result.model
    norms = [m for m in pruned.modules() if isinstance(m, nn.GroupNorm)]
    assert [(m.num_groups, m.num_channels) for m in norms] == [(4, 8), (4, 8)]


def test_pruning_llama_query_heads_updates_key_value_groups() -> None:
    model, x, graph, _ = setup("llama")
    inner = {g.name: 1 for g in graph.by_kind("heads") if g.within is not None}
    assert len(inner) == 2
    pruned_result = cipm.prune(
        model, graph, sizes=inner, method="magnitude", config=cipm.PruneConfig(example_inputs=x)
    )
    pruned = pruned_result.model
    check_pruned_shapes(model, pruned, graph, inner)
    expected = run(pruned, x)  # the default SDPA attention
    attns = [m for m in pruned.modules() if type(m).__name__ == "LlamaAttention"]
    kv = [m.k_proj.out_features // m.head_dim for m in attns]
    q = [m.q_proj.out_features // m.head_dim for m in attns]
    assert [m.num_key_value_groups for m in attns] == [a // b for a, b in zip(q, kv, strict=True)]
    eager = copy.deepcopy(pruned)
    eager.set_attn_implementation("eager")
    torch.testing.assert_close(run(eager, x), expected, rtol=1e-6, atol=1e-6)


# -- bad input -------------------------------------------------------------------------------


def test_bad_input_raises_useful_errors() -> None:
    model, _, graph, stats = setup("mlp")
    group = graph.groups[0]
    with pytest.raises(cipm.CipmError, match=r"ratio must be in \[0, 1\), got -0.1"):
        cipm.prune(model, stats, ratio=-0.1)
    with pytest.raises(cipm.CipmError, match=r"ratio must be in \[0, 1\), got 1.0"):
        cipm.prune(model, stats, ratio=1.0)
    with pytest.raises(cipm.CipmError, match="'nope' is not a permutation group"):
        cipm.prune(model, stats, sizes={"nope": 3})
    with pytest.raises(cipm.CipmError, match=r"cannot keep 0 units.*leave it empty"):
        cipm.prune(model, stats, sizes={group.name: 0})
    with pytest.raises(cipm.CipmError, match=rf"cannot keep {group.size + 1} units.*fewer"):
        cipm.prune(model, stats, sizes={group.name: group.size + 1})
    with pytest.raises(cipm.CipmError, match="'fold' needs statistics"):
        cipm.prune(model, graph, ratio=0.5, method="fold")
    with pytest.raises(cipm.CipmError, match="'activation' needs statistics"):
        cipm.prune(model, graph, ratio=0.5, method="activation")
    with pytest.raises(cipm.CipmError, match=r"unknown prune method 'prune_harder'; use one of"):
        cipm.prune(model, stats, ratio=0.5, method="prune_harder")  # type: ignore[arg-type]
    with pytest.raises(cipm.CipmError, match="say how much"):
        cipm.prune(model, stats)
    other = catalog.build("mlp", seed=9)[0].double()
    with pytest.raises(cipm.CipmError, match="collected on another model"):
        cipm.prune(other, stats, ratio=0.5)
    assert (
        cipm.prune(model, graph, ratio=0.5, method="magnitude").model is not None
    )  # no stats: fine


def test_within_head_groups_cannot_be_pruned() -> None:
    model, _, graph, stats = setup("gpt")
    within = graph.by_kind("within_head")[0]
    with pytest.raises(cipm.CipmError, match="within attention heads"):
        cipm.prune(model, stats, sizes={within.name: within.size - 1})


def test_fold_warns_when_samples_do_not_determine_the_fold() -> None:
    model, _, graph, stats = setup("encoder")
    group = graph.by_kind("hidden")[0]
    samples = stats[group.name].count
    keep = group.size - 1
    assert samples < keep  # the premise: 2 x 3 tokens per batch, three batches
    with pytest.warns(cipm.CipmWarning, match=f"'{group.name}': {samples} samples for {keep}"):
        cipm.prune(model, stats, sizes={group.name: keep})


# -- merging group by group on data ----------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["encoder", "gpt", "resnet20", "densenet", "mobilenet", "bert", "gpt2", "llama", "vit"]
)
def test_fold_with_data_prunes_every_group_in_turn(name: str) -> None:
    """data= prunes group after group against the original (LLaMA: a key/value head left
    with one query head changes the exported graph mid-way, and is traced anew)."""
    model, x, graph, _ = setup(name)
    before = snapshot(model)
    pruned_result = cipm.prune(
        model,
        graph,
        ratio=0.5,
        data=[x, x],
        config=cipm.PruneConfig(progress=False, example_inputs=x),
    )
    pruned = pruned_result.model
    check_pruned_shapes(model, pruned, graph, ratio_targets(graph, 0.5, DEFAULT_KINDS))
    assert bool(torch.isfinite(run(pruned, x)).all())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_fold_with_data_folds_exact_duplicates_without_changing_the_function() -> None:
    n, dup = 16, 5
    model, data = duplicated_mlp(n, dup)
    graph = cipm.trace(model, data[0])
    merged = cipm.prune(model, graph, sizes={graph.groups[0].name: n - dup}, data=data).model
    fresh = torch.randn(100, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    for x in [*data, fresh]:
        torch.testing.assert_close(run(merged, x), run(model, x), rtol=1e-8, atol=1e-8)


def test_fold_with_data_corrects_earlier_groups() -> None:
    """Folding against the original model's units, not the partly pruned model's own, makes
    a deep chain's output closer to the original's than folding every group on its own."""
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(64, 64), nn.Tanh()]
    for _ in range(3):
        layers += [nn.Linear(64, 64), nn.Tanh()]
    model = nn.Sequential(*layers, nn.Linear(64, 4)).double().eval()
    gen = torch.Generator().manual_seed(1)
    data = [torch.randn(256, 64, dtype=torch.float64, generator=gen) for _ in range(4)]
    graph = cipm.trace(model, data[0])
    stats = cipm.collect(model, graph, data, config=cipm.CollectConfig(progress=False))
    fresh = torch.randn(512, 64, dtype=torch.float64, generator=gen)

    def error(pruned: nn.Module) -> float:
        return float((run(pruned, fresh) - run(model, fresh)).square().mean())

    at_once = cipm.prune(model, stats, ratio=0.5).model
    in_turn = cipm.prune(
        model, stats, ratio=0.5, data=data, config=cipm.PruneConfig(progress=False)
    ).model
    assert error(in_turn) < 0.9 * error(at_once)  # measured: 0.76 x


def test_fold_with_data_needs_batches() -> None:
    model, _, graph, _ = setup("mlp")
    with pytest.raises(cipm.CipmError, match="no batches"):
        cipm.prune(model, graph, ratio=0.5, data=[], config=cipm.PruneConfig(progress=False))


def test_fold_with_data_reads_loaders_and_one_shot_iterators_alike() -> None:
    from torch.utils.data import DataLoader, TensorDataset

    model, x, graph, _ = setup("mlp")
    samples = torch.randn(128, x.shape[1], dtype=torch.float64, generator=torch.Generator())
    loader = DataLoader(TensorDataset(samples), batch_size=32)
    from_loader = cipm.prune(
        model, graph, ratio=0.5, data=loader, config=cipm.PruneConfig(progress=False)
    ).model
    once = cipm.prune(
        model,
        graph,
        ratio=0.5,
        data=iter(samples.split(32)),
        config=cipm.PruneConfig(progress=False),
    ).model
    for a, b in zip(from_loader.state_dict().values(), once.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("conv", [nn.Conv2d, nn.ConvTranspose2d])
def test_depthwise_convs_keep_one_group_per_channel(conv: type[nn.Module]) -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 1), nn.ReLU(), conv(8, 8, 3, padding=1, groups=8), nn.ReLU(),
        nn.Conv2d(8, 4, 1),
    ).eval()  # fmt: skip
    x = torch.randn(2, 3, 6, 6)
    graph = cipm.trace(model, x)
    pruned_result = cipm.prune(
        model, graph, ratio=0.5, method="magnitude", config=cipm.PruneConfig(example_inputs=x)
    )
    pruned = pruned_result.model
    depthwise = pruned[2]
    assert depthwise.groups == depthwise.in_channels == depthwise.out_channels == 4


@pytest.mark.parametrize(("ratio", "query", "kv"), [(0.25, 6, 2), (0.5, 4, 1), (0.75, 2, 1)])
def test_a_ratio_counts_query_heads_with_their_key_value_heads(
    ratio: float, query: int, kv: int
) -> None:
    """Grouped-query attention nests the query heads sharing a key/value head (`query_heads`)
    within the key/value heads (`heads`). `ratio` is the fraction of query heads that go, whole
    key/value heads first (halving both levels used to remove 75 %)."""
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=8, num_key_value_heads=2, use_cache=False,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    x = torch.randint(0, 64, (2, 7))
    graph = cipm.trace(model, (x,))
    inner = graph["model.layers.0.self_attn.q_proj:query_heads"]
    assert inner.within == "model.layers.0.self_attn.q_proj:heads" and inner.size == 4
    attention = cipm.prune(model, graph, ratio=ratio, method="magnitude").model.model.layers[0]
    head_dim = 64 // 8
    assert attention.self_attn.q_proj.out_features == query * head_dim
    assert attention.self_attn.k_proj.out_features == kv * head_dim

"""The tracer finds the symmetries, not just a safe subset: expected groups of known models."""

from __future__ import annotations

from collections import Counter

import pytest
from conftest import traced

import cipm
from cipm.examples import catalog
from cipm.graph import GroupKind as K


def kinds(graph: cipm.SymmetryGraph) -> Counter[str]:
    return Counter(g.kind.value for g in graph)


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_mlp_has_one_group_per_hidden_layer(depth: int) -> None:
    model, x = catalog.mlp(depth=depth, width=12)
    graph = cipm.trace(model, x)
    assert [g.size for g in graph] == [12] * depth
    assert all(g.kind == K.HIDDEN for g in graph)


def test_resnet20_one_group_per_stage_plus_one_per_block() -> None:
    graph = traced("resnet20")
    residual = graph.by_kind(K.RESIDUAL)
    inner = graph.by_kind(K.CHANNELS)
    assert sorted(g.size for g in residual) == [16, 32, 64]
    assert sorted(g.size for g in inner) == [16] * 3 + [32] * 3 + [64] * 3
    assert len(graph) == 12
    stage1 = next(g for g in residual if g.size == 16)
    keys = {m.key for m in stage1.members}
    # the stem, every block's second conv and BN of stage 1, and stage 2's shortcut input
    assert {"stem.0.weight", "layer1.2.conv2.0.weight", "layer2.0.shortcut.0.weight"} <= keys


def test_vgg_flatten_carries_channels_into_linear() -> None:
    graph = traced("vgg")
    last_conv = graph["3:channels"]
    linear_in = [m for m in last_conv.members if m.key == "7.weight"]
    assert linear_in and linear_in[0].dim == 1 and linear_in[0].unit == 16  # 4x4 positions
    assert kinds(graph) == {"channels": 2, "hidden": 1}


def test_densenet_concatenation_keeps_every_layers_channels() -> None:
    graph = traced("densenet")
    assert sorted(g.size for g in graph) == [6, 6, 6, 8]
    stem = graph["stem:channels"]
    # every later layer reads the stem's channels through the concatenation
    assert {"convs.0.0.weight", "convs.1.0.weight", "convs.2.0.weight", "fc.weight"} <= {
        m.key for m in stem.members
    }


def test_mobilenet_depthwise_ties_in_and_out() -> None:
    graph = traced("mobilenet")
    assert sorted(g.size for g in graph) == [8, 16, 32]
    first = graph["0.0:channels"]
    assert "2.0.weight" in {m.key for m in first.members}  # the depthwise conv after it


def test_groupnorm_gives_whole_groups_and_within_group_channels() -> None:
    graph = traced("cnn_groupnorm")
    assert len(graph) == 4
    outer = [g for g in graph if g.within is None]
    nested = [g for g in graph if g.within is not None]
    assert sorted(g.size for g in outer) == [4, 4] and sorted(g.size for g in nested) == [4, 4]
    assert all(graph[g.within].size == 4 for g in nested)


@pytest.mark.parametrize("name", ["transformer_post_norm", "transformer_pre_norm"])
def test_transformer_encoder_groups(name: str) -> None:
    graph = traced(name)
    layers = 2
    assert [g.size for g in graph.by_kind(K.RESIDUAL)] == [16]
    assert [g.size for g in graph.by_kind(K.HIDDEN)] == [32] * layers
    assert [g.size for g in graph.by_kind(K.HEADS)] == [4] * layers
    assert all(g.unit == 4 for g in graph.by_kind(K.HEADS))
    within = graph.by_kind(K.WITHIN_HEAD)
    assert len(within) >= layers and all(
        g.within in {h.name for h in graph.by_kind(K.HEADS)} for g in within
    )


@pytest.mark.parametrize("name", ["gpt", "encoder"])
def test_attention_models_have_stream_heads_within_head_and_mlp(name: str) -> None:
    graph = traced(name)
    layers, d, heads, head_dim = 2, 32, 4, 8
    assert [g.size for g in graph.by_kind(K.RESIDUAL)] == [d]
    assert [g.size for g in graph.by_kind(K.HEADS)] == [heads] * layers
    assert [g.unit for g in graph.by_kind(K.HEADS)] == [head_dim] * layers
    # q with k, and v with the output projection: two within-head groups per layer
    assert [g.size for g in graph.by_kind(K.WITHIN_HEAD)] == [head_dim] * 2 * layers
    mlp = [g for g in graph.by_kind(K.HIDDEN) if "mlp" in g.name]
    assert [g.size for g in mlp] == [4 * d if name == "gpt" else 64] * layers


def test_gpt_tied_embedding_is_one_member_set() -> None:
    stream = traced("gpt").by_kind(K.RESIDUAL)[0]
    keys = {m.key for m in stream.members}
    assert {"tok.weight", "head.weight", "pos.weight", "ln_f.weight"} <= keys


def test_model_inputs_and_outputs_are_fixed() -> None:
    """A transformer whose output is its residual stream has no stream group."""
    import torch

    layer = torch.nn.TransformerEncoderLayer(16, 4, 32, batch_first=True)
    model = torch.nn.TransformerEncoder(layer, 1, enable_nested_tensor=False).eval()
    graph = cipm.trace(model, torch.randn(2, 5, 16))
    assert not graph.by_kind(K.RESIDUAL)
    assert graph.by_kind(K.HIDDEN) and graph.by_kind(K.HEADS)


def test_free_outputs_keep_the_stream_and_restore_the_outputs() -> None:
    import torch

    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(16, 4, 32, batch_first=True)
    encoder = torch.nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
    # an embedding in, the stream out (inputs stay fixed: the stream starts at embed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), encoder).eval().double()
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    with pytest.raises(cipm.CipmError, match="outputs must be"):
        cipm.trace(model, x, outputs="loose")  # type: ignore[arg-type]
    graph = cipm.trace(model, x, outputs="free")
    assert [g.size for g in graph.by_kind(K.RESIDUAL)] == [16]
    assert [(o.index, o.dim) for o in graph.outputs] == [(0, 2)]
    assert cipm.SymmetryGraph.from_json(graph.to_json()) == graph
    perm = graph.random_permutation(seed=2)
    with torch.no_grad():
        permuted = cipm.permute(model, perm)(x)
        assert not torch.allclose(permuted, model(x))
        torch.testing.assert_close(perm.restore_output(permuted, 0), model(x))

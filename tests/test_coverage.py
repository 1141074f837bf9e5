"""Real-world coverage, the fast tier of benchmarks/zoo_sweep.py: torchvision's architectures
(small configurations of the real classes), Hugging Face families, nn.MultiheadAttention with
pruned heads, rules that fail, and pruning that never returns a broken model."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any

import hf_families
import pytest
import torch
import vision
from hypothesis import given
from hypothesis import strategies as st
from test_prune import zero_removed
from torch import nn

import cipm
from cipm.discovery.rules import OpCall
from cipm.plugins.multihead import HeadPrunedMultiheadAttention

tv = vision.torchvision()
needs_torchvision = pytest.mark.skipif(tv is None, reason=f"no torchvision in {vision.TARGET}")


def first(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def relative_error(a: nn.Module, b: nn.Module, x: tuple[Any, ...]) -> float:
    with torch.no_grad():
        ya, yb = first(a(*x)), first(b(*x))
    return float((ya - yb).abs().max() / ya.abs().max().clamp_min(1e-300))


# -- torchvision -----------------------------------------------------------------------------


def vision_models() -> dict[str, Callable[[], nn.Module]]:
    if tv is None:
        return {}
    from torchvision.models import efficientnet, maxvit
    from torchvision.models import swin_transformer as swin
    from torchvision.models import vision_transformer as vit

    def tiny_swin(v2: bool) -> nn.Module:
        extra = {"block": swin.SwinTransformerBlockV2, "downsample_layer": swin.PatchMergingV2}
        return swin.SwinTransformer(
            patch_size=[2, 2], embed_dim=16, depths=[1, 1], num_heads=[2, 4], window_size=[2, 2],
            stochastic_depth_prob=0.0, num_classes=5, **(extra if v2 else {}),
        )  # fmt: skip

    def tiny_efficientnet() -> nn.Module:
        setting, last = efficientnet._efficientnet_conf(
            "efficientnet_b0", width_mult=0.25, depth_mult=0.25
        )
        return efficientnet.EfficientNet(setting, 0.2, num_classes=5, last_channel=last)

    return {
        "resnet18": lambda: tv.models.resnet18(num_classes=5),  # add_ (in place)
        "mobilenet_v3_small": lambda: tv.models.mobilenet_v3_small(num_classes=5),  # hardswish_
        "efficientnet": tiny_efficientnet,  # silu_ (in place)
        "vit": lambda: vit.VisionTransformer(
            image_size=32,
            patch_size=8,
            num_layers=2,
            num_heads=4,
            hidden_dim=32,
            mlp_dim=64,
            num_classes=5,
        ),  # fmt: skip  nn.MultiheadAttention
        "swin": lambda: tiny_swin(False),  # zero_, fill_, roll; head size from the input
        "swin_v2": lambda: tiny_swin(True),
        "maxvit": lambda: maxvit.MaxVit(
            input_size=(32, 32),
            stem_channels=8,
            partition_size=2,
            block_channels=[16, 32],
            block_layers=[1, 1],
            head_dim=4,
            stochastic_depth_prob=0.0,
            num_classes=5,
        ),  # fmt: skip  swapaxes, einsum attention
    }


VISION = sorted(vision_models()) or ["resnet18"]


def built_vision(name: str) -> tuple[nn.Module, tuple[torch.Tensor]]:
    torch.manual_seed(0)
    model = vision_models()[name]().eval().double()
    for p in model.parameters():  # torchvision zero-inits some heads: outputs would be 0
        if p.dim() > 1 and not p.any():
            nn.init.normal_(p, std=0.1)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model, (torch.randn(2, 3, 32, 32, dtype=torch.float64),)


@needs_torchvision
@pytest.mark.parametrize("name", VISION)
def test_torchvision_traced_without_freeze_and_exact(name: str) -> None:
    model, x = built_vision(name)
    graph = cipm.trace(model, x)  # unknown="error": every op has a rule
    assert len(graph) > 0
    permuted = cipm.permute(model, cipm.Permutation.random(graph, seed=1))
    assert relative_error(model, permuted, x) < 1e-9


@needs_torchvision
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "vit", "swin", "swin_v2"])
def test_torchvision_pruned_at_half_runs_smaller(name: str) -> None:
    model, x = built_vision(name)
    graph = cipm.trace(model, x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cipm.CipmWarning)  # swin: heads kept whole, said
        small_result = cipm.prune(model, graph, ratio=0.5, method="magnitude")
        small = small_result.model
    report = small_result.report
    assert report.verified and report.sizes
    params = [sum(p.numel() for p in m.parameters()) for m in (model, small)]
    assert params[1] < 0.75 * params[0]
    with torch.no_grad():
        assert small(*x).shape == model(*x).shape
    # torchvision's Swin v1 derives head_dim from its input width: its attention groups
    # truly cannot shrink alone, and are the only ones kept whole
    kept = {k.group for k in report.kept_whole}
    assert (name == "swin") == bool(kept)
    assert all("attn" in k.module or "attn" in k.group for k in report.kept_whole)


# -- nn.MultiheadAttention with pruned heads -------------------------------------------------


@given(
    batch_first=st.booleans(),
    bias=st.booleans(),
    bias_kv=st.booleans(),
    zero_attn=st.booleans(),
    cross=st.booleans(),
    need_weights=st.booleans(),
    average=st.booleans(),
    mask=st.sampled_from([None, "bool", "float", "per_head", "causal"]),
    padding=st.booleans(),
)
def test_head_pruned_attention_computes_what_torch_computes(
    batch_first: bool,
    bias: bool,
    bias_kv: bool,
    zero_attn: bool,
    cross: bool,
    need_weights: bool,
    average: bool,
    mask: str | None,
    padding: bool,
) -> None:
    """At full heads cipm's forward is torch's, over every option (the pruned case is the
    same code with fewer heads: tests/test_prune.py checks it against zeroed heads)."""
    torch.manual_seed(0)
    e, heads, n, length, source = 12, 3, 2, 5, 4 if cross else 5
    kdim = 7 if cross else None
    torch_mha = nn.MultiheadAttention(
        e, heads, bias=bias, add_bias_kv=bias_kv, add_zero_attn=zero_attn, kdim=kdim, vdim=kdim,
        batch_first=batch_first,
    ).double().eval()  # fmt: skip
    ours = copy.deepcopy(torch_mha)
    ours.__class__ = HeadPrunedMultiheadAttention
    q = torch.randn(n, length, e, dtype=torch.float64)
    k = torch.randn(n, source, kdim or e, dtype=torch.float64)
    v = torch.randn(n, source, kdim or e, dtype=torch.float64)
    if not cross:
        k = v = q
    if not batch_first:
        q, k, v = (t.transpose(0, 1) for t in (q, k, v))
    kwargs: dict[str, Any] = {"need_weights": need_weights, "average_attn_weights": average}
    if mask == "bool":
        kwargs["attn_mask"] = torch.rand(length, source) < 0.3
    elif mask == "float":
        kwargs["attn_mask"] = torch.randn(length, source, dtype=torch.float64)
    elif mask == "per_head":
        kwargs["attn_mask"] = torch.randn(n * heads, length, source, dtype=torch.float64)
    elif mask == "causal" and not cross:
        kwargs["attn_mask"] = nn.Transformer.generate_square_subsequent_mask(
            length, dtype=torch.float64
        )
        kwargs["is_causal"] = True
    if padding:
        pad = torch.zeros(n, source, dtype=torch.bool)
        pad[0, -1] = True
        kwargs["key_padding_mask"] = pad
    with torch.no_grad():
        expected, expected_weights = torch_mha(q, k, v, **kwargs)
        got, weights = ours(q, k, v, **kwargs)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    if need_weights:
        torch.testing.assert_close(weights, expected_weights, rtol=1e-10, atol=1e-12)
    else:
        assert weights is None


# -- Hugging Face families -------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(hf_families.FAMILIES))
def test_hugging_face_family_permutation_is_exact(name: str) -> None:
    model, x, _ = hf_families.build(name)
    graph = cipm.trace(model, x)  # unknown="error": every op has a rule
    assert len(graph) > 0
    permuted = cipm.permute(model, cipm.Permutation.random(graph, seed=2))
    assert relative_error(model, permuted, x) < hf_families.tolerance(name)


def test_layers_written_as_matmul_with_a_weight_make_units() -> None:
    """Falcon's FalconLinear is ``x @ weight.T``: its outputs are hidden units and its
    residual stream a residual stream, as with nn.Linear (the kinds ratio pruning reads)."""
    model, x, _ = hf_families.build("falcon")
    kinds = [g.kind.value for g in cipm.trace(model, x)]
    assert kinds.count("residual") == 1 and kinds.count("hidden") == 2  # two MLPs


@pytest.mark.parametrize("name", ["mixtral", "qwen2_moe"])
def test_mixture_of_experts_residual_and_expert_units_are_found_and_pruned(name: str) -> None:
    """Grouped expert kernels (histc of expert counts, grouped matmuls over sorted tokens)
    leave the residual stream and every expert's hidden units free (one permutation shared
    by the experts); pruning them gives a smaller model that runs."""
    model, x, _ = hf_families.build(name)
    graph = cipm.trace(model, x)
    experts = [g for g in graph if g.name.endswith("mlp.experts:hidden")]
    assert len(experts) == 2 and len(graph.by_kind("residual")) == 1
    assert all(any(m.key.endswith("experts.down_proj") for m in g.members) for g in experts)
    small_result = cipm.prune(model, graph, ratio=0.5, method="magnitude")
    small = small_result.model
    report = small_result.report
    assert {g.name for g in experts} <= set(report.sizes) and not report.kept_whole
    with torch.no_grad():
        assert first(small(*x)).shape == first(model(*x)).shape


def test_grouped_query_attention_prunes_whole_key_value_groups() -> None:
    """Pruning key/value heads takes each one's query heads with it, and the result is the
    original with exactly those heads' outputs ignored."""
    model, x, _ = hf_families.build("llama")
    graph = cipm.trace(model, x)
    outer = {g.name: 1 for g in graph.by_kind("heads") if g.within is None}
    assert len(outer) == 2  # the key/value heads of each layer
    small_result = cipm.prune(model, graph, sizes=outer, method="magnitude")
    small = small_result.model
    plans = cipm.pruning.prune_plan(model, graph, sizes=outer, method="magnitude")
    attention = [m for m in small.modules() if type(m).__name__ == "LlamaAttention"]
    assert all(m.k_proj.out_features == m.head_dim for m in attention)  # one key/value head
    assert all(m.q_proj.out_features == 2 * m.head_dim for m in attention)  # with its 2 queries
    reference = zero_removed(model, graph, {g: p.keep for g, p in plans.items()})
    with torch.no_grad():
        torch.testing.assert_close(first(small(*x)), first(reference(*x)), rtol=1e-6, atol=1e-6)


# -- rules that fail -------------------------------------------------------------------------


class Broken:
    """A plugin whose relu rule unifies input and output, then fails (a buggy rule)."""

    @cipm.hookimpl(tryfirst=True)
    def cipm_rules(self) -> dict[str, Callable[[OpCall], None]]:
        def relu(call: OpCall) -> None:
            x = call.tensor(0)
            call.set_output(x.axes)
            raise IndexError("a bug in this rule")

        return {"aten.relu": relu}


def test_a_failing_rule_is_an_error_or_a_frozen_call_never_a_crash() -> None:
    model = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 2)).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    manager = cipm.get_plugin_manager()
    broken = Broken()
    manager.register(broken, "broken_relu")
    try:
        with pytest.raises(cipm.RuleError, match=r"aten.relu.*a bug in this rule.*freeze"):
            cipm.trace(model, x)
        with pytest.warns(cipm.CipmWarning, match="rule for aten.relu.default failed"):
            graph = cipm.trace(model, x, unknown="freeze")
    finally:
        manager.unregister(broken)
    # the rule's half-stated constraint was undone and the call frozen: relu's axes are
    # fixed, so the hidden units are no group at all (a frozen relu keeps nothing free)
    assert len(graph) == 0
    assert len(cipm.trace(model, x)) == 1  # the built-in rule: one hidden group


# -- pruning never returns a broken model ----------------------------------------------------


class FixedWidth(nn.Module):
    """Reshapes to a width it keeps in Python: pruning the layer before it breaks it."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 8)
        self.width = 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x).reshape(-1, self.width).relu()


def test_a_group_the_model_cannot_follow_is_kept_whole_and_reported() -> None:
    model = nn.Sequential(FixedWidth(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 2)).double()
    x = torch.randn(5, 4, dtype=torch.float64)
    graph = cipm.trace(model, x)
    assert len(graph) == 2
    with pytest.warns(cipm.CipmWarning, match=r"kept 1 group.*'0.lin:hidden' in 0"):
        small_result = cipm.prune(model, graph, ratio=0.5, method="magnitude")
        small = small_result.model
    report = small_result.report
    (kept,) = report.kept_whole
    assert kept.group == "0.lin:hidden" and kept.module == "0" and "shape" in kept.reason
    assert report.sizes == {"1:hidden": (6, 3)} and small[1].out_features == 3
    with torch.no_grad():
        assert small(x).shape == model(x).shape
    # with calibration data, group after group: the same group kept, the other folded
    with pytest.warns(cipm.CipmWarning, match=r"kept 1 group.*'0.lin:hidden' in 0"):
        folded_result = cipm.prune(
            model, graph, ratio=0.5, data=[x, x * 2], config=cipm.PruneConfig(progress=False)
        )
        folded = folded_result.model
    report = folded_result.report
    assert [k.group for k in report.kept_whole] == ["0.lin:hidden"]
    assert report.sizes == {"1:hidden": (6, 3)} and folded[1].out_features == 3
    with torch.no_grad():
        assert folded(x).shape == model(x).shape

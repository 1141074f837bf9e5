"""Merging and barriers: a model merged with itself is itself; its barrier is 0."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_same_function, snapshot, traced
from torch import nn

import cipm
from cipm.examples import catalog


def labelled(name: str, n: int = 3, classes: int = 10) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for i in range(n):
        x = catalog.build(name, seed=200 + i)[1].double()
        out.append(
            (
                x,
                torch.randint(
                    0, classes, (x.shape[0],), generator=torch.Generator().manual_seed(i)
                ),
            )
        )
    return out


@pytest.mark.parametrize("name", ["mlp", "resnet20", "gpt"])
def test_merge_of_a_model_with_itself_is_itself(name: str) -> None:
    model, x = catalog.build(name)
    model = model.double()
    x = x.double() if x.is_floating_point() else x
    merged = cipm.merge([model, model, model], traced(name))
    assert merged is not model
    for key, value in model.state_dict().items():
        torch.testing.assert_close(merged.state_dict()[key], value, rtol=1e-12, atol=1e-12)
    assert_same_function(model, merged, x)


def test_merge_averages_with_weights() -> None:
    a, _ = catalog.build("mlp", seed=1)
    b, _ = catalog.build("mlp", seed=2)
    before = snapshot(a)
    m = cipm.merge([a, b], weights=[0.25, 0.75])
    torch.testing.assert_close(m[0].weight, 0.25 * a[0].weight + 0.75 * b[0].weight)
    assert all(torch.equal(v, a.state_dict()[k]) for k, v in before.items())


def test_barrier_of_a_model_with_itself_is_zero(tmp_path: Path) -> None:
    model = catalog.build("mlp")[0].double()
    loader = [(x, y % 4) for x, y in labelled("mlp")]
    curve = cipm.barrier(model, model, loader, steps=5)
    assert curve.loss_barrier == pytest.approx(0.0, abs=1e-12)
    assert curve.error_barrier == 0.0
    assert len(curve.alphas) == 5 and "loss barrier" in str(curve)
    png = curve.plot(tmp_path / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_barriers_writes_a_png_and_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "sweep.png"
    series = {"unaligned": [1.0, 0.8, 0.5], "aligned": [0.3, 0.1, 0.0]}
    out = cipm.plot_barriers([32, 64, 128], series, path, labels=("width", "barrier"), log_x=True)
    assert out == path and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = path.read_bytes()
    with pytest.raises(ValueError):  # a series of the wrong length: matplotlib refuses it
        cipm.plot_barriers([32, 64, 128], {"short": [1.0]}, path, labels=("width", "barrier"))
    assert path.read_bytes() == before


def test_barrier_between_aligned_permuted_copy_is_zero() -> None:
    graph = traced("resnet20")
    model = catalog.build("resnet20")[0].double()
    shuffled = cipm.permute(model, graph.random_permutation(seed=4))
    aligned = cipm.permute(shuffled, cipm.align(model, shuffled, graph))
    loader = labelled("resnet20", 2)
    assert cipm.barrier(model, aligned, loader, steps=3).loss_barrier == pytest.approx(0, abs=1e-9)
    x = loader[0][0]
    with torch.no_grad():  # control: without alignment the midpoint is another function
        unaligned_mid = cipm.interpolate(model, shuffled, 0.5)(x)
        assert (unaligned_mid - model(x)).abs().max() > 1e-2
        torch.testing.assert_close(cipm.interpolate(model, aligned, 0.5)(x), model(x))


def test_barrier_matches_a_direct_computation() -> None:
    a = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)).double()
    b = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)).double()
    x = torch.randn(20, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (20,))
    curve = cipm.barrier(a, b, [(x, y)], steps=3)
    mid = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)).double()
    with torch.no_grad():
        for pm, pa, pb in zip(mid.parameters(), a.parameters(), b.parameters(), strict=True):
            pm.copy_((pa + pb) / 2)
        losses = [F.cross_entropy(m(x), y).item() for m in (a, mid, b)]
    assert curve.losses == pytest.approx(tuple(losses), rel=1e-12)
    assert curve.loss_barrier == pytest.approx(max(0.0, losses[1] - (losses[0] + losses[2]) / 2))


def test_batchnorm_reset_recomputes_running_statistics() -> None:
    model = catalog.build("cnn_bn")[0].double()
    data = [x for x, _ in labelled("cnn_bn", 2)]
    merged = cipm.merge([model, model], data=data)
    bn = merged[0][1]
    with torch.no_grad():
        conv = model[0][0](torch.cat(data))
    torch.testing.assert_close(bn.running_mean, conv.mean((0, 2, 3)), rtol=1e-9, atol=1e-12)
    assert not merged.training and not bn.training


def test_bad_merges() -> None:
    a, _ = catalog.build("mlp")
    narrow, _ = catalog.mlp(width=16)
    with pytest.raises(cipm.CipmError, match="at least two"):
        cipm.merge([a])
    with pytest.raises(cipm.CipmError, match=r"'0.weight' has shape"):
        cipm.merge([a, narrow])
    with pytest.raises(cipm.CipmError, match="sum to 1"):
        cipm.merge([a, a], weights=[0.5, 0.6])
    with pytest.raises(cipm.CipmError, match="no batches"):
        cipm.barrier(a, a, [])
    with pytest.raises(cipm.CipmError, match="needs the symmetry graph and data"):
        cipm.merge([a, a], repair=True)


def test_repair_of_a_model_merged_with_itself_changes_nothing() -> None:
    graph = traced("mlp")
    model = catalog.build("mlp")[0].double()
    data = [x for x, _ in labelled("mlp")]
    repaired = cipm.repair(cipm.merge([model, model]), [model, model], graph, data)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(repaired.state_dict()[key], value, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["mlp", "cnn_bn"])
def test_repair_gives_units_the_endpoints_average_statistics(name: str) -> None:
    from cipm.merging.renormalize import _moments, producer_sites

    graph = traced(name)
    a = catalog.build(name, seed=1)[0].double()
    b = catalog.build(name, seed=2)[0].double()
    b = cipm.permute(b, cipm.align(a, b, graph))
    data = [x for x, _ in labelled(name, 4)]
    merged = cipm.merge([a, b])
    repaired = cipm.repair(merged, [a, b], graph, data)
    via_merge = cipm.merge([a, b], graph, data=data, repair=True)
    if name == "mlp":  # no BatchNorm: merge(repair=True) is merge then repair
        for key, value in repaired.state_dict().items():
            torch.testing.assert_close(via_merge.state_dict()[key], value)
    sites = producer_sites(graph, merged)
    assert sites, "no group has a producer to repair: the test would prove nothing"
    got = _moments(repaired, graph, sites, data)
    ends = [_moments(m, graph, sites, data) for m in (a, b)]
    before = _moments(merged, graph, sites, data)
    for group in sites:
        target_std = (ends[0][group].std + ends[1][group].std) / 2
        target_mean = (ends[0][group].mean + ends[1][group].mean) / 2
        torch.testing.assert_close(got[group].std, target_std, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(got[group].mean, target_mean, rtol=1e-6, atol=1e-9)
        assert not torch.allclose(before[group].std, target_std)  # it did need repairing


def test_repair_folds_into_a_layer_whose_units_lie_along_its_weights_dim_1() -> None:
    """GPT-2's Conv1D computes x @ weight[in, out] + bias: its units lie along the weight's
    dim 1, which the symmetry graph says; REPAIR scales them there (float64)."""
    pytest.importorskip("transformers")
    import warnings

    from hf_families import VOCAB, build

    from cipm.merging.renormalize import _moments, producer_sites

    a, x, _ = build("gpt2", seed=1)
    b, _, _ = build("gpt2", seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = cipm.trace(a, x)
    b = cipm.permute(b, cipm.align(a, b, graph))
    gen = torch.Generator().manual_seed(3)
    data = [(torch.randint(1, VOCAB, (4, 7), generator=gen),) for _ in range(3)]
    merged = cipm.merge([a, b])
    repaired = cipm.repair(merged, [a, b], graph, data)
    sites = producer_sites(graph, merged)
    conv1d = [g for g, site in sites.items() if site.module.endswith("mlp.c_fc")]
    assert len(conv1d) == 2, sites  # one hidden group per layer
    got, before = _moments(repaired, graph, sites, data), _moments(merged, graph, sites, data)
    ends = [_moments(m, graph, sites, data) for m in (a, b)]
    for group in conv1d:
        target_std = (ends[0][group].std + ends[1][group].std) / 2
        target_mean = (ends[0][group].mean + ends[1][group].mean) / 2
        torch.testing.assert_close(got[group].std, target_std, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(got[group].mean, target_mean, rtol=1e-9, atol=1e-12)
        assert not torch.allclose(before[group].std, target_std)  # it did need repairing
        key = f"{sites[group].module}.weight"
        ratio = repaired.state_dict()[key] / merged.state_dict()[key]
        torch.testing.assert_close(ratio, ratio[:1].expand_as(ratio))  # one scale per column

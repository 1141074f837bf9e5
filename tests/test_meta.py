"""The meta-analysis network: equivariant scores, an invariant learned canonical form, valid
policies that keep the function, objectives with gradients, plugins, resumable training,
save/load, and the learned prune, reorganize and align."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import hf_families
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import cipm
from cipm.examples import catalog
from cipm.examples.data import digits, digits_cnn, digits_mlp, train_classifier
from cipm.meta import MetaConfig, Partner, Subject
from cipm.pruning import prune_plan

BUILT_IN = ("compression", "correlation", "stability", "alignment", "canonicalization")
CONFIG = MetaConfig(hidden=16, layers=2)
HF_NAMES = ("bert", "gpt2", "opt")  # float64 end to end (no float32 norms)
EXACT = 1e-10
PRETRAINED = resources.files("cipm.meta") / "pretrained.safetensors"


@dataclass(frozen=True)
class Case:
    """A float64 model, its graph, calibration batches (model inputs) and statistics."""

    model: nn.Module
    graph: cipm.SymmetryGraph
    data: list[Any]
    stats: cipm.Statistics

    def collect(self, model: nn.Module) -> cipm.Statistics:
        return cipm.collect(model, self.graph, self.data, config=cipm.CollectConfig(progress=False))

    def run(self, model: nn.Module) -> torch.Tensor:
        with torch.no_grad():
            out = model(self.data[0])
        return out if torch.is_tensor(out) else out[0]


def case(model: nn.Module, data: list[Any]) -> Case:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = cipm.trace(model, data[0])
    return Case(
        model,
        graph,
        data,
        cipm.collect(model, graph, data, config=cipm.CollectConfig(progress=False)),
    )


def mlp_model(seed: int) -> nn.Module:
    train, _ = digits()
    return train_classifier(digits_mlp(32), train, epochs=3, seed=seed).double()


def differing(a: nn.Module, b: nn.Module) -> list[str]:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return [k for k in sa if not torch.equal(sa[k], sb[k])]


def assert_state_equal(a: nn.Module, b: nn.Module) -> None:
    assert differing(a, b) == []


def assert_same_function(case: Case, other: nn.Module) -> None:
    torch.testing.assert_close(case.run(other), case.run(case.model), rtol=EXACT, atol=EXACT)


def is_permutation(indices: torch.Tensor, n: int) -> bool:
    return indices.dtype == torch.long and torch.equal(indices.sort().values, torch.arange(n))


# -- fixtures: each model and its statistics made once ---------------------------------------


@pytest.fixture(scope="module")
def mlp() -> Case:
    _, test = digits()
    return case(mlp_model(seed=0), [x.double() for x, _ in test])


@pytest.fixture(scope="module")
def cnn() -> Case:
    train, test = digits(image=True, batch=64)
    model = train_classifier(digits_cnn(4), train[:6], epochs=1, seed=0).double()
    return case(model, [x.double() for x, _ in test[:2]])


@pytest.fixture(scope="module")
def gpt() -> Case:
    model, _ = catalog.build("gpt")
    gen = torch.Generator().manual_seed(5)
    return case(model.double(), [torch.randint(0, 50, (4, 16), generator=gen) for _ in range(3)])


@pytest.fixture(scope="module", params=HF_NAMES)
def hf(request: pytest.FixtureRequest) -> Case:
    model, _, dtype = hf_families.build(request.param)
    assert dtype == torch.float64
    gen = torch.Generator().manual_seed(7)
    return case(model, [torch.randint(1, hf_families.VOCAB, (4, 7), generator=gen) for _ in "abc"])


@pytest.fixture(scope="module")
def cases(mlp: Case, cnn: Case, gpt: Case) -> dict[str, Case]:
    return {"mlp": mlp, "cnn": cnn, "gpt": gpt}


@pytest.fixture(scope="module")
def subject(mlp: Case) -> Subject:
    """The MLP with everything every built-in objective reads: two disjoint views,
    calibration batches and a partner trained apart (target by activation matching)."""
    other = mlp_model(seed=1)
    target = cipm.align(mlp.model, other, mlp.graph, method="activation", data=mlp.data)
    views = (
        cipm.collect(mlp.model, mlp.graph, mlp.data[:1], config=cipm.CollectConfig(progress=False)),
        cipm.collect(mlp.model, mlp.graph, mlp.data[1:], config=cipm.CollectConfig(progress=False)),
    )
    partner = Partner(other, mlp.collect(other), target)
    return Subject("mlp", mlp.model, mlp.stats, views, mlp.data[:1], partner)


@pytest.fixture(scope="module")
def meta(subject: Subject) -> cipm.MetaAnalyzer:
    """A small network trained a few steps (weights other than the initialization's)."""
    analyzer = cipm.MetaAnalyzer(CONFIG, seed=0)
    analyzer.fit(
        [subject],
        {"correlation": 1.0, "stability": 0.5},
        config=cipm.meta.FitConfig(steps=3, progress=False),
    )
    return analyzer


# -- equivariance and invariance ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["mlp", "cnn", "gpt"])
@settings(max_examples=3)
@given(seed=st.integers(0, 2**31 - 1))
def test_scores_are_permutation_equivariant(
    cases: dict[str, Case], meta: cipm.MetaAnalyzer, name: str, seed: int
) -> None:
    c = cases[name]
    p = c.graph.random_permutation(seed=seed)
    permuted = cipm.permute(c.model, p)
    scores, moved = meta.scores(c.model, c.stats), meta.scores(permuted, c.collect(permuted))
    assert scores.keys() == moved.keys() == {g.name for g in c.graph}
    for g, s in scores.items():
        assert s.dtype == torch.float64 and s.shape == (c.graph[g].size,)
        # perm[g][i] = j: unit i of the permuted model is unit j of the original
        err = float((moved[g] - s[p[g]]).abs().max())
        assert err <= EXACT * float(s.abs().max()), (g, err)
    # the control: the scores tell units apart, so the other convention would fail
    g = max(scores, key=lambda g: c.graph[g].size)
    if not torch.equal(p[g], torch.argsort(p[g])):
        assert not torch.allclose(moved[g], scores[g][torch.argsort(p[g])], rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", ["mlp", "cnn", "gpt"])
@settings(max_examples=3)
@given(seed=st.integers(0, 2**31 - 1))
def test_learned_canonical_form_is_permutation_invariant(
    cases: dict[str, Case], meta: cipm.MetaAnalyzer, name: str, seed: int
) -> None:
    c = cases[name]
    permuted = cipm.permute(c.model, c.graph.random_permutation(seed=seed))
    assert differing(c.model, permuted)  # the permutation really moved weights
    canon = cipm.canonicalize(c.model, c.graph, stats=c.stats, method=meta.order)
    again = cipm.canonicalize(permuted, c.graph, stats=c.collect(permuted), method=meta.order)
    assert_state_equal(again, canon)  # bit for bit
    assert_same_function(c, canon)


def test_hf_learned_canonical_form_is_permutation_invariant(
    hf: Case, meta: cipm.MetaAnalyzer
) -> None:
    canon = cipm.canonicalize(hf.model, hf.graph, stats=hf.stats, method=meta.order)
    assert differing(hf.model, canon)  # the canonical order is not the given one
    for seed in (0, 1):
        permuted = cipm.permute(hf.model, hf.graph.random_permutation(seed=seed))
        assert differing(hf.model, permuted)
        again = cipm.canonicalize(permuted, hf.graph, stats=hf.collect(permuted), method=meta.order)
        assert_state_equal(again, canon)
    assert_same_function(hf, canon)


def test_learned_canonical_form_is_idempotent(mlp: Case, meta: cipm.MetaAnalyzer) -> None:
    canon = cipm.canonicalize(mlp.model, mlp.graph, stats=mlp.stats, method=meta.order)
    assert differing(mlp.model, canon)
    assert meta.policy(canon, mlp.collect(canon)).is_identity()


def test_scores_are_equivariant_with_tied_correlations() -> None:
    """Hidden units that each fire on one sample only are equally correlated with each
    other, so a unit's k-th and (k+1)-th neighbours tie exactly; the scores must not depend
    on which of them comes first. (Sparse ReLU units on small calibration sets do this.)"""
    n = 24
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(n, n), nn.ReLU(), nn.Linear(n, 3)).double().eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.diag(torch.rand(n, dtype=torch.float64) + 0.5))
        model[0].bias.zero_()
    c = case(model, [torch.eye(n, dtype=torch.float64)])
    analyzer = cipm.MetaAnalyzer(CONFIG, seed=0)
    scores = analyzer.scores(model, c.stats)
    for seed in range(3):
        p = c.graph.random_permutation(seed=seed)
        permuted = cipm.permute(model, p)
        moved = analyzer.scores(permuted, c.collect(permuted))
        for g, s in scores.items():
            assert float((moved[g] - s[p[g]]).abs().max()) <= EXACT * float(s.abs().max())


# -- policies are permutations and keep the function -----------------------------------------


@pytest.mark.parametrize("name", ["mlp", "cnn", "gpt"])
def test_policies_are_permutations_and_keep_the_function(
    cases: dict[str, Case], meta: cipm.MetaAnalyzer, name: str
) -> None:
    c = cases[name]
    policy = meta.policy(c.model, c.stats)
    reorganized = cipm.reorganize(c.model, c.stats, method=meta.seriation)
    scores = meta.scores(c.model, c.stats)
    for p in (policy, reorganized):
        assert isinstance(p, cipm.Permutation) and set(p) == {g.name for g in c.graph}
        assert all(is_permutation(p[g.name], g.size) for g in c.graph)
        assert_same_function(c, cipm.permute(c.model, p))
    assert reorganized == policy  # reorganizing every group is the policy
    for g, s in scores.items():  # highest score first
        ordered = s[policy[g]]
        assert bool((ordered[:-1] >= ordered[1:]).all()), g
    assert not policy.is_identity()


def test_hf_policy_is_a_permutation_and_keeps_the_function(
    hf: Case, meta: cipm.MetaAnalyzer
) -> None:
    policy = meta.policy(hf.model, hf.stats)
    assert all(is_permutation(policy[g.name], g.size) for g in hf.graph)
    assert not policy.is_identity()
    reordered = cipm.permute(hf.model, policy)
    got = policy.restore_output(hf.run(reordered), 0)
    torch.testing.assert_close(got, hf.run(hf.model), rtol=EXACT, atol=EXACT)


def test_learned_reorganize_of_some_groups_leaves_the_others(
    mlp: Case, meta: cipm.MetaAnalyzer
) -> None:
    first, second = (g.name for g in mlp.graph)
    p = cipm.reorganize(mlp.model, mlp.stats, method=meta.seriation, groups=[first])
    assert torch.equal(p[first], meta.policy(mlp.model, mlp.stats)[first])
    assert torch.equal(p[second], torch.arange(mlp.graph[second].size))


# -- objectives ------------------------------------------------------------------------------


def test_built_in_objectives_are_registered() -> None:
    table = cipm.meta.objectives()
    assert set(BUILT_IN) <= set(table)
    assert all(callable(f) for f in table.values())


@pytest.mark.parametrize("name", BUILT_IN)
def test_objective_gradients_are_finite_and_not_zero(subject: Subject, name: str) -> None:
    analyzer = cipm.MetaAnalyzer(CONFIG, seed=1)
    history = analyzer.fit(
        [subject], {name: 1.0}, config=cipm.meta.FitConfig(steps=1, batch=1, progress=False)
    )
    loss = history.rows[0][name]
    assert history.rows[0]["total"] == loss and 0.0 < loss < 10.0
    grads = [p.grad for p in analyzer.network.parameters()]
    assert all(g is not None for g in grads)
    assert all(bool(torch.isfinite(g).all()) for g in grads if g is not None)
    nonzero = [g for g in grads if g is not None and float(g.abs().max()) > 0]
    assert len(nonzero) >= len(grads) // 2, f"{len(nonzero)} of {len(grads)}"


def test_alignment_objective_is_zero_for_a_planted_partner(mlp: Case) -> None:
    """A permuted copy with the permutation that undoes it ranks every unit as the subject
    does (the network is equivariant); the wrong target does not."""
    p = mlp.graph.random_permutation(seed=4)
    copy = cipm.permute(mlp.model, p)
    losses = {}
    for label, target in (("right", p.inverse()), ("wrong", mlp.graph.identity())):
        partner = Partner(copy, mlp.collect(copy), target)
        s = Subject("planted", mlp.model, mlp.stats, partner=partner)
        analyzer = cipm.MetaAnalyzer(CONFIG, seed=0)
        history = analyzer.fit(
            [s], {"alignment": 1.0}, config=cipm.meta.FitConfig(steps=1, batch=1, progress=False)
        )
        losses[label] = history.rows[0]["alignment"]
    assert losses["right"] < 1e-10 and losses["wrong"] > 0.1, losses


def test_objectives_that_lack_their_inputs_say_so(mlp: Case) -> None:
    bare = Subject("bare", mlp.model, mlp.stats)
    analyzer = cipm.MetaAnalyzer(CONFIG, seed=0)
    with pytest.raises(cipm.CipmError, match="two disjoint views"):
        analyzer.fit(
            [bare], {"stability": 1.0}, config=cipm.meta.FitConfig(steps=1, progress=False)
        )
    with pytest.raises(cipm.CipmError, match="calibration"):
        analyzer.fit(
            [bare], {"compression": 1.0}, config=cipm.meta.FitConfig(steps=1, progress=False)
        )


# -- a third-party objective plugin ----------------------------------------------------------


@contextlib.contextmanager
def registered(plugin: object, name: str) -> Iterator[None]:
    pm = cipm.get_plugin_manager()
    pm.register(plugin, name=name)
    try:
        yield
    finally:
        pm.unregister(plugin)


class Spread:
    """A plugin objective: the ranks' distance from the middle, as a loss; records calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float, float]] = []

    @cipm.hookimpl
    def cipm_objectives(self) -> dict[str, Any]:
        return {"spread": self.spread}

    def spread(self, batch: cipm.meta.ObjectiveInput) -> torch.Tensor:
        loss = torch.stack([(r - 0.5).square().mean() for r in batch.ranks.values()]).mean()
        self.calls.append((batch.subject.name, batch.strength, float(loss.detach())))
        return loss


def test_third_party_objective_is_picked_up_and_trained_on(subject: Subject) -> None:
    plugin = Spread()
    with registered(plugin, "spread-objective"):
        assert "spread" in cipm.meta.objectives()
        assert set(BUILT_IN) <= set(cipm.meta.objectives())
        analyzer = cipm.MetaAnalyzer(CONFIG, seed=0)
        before = [p.detach().clone() for p in analyzer.network.parameters()]
        history = analyzer.fit(
            [subject], {"spread": 1.0}, config=cipm.meta.FitConfig(steps=3, batch=2, progress=False)
        )
    assert "spread" not in cipm.meta.objectives()
    assert len(plugin.calls) == 3 * 2 and {name for name, _, _ in plugin.calls} == {"mlp"}
    strengths = [s for _, s, _ in plugin.calls]
    assert strengths == sorted(strengths, reverse=True) and strengths[0] > strengths[-1]
    for step, row in enumerate(history.rows):  # the history is the mean of its calls
        mean = sum(loss for _, _, loss in plugin.calls[2 * step : 2 * step + 2]) / 2
        assert row["spread"] == pytest.approx(mean, rel=1e-12)
    after = list(analyzer.network.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    with pytest.raises(cipm.CipmError, match="unknown objectives"):
        analyzer.fit(
            [subject], {"spread": 1.0}, config=cipm.meta.FitConfig(steps=1, progress=False)
        )


def test_plugin_objective_of_a_built_in_name_warns() -> None:
    class Shadow:
        @cipm.hookimpl
        def cipm_objectives(self) -> dict[str, Any]:
            return {"correlation": lambda batch: torch.zeros(())}

    with registered(Shadow(), "shadow-objective"), pytest.warns(cipm.CipmWarning, match="both"):
        cipm.meta.objectives()


# -- resumable training ----------------------------------------------------------------------


class Interrupted(Exception):
    pass


class Interruptible:
    """The correlation objective under another name, raising after `limit` calls: a run
    killed part way, without touching the training loop."""

    def __init__(self) -> None:
        self.calls = 0
        self.limit: int | None = None

    @cipm.hookimpl
    def cipm_objectives(self) -> dict[str, Any]:
        return {"interruptible": self.objective}

    def objective(self, batch: cipm.meta.ObjectiveInput) -> torch.Tensor:
        if self.limit is not None and self.calls >= self.limit:
            raise Interrupted
        self.calls += 1
        return cipm.meta.objectives()["correlation"](batch)


def test_training_resumes_from_a_checkpoint_to_the_same_result(
    subject: Subject, tmp_path: Path
) -> None:
    steps, batch, objectives = 6, 2, {"interruptible": 1.0, "canonicalization": 0.2}
    plugin = Interruptible()
    path = tmp_path / "fit.ckpt"

    def fit(analyzer: cipm.MetaAnalyzer, checkpoint: Path | None = None, **kw: Any) -> Any:
        args: dict[str, Any] = dict(steps=steps, batch=batch, seed=5, every=3, progress=False)
        config = cipm.meta.FitConfig(**{**args, **kw})
        return analyzer.fit([subject], objectives, checkpoint=checkpoint, config=config)

    with registered(plugin, "interruptible-objective"):
        straight = cipm.MetaAnalyzer(CONFIG, seed=2)
        expected = fit(straight)

        plugin.limit, plugin.calls = 4 * batch, 0  # dies in step 5, after step 3's checkpoint
        with pytest.raises(Interrupted):
            fit(cipm.MetaAnalyzer(CONFIG, seed=2), checkpoint=path)
        assert path.exists()

        plugin.limit, plugin.calls = None, 0
        resumed = cipm.MetaAnalyzer(CONFIG, seed=2)
        history = fit(resumed, checkpoint=path)
        assert plugin.calls == (steps - 3) * batch  # it resumed at step 3, not from scratch

        assert history.rows == expected.rows and len(history.rows) == steps
        assert resumed.history.rows == expected.rows
        assert_state_equal(resumed.network, straight.network)

        # a run with other settings, or another network shape, does not resume it
        for other in (dict(lr=1e-2), dict(steps=2 * steps), dict(seed=6)):
            with pytest.raises(cipm.CipmError, match="other settings"):
                fit(cipm.MetaAnalyzer(CONFIG, seed=2), checkpoint=path, **other)
        with pytest.raises(cipm.CipmError, match="network shape"):
            fit(cipm.MetaAnalyzer(MetaConfig(hidden=8, layers=2)), checkpoint=path)


def test_unreadable_checkpoints_are_errors(
    subject: Subject, meta: cipm.MetaAnalyzer, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"\x00not a checkpoint at all" * 10)
    network = meta.save(tmp_path / "network.safetensors")  # a network, not a checkpoint
    for path, match in ((garbage, "cannot read"), (network, "not a cipm meta-network checkpoint")):
        analyzer = cipm.MetaAnalyzer(CONFIG, seed=0)
        with pytest.raises(cipm.CipmError, match=match):
            analyzer.fit(
                [subject],
                {"correlation": 1.0},
                config=cipm.meta.FitConfig(steps=1, progress=False),
                checkpoint=path,
            )


# -- save and load -----------------------------------------------------------------------------


def test_save_load_round_trip(
    meta: cipm.MetaAnalyzer, cases: dict[str, Case], tmp_path: Path
) -> None:
    path = meta.save(tmp_path / "meta.safetensors")
    loaded = cipm.MetaAnalyzer.load(path)
    assert loaded.config == meta.config == CONFIG
    assert loaded.history.rows == meta.history.rows and len(loaded.history.rows) == 3
    assert_state_equal(loaded.network, meta.network)
    for c in cases.values():
        a, b = meta.scores(c.model, c.stats), loaded.scores(c.model, c.stats)
        assert a.keys() == b.keys() and all(torch.equal(a[g], b[g]) for g in a)
        assert loaded.policy(c.model, c.stats) == meta.policy(c.model, c.stats)


def test_loading_what_is_not_a_network_is_an_error(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other), metadata={"format": "something-else"})
    bare = tmp_path / "bare.safetensors"
    save_file({"w": torch.zeros(2)}, str(bare))
    no_config = tmp_path / "no_config.safetensors"
    save_file({"w": torch.zeros(2)}, str(no_config), metadata={"format": "cipm-meta/1"})
    for path in (garbage, other, bare, no_config, tmp_path / "missing.safetensors"):
        with pytest.raises(cipm.CipmError):
            cipm.MetaAnalyzer.load(path)
    wrong = tmp_path / "wrong.safetensors"
    cipm.MetaAnalyzer(MetaConfig(hidden=8, layers=1)).save(wrong)
    shrunk = tmp_path / "shrunk.safetensors"
    from safetensors import safe_open

    with safe_open(str(wrong), "pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    save_file(tensors, str(shrunk), metadata={**meta, "config": CONFIG.to_json()})
    with pytest.raises(cipm.CipmError, match="do not fit"):
        cipm.MetaAnalyzer.load(shrunk)


def test_loading_a_network_with_corrupt_history_is_an_error(tmp_path: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = cipm.MetaAnalyzer(CONFIG).save(tmp_path / "meta.safetensors")
    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    save_file(tensors, str(path), metadata={**meta, "history": "{not json"})
    with pytest.raises(cipm.CipmError):
        cipm.MetaAnalyzer.load(path)


def test_a_seed_fixes_the_initialization() -> None:
    a, b, c = (cipm.MetaAnalyzer(CONFIG, seed=s) for s in (0, 0, 1))
    assert_state_equal(a.network, b.network)
    assert differing(a.network, c.network)
    state = torch.random.get_rng_state()
    cipm.MetaAnalyzer(CONFIG, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's generator is kept


# -- learned prune, reorganize, align ----------------------------------------------------------


def test_learned_prune_keeps_the_top_scored_units(mlp: Case, meta: cipm.MetaAnalyzer) -> None:
    scores = meta.scores(mlp.model, mlp.stats)
    first, second = (g.name for g in mlp.graph)
    keep = {g: scores[g].topk(16).indices.sort().values for g in (first, second)}
    pruned_result = cipm.prune(mlp.model, mlp.stats, ratio=0.5, method=meta.prune_method())
    pruned = pruned_result.model
    assert [tuple(m.weight.shape) for m in pruned if isinstance(m, nn.Linear)] == [
        (16, 64),
        (16, 16),
        (10, 16),
    ]
    # the units that make the first group keep their weights; the second, its bias
    assert torch.equal(pruned[0].weight, mlp.model[0].weight[keep[first]])
    assert torch.equal(pruned[0].bias, mlp.model[0].bias[keep[first]])
    assert torch.equal(pruned[2].bias, mlp.model[2].bias[keep[second]])
    # it runs; it is what prune_plan said it would keep
    out = mlp.run(pruned)
    assert out.shape == (len(mlp.data[0]), 10) and bool(torch.isfinite(out).all())
    plan = prune_plan(mlp.model, mlp.stats, ratio=0.5, method=meta.prune_method())
    assert all(torch.equal(plan[g].keep, keep[g]) for g in keep)
    assert pruned_result.report is not None


def test_learned_prune_with_data(mlp: Case, meta: cipm.MetaAnalyzer) -> None:
    pruned_result = cipm.prune(
        mlp.model,
        mlp.stats,
        ratio=0.5,
        method=meta.prune_method(),
        data=mlp.data,
        config=cipm.PruneConfig(progress=False),
    )
    pruned = pruned_result.model
    assert [m.out_features for m in pruned if isinstance(m, nn.Linear)] == [16, 16, 10]
    scores = meta.scores(mlp.model, mlp.stats)
    first = mlp.graph.groups[0].name
    keep = scores[first].topk(16).indices.sort().values
    assert torch.equal(pruned[0].weight, mlp.model[0].weight[keep])
    assert mlp.run(pruned).shape == (len(mlp.data[0]), 10)


@pytest.mark.parametrize("name", ["mlp", "cnn", "gpt"])
def test_meta_align_recovers_a_planted_permutation(
    cases: dict[str, Case], meta: cipm.MetaAnalyzer, name: str
) -> None:
    c = cases[name]
    p = c.graph.random_permutation(seed=11)
    copy = cipm.permute(c.model, p)
    found = meta.align(c.model, copy, c.graph, c.data)
    assert found == p.inverse()  # permute(copy, found) is the original, unit for unit
    assert_state_equal(cipm.permute(copy, found), c.model)


@pytest.mark.skipif(not PRETRAINED.is_file(), reason="no pretrained network in cipm/meta yet")
def test_pretrained_network_loads_and_aligns(mlp: Case) -> None:
    with resources.as_file(PRETRAINED) as path:
        assert path.stat().st_size < 1_000_000
    pretrained = cipm.MetaAnalyzer.pretrained()
    assert isinstance(pretrained.config, MetaConfig) and pretrained.history.rows
    p = mlp.graph.random_permutation(seed=12)
    copy = cipm.permute(mlp.model, p)
    found = cipm.align(mlp.model, copy, mlp.graph, method="learned", data=mlp.data)
    assert found == p.inverse()
    assert_state_equal(cipm.permute(copy, found), mlp.model)


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        dict(hidden=0),
        dict(layers=-1),
        dict(k=2.5),
        dict(k_weights=True),
        dict(hidden="16"),
        dict(correlation="spearman"),
    ],
)
def test_bad_config_values_are_errors(bad: dict[str, Any]) -> None:
    with pytest.raises(cipm.CipmError, match="MetaConfig"):
        MetaConfig(**bad)


def test_config_json_round_trip_and_errors() -> None:
    config = MetaConfig(hidden=8, layers=1, correlation="covariance", hierarchical=False)
    assert MetaConfig.from_json(config.to_json()) == config
    for text in ("not json", "[1, 2]", '{"hidden": 8, "colour": "red"}', '{"hidden": 0}'):
        with pytest.raises(cipm.CipmError):
            MetaConfig.from_json(text)
    with pytest.raises(cipm.CipmError, match="MetaConfig"):
        cipm.MetaAnalyzer(config={"hidden": 8})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("objectives", "match"),
    [
        ({"nonsense": 1.0}, "unknown objectives"),
        ({"correlation": -1.0}, "must be a number >= 0"),
        ({"correlation": float("nan")}, "must be a number >= 0"),
        ({"correlation": True}, "must be a number >= 0"),
        ({"correlation": 0.0}, "at least one objective"),
        ({}, "must map objective names"),
    ],
)
def test_bad_objectives_in_fit_are_errors(
    subject: Subject, objectives: dict[str, Any], match: str
) -> None:
    analyzer = cipm.MetaAnalyzer(CONFIG, seed=0)
    with pytest.raises(cipm.CipmError, match=match):
        analyzer.fit([subject], objectives, config=cipm.meta.FitConfig(steps=1, progress=False))


def test_bad_fit_arguments_are_errors(subject: Subject) -> None:
    analyzer = cipm.MetaAnalyzer(CONFIG, seed=0)
    for kw in (dict(steps=0), dict(batch=0), dict(lr=0.0), dict(steps=1.5)):
        with pytest.raises(cipm.CipmError, match="fit"):
            analyzer.fit(
                [subject], {"correlation": 1.0}, config=cipm.meta.FitConfig(progress=False, **kw)
            )
    for zoo_ in ([], "a zoo", [object()]):
        with pytest.raises(cipm.CipmError):
            analyzer.fit(
                zoo_, {"correlation": 1.0}, config=cipm.meta.FitConfig(steps=1, progress=False)
            )  # type: ignore[arg-type]


def test_learned_verbs_need_statistics(mlp: Case, meta: cipm.MetaAnalyzer) -> None:
    with pytest.raises(cipm.CipmError, match="pass stats"):
        cipm.canonicalize(mlp.model, mlp.graph, method=meta.order)
    with pytest.raises(cipm.CipmError, match="needs statistics"):
        cipm.prune(mlp.model, mlp.graph, ratio=0.5, method=meta.prune_method())
    with pytest.raises(cipm.CipmError, match="statistics"):
        meta.scores(mlp.model, mlp.graph)  # type: ignore[arg-type]
    with pytest.raises(cipm.CipmError, match="method"):
        cipm.canonicalize(mlp.model, mlp.graph, stats=mlp.stats, method="learnt")  # type: ignore[arg-type]
    with pytest.raises(cipm.CipmError, match="needs data"):
        cipm.align(mlp.model, mlp.model, mlp.graph, method="learned")


def test_statistics_of_another_model_are_an_error(
    mlp: Case, gpt: Case, meta: cipm.MetaAnalyzer
) -> None:
    with pytest.raises(cipm.CipmError):
        meta.scores(mlp.model, gpt.stats)

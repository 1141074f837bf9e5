"""The applications of seed 002 sections 4.3-4.4: the relevance objective, fine-tuning only a
block of units, and learning a second task in its own block (examples/transfer_blocks.py,
examples/continual_blocks.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import cipm
from cipm.examples.data import accuracy, digits, digits_mlp, of_classes, train_classifier
from cipm.meta import MetaConfig, ObjectiveInput, Subject
from cipm.meta.relevance import relevance_order, relevance_score, unit_relevance

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tasks() -> dict[str, list]:
    train, test = digits()
    return {
        "a": of_classes(train, range(5)),
        "a_test": of_classes(test, range(5)),
        "b": of_classes(train, range(5, 10)),
    }


@pytest.fixture(scope="module")
def subject(tasks: dict[str, list]) -> Subject:
    torch.manual_seed(0)
    model = train_classifier(digits_mlp(16), tasks["a"], epochs=3, seed=0)
    inputs = [x for x, _ in tasks["a"]]
    graph = cipm.trace(model, inputs[0])
    stats = cipm.collect(model, graph, inputs, config=cipm.CollectConfig(progress=False))
    return Subject("mlp16", model, stats, calibration=[torch.cat(inputs)])


@pytest.fixture(scope="module")
def relevance(subject: Subject) -> dict[str, torch.Tensor]:
    return unit_relevance(subject.model, subject.stats.graph, subject.calibration[0])


def hard_ranks(order: cipm.Permutation) -> dict[str, torch.Tensor]:
    """Normalized ranks of an order: 1 for its first unit, 0 for its last."""
    ranks = {}
    for g, seq in order.items():
        n = seq.numel()
        r = torch.empty(n, dtype=torch.float64)
        r[seq] = 1.0 - torch.arange(n, dtype=torch.float64) / (n - 1)
        ranks[g] = r
    return ranks


def objective_value(subject: Subject, ranks: dict[str, torch.Tensor]) -> float:
    objective = cipm.meta.objectives()["relevance"]
    batch = ObjectiveInput(subject, ranks, ranks, 0.1, lambda m, s: ranks, torch.Generator())
    return float(objective(batch))


def test_relevance_is_the_output_change_when_a_unit_is_zeroed(
    subject: Subject, relevance: dict[str, torch.Tensor]
) -> None:
    """Computed apart: zero one unit's ReLU output by hand, measure the output error."""
    model, x = subject.model, subject.calibration[0]
    with torch.no_grad():
        ref = model(x)
        hidden = model[1](model[0](x))
        hidden[:, 3] = 0.0
        out = model[4](model[3](model[2](hidden)))
    spread = (ref - ref.mean(0)).double().square().mean()
    expected = float((out.double() - ref.double()).square().mean() / spread)
    assert relevance["0:hidden"][3].item() == pytest.approx(expected, rel=1e-6)
    assert all(bool((r >= 0).all()) for r in relevance.values())


def test_relevance_objective_scores_random_about_one_and_exact_order_lower(
    subject: Subject, relevance: dict[str, torch.Tensor]
) -> None:
    graph = subject.stats.graph
    exact = relevance_order(graph, relevance)
    randoms = [relevance_score(relevance, graph.random_permutation(seed=s)) for s in range(200)]
    mean = sum(randoms) / len(randoms)
    assert mean == pytest.approx(1.0, abs=0.05)
    best = relevance_score(relevance, exact)
    assert best < min(randoms) and best < 0.9
    # the objective on the ranks of a hard order is the score of that order
    assert objective_value(subject, hard_ranks(exact)) == pytest.approx(best, rel=1e-9)
    crowded = {g.name: torch.full((g.size,), 0.5, dtype=torch.float64) for g in graph}
    assert objective_value(subject, crowded) == pytest.approx(1.0, rel=1e-9)


def test_relevance_objective_gradient_is_finite_and_not_zero(subject: Subject) -> None:
    analyzer = cipm.MetaAnalyzer(MetaConfig(hidden=16, layers=2), seed=0)
    history = analyzer.fit(
        [subject], {"relevance": 1.0}, config=cipm.meta.FitConfig(steps=1, batch=1, progress=False)
    )
    assert 0.0 < history.rows[0]["relevance"] < 2.0
    grads = [p.grad for p in analyzer.network.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert sum(float(g.abs().max()) > 0 for g in grads if g is not None) >= len(grads) // 2


def test_relevance_objective_needs_calibration(subject: Subject) -> None:
    bare = Subject("bare", subject.model, subject.stats)
    analyzer = cipm.MetaAnalyzer(MetaConfig(hidden=8, layers=1), seed=0)
    with pytest.raises(cipm.CipmError, match="calibration"):
        analyzer.fit(
            [bare], {"relevance": 1.0}, config=cipm.meta.FitConfig(steps=1, batch=1, progress=False)
        )


@settings(max_examples=6, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    fraction=st.sampled_from([0.125, 0.25, 0.5, 0.75]),
    isolated=st.booleans(),
)
def test_block_fine_tuning_changes_only_the_block(
    subject: Subject, tasks: dict[str, list], seed: int, fraction: float, isolated: bool
) -> None:
    order = subject.stats.graph.random_permutation(seed=seed)
    parts = cipm.split_order(subject.model, subject.stats, order, fraction)
    model = cipm.permute(subject.model, parts.permutation)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    masks = parts.block_masks(0, isolated=isolated)
    train_classifier(model, tasks["b"][:2], epochs=1, seed=seed, lr=1e-2, trainable=masks)
    changed = 0
    for name, value in model.state_dict().items():
        mask = masks.get(name, torch.zeros_like(value, dtype=torch.bool))
        assert torch.equal(value[~mask], before[name][~mask]), name
        changed += int((value[mask] != before[name][mask]).sum())
    assert changed > 0


def test_isolated_masks_are_the_block_pathway(subject: Subject) -> None:
    parts = cipm.split_order(subject.model, subject.stats, subject.stats.graph.identity(), 0.25)
    union, own = parts.block_masks(0), parts.block_masks(0, isolated=True)
    assert all(bool((own[k] <= union[k]).all()) for k in union)
    assert int(own["2.weight"].sum()) == 4 * 4 and int(union["2.weight"].sum()) == 16 * 16 - 12 * 12
    assert int(own["0.weight"].sum()) == 4 * 64 and int(own["4.weight"].sum()) == 10 * 4
    with pytest.raises(cipm.CipmError, match="no block 2"):
        parts.block_masks(2)
    with pytest.raises(cipm.CipmError, match="cannot be split"):
        cipm.split_order(subject.model, subject.stats, parts.permutation, {"0:hidden": 16})


def test_b_in_its_own_block_keeps_a_block_units_and_forgets_less_than_naive(
    subject: Subject, tasks: dict[str, list]
) -> None:
    """Computed here, apart from the example: task A's first-layer units compute exactly what
    they did, and on this seed A is forgotten less than by fine-tuning every weight."""
    graph, x = subject.stats.graph, subject.calibration[0]
    order = relevance_order(graph, unit_relevance(subject.model, graph, x))
    parts = cipm.split_order(subject.model, subject.stats, order, 0.5)
    blocked = cipm.permute(subject.model, parts.permutation)
    naive = cipm.permute(subject.model, graph.identity())
    before = accuracy(naive, tasks["a_test"])
    with torch.no_grad():
        a_units = blocked[1](blocked[0](x))[:, :8].clone()
    masks = parts.block_masks(1, isolated=True)
    train_classifier(blocked, tasks["b"], epochs=3, seed=0, trainable=masks)
    train_classifier(naive, tasks["b"], epochs=3, seed=0)
    with torch.no_grad():
        assert torch.equal(blocked[1](blocked[0](x))[:, :8], a_units)
    forgetting = {m: before - accuracy(m, tasks["a_test"]) for m in (blocked, naive)}
    assert forgetting[blocked] < forgetting[naive]


def test_continual_example_runs_and_prints_its_table(tmp_path: Path) -> None:
    continual = example("continual_blocks")
    out = tmp_path / "c.png"
    text = continual.main(["--seeds", "1", "--width", "16", "--epochs", "1", "--out", str(out)])
    assert out.exists() and text.count("\n") == 2 + len(continual.METHODS) - 1
    assert "naive fine-tuning | 1,482 |" in text


def test_transfer_example_tables_read_their_results() -> None:
    transfer = example("transfer_blocks")
    objective = {"exact relevance": [0.6, 0.7], "random": [1.0, 1.0]}
    results = {
        ("output layer only", 0.0): [(0.5, 650), (0.7, 650)],
        ("random", 1 / 16): [(0.9, 1410), (0.9, 1410)],
        ("full fine-tuning", 1.0): [(1.0, 8970), (1.0, 8970)],
    }
    text = transfer.tables(objective, results)
    assert "| exact relevance | 0.650 ± 0.071 |" in text
    assert "| random | 4 | 1,410 | 0.900 ± 0.000 | 0.638 | +0.3947 |" in text

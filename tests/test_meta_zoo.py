"""The meta-analysis zoo: built once, read back exactly, resumed without retraining, split,
paired, and refused clearly when damaged."""

from __future__ import annotations

import copy
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import cipm
from cipm.examples.data import train_classifier
from cipm.io import FOLDER_MARK
from cipm.meta import zoo
from cipm.meta.zoo import (
    FAMILIES,
    ZooSpec,
    build_zoo,
    load_zoo,
    pair_target,
    pairs,
    split_of,
    zoo_specs,
)

# every family, tiny; seeds 0, 1, 3 of one MLP make three pairs; width 6 is held out here
SPECS = [
    ZooSpec("mlp-digits", 8, 1, 0),
    ZooSpec("mlp-digits", 8, 1, 1),
    ZooSpec("mlp-digits", 8, 1, 3),
    ZooSpec("mlp-digits", 6, 1, 0),
    ZooSpec("cnn-digits", 8, 2, 0),
    ZooSpec("mlp-mnist1d", 8, 1, 0),
    ZooSpec("transformer-seq", 8, 1, 0),
]
HELDOUT_WIDTHS = (6,)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The zoo of SPECS, and the caller's random states and thread count around its build."""
    folder = tmp_path_factory.mktemp("zoo") / "zoo"
    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    threads = torch.get_num_threads()
    build_zoo(folder, SPECS, progress=False, heldout_widths=HELDOUT_WIDTHS)
    after = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    return {"folder": folder, "before": before, "after": after, "threads": threads}


@pytest.fixture(scope="module")
def specimens(built: dict[str, object]) -> dict[str, zoo.Specimen]:
    return {s.spec.name: s for s in load_zoo(built["folder"])}  # type: ignore[arg-type]


def files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_spec_names_and_checks() -> None:
    assert ZooSpec("mlp-digits", 64, 2, 0).name == "mlp-digits-w64-d2-s0"
    with pytest.raises(cipm.CipmError, match=r"unknown zoo family 'resnet'"):
        ZooSpec("resnet", 8, 1, 0)
    with pytest.raises(cipm.CipmError, match=r"ZooSpec.width must be a whole number >= 1"):
        ZooSpec("mlp-digits", 0, 1, 0)
    with pytest.raises(cipm.CipmError, match=r"ZooSpec.seed"):
        ZooSpec("mlp-digits", 8, 1, True)  # type: ignore[arg-type]
    with pytest.raises(cipm.CipmError, match=r"multiple of its 2 heads"):
        ZooSpec("transformer-seq", 9, 1, 0)


def test_default_zoo_and_its_splits() -> None:
    specs = zoo_specs()
    assert len(specs) == len({s.name for s in specs}) == 4 * 4 * 2 * 4
    counts: dict[str, int] = {}
    for spec in specs:
        counts[split_of(spec)] = counts.get(split_of(spec), 0) + 1
    # held-out family first (all 32 transformers), then width 128, then seed 3
    assert counts == {"train": 54, "heldout-seed": 18, "heldout-width": 24, "heldout-family": 32}
    assert split_of(ZooSpec("cnn-digits", 128, 2, 3)) == "heldout-width"
    assert split_of(ZooSpec("cnn-digits", 128, 2, 3), heldout_widths=()) == "heldout-seed"
    assert split_of(ZooSpec("mlp-mnist1d", 16, 3, 2)) == "train"


def test_build_leaves_the_caller_state_alone(built: dict[str, object]) -> None:
    before, after = built["before"], built["after"]
    assert torch.equal(before[0], after[0])  # type: ignore[index]
    assert np.array_equal(before[1], after[1])  # type: ignore[index]
    assert before[2] == after[2]  # type: ignore[index]
    assert torch.get_num_threads() == built["threads"]


def test_index_lists_every_entry_with_split_and_accuracy(built: dict[str, object]) -> None:
    folder: Path = built["folder"]  # type: ignore[assignment]
    index = json.loads((folder / "index.json").read_text())
    assert [ZooSpec(**e["spec"]) for e in index["entries"]] == SPECS
    splits = {ZooSpec(**e["spec"]).name: e["split"] for e in index["entries"]}
    assert splits["mlp-digits-w8-d1-s3"] == "heldout-seed"
    assert splits["mlp-digits-w6-d1-s0"] == "heldout-width"
    assert splits["transformer-seq-w8-d1-s0"] == "heldout-family"
    assert [k for k, v in splits.items() if v == "train"] == [
        "mlp-digits-w8-d1-s0",
        "mlp-digits-w8-d1-s1",
        "cnn-digits-w8-d2-s0",
        "mlp-mnist1d-w8-d1-s0",
    ]
    assert index["heldout"] == {"family": "transformer-seq", "seeds": [3], "widths": [6]}
    assert all(0.0 <= e["accuracy"] <= 1.0 for e in index["entries"])


def test_load_by_split(built: dict[str, object]) -> None:
    folder: Path = built["folder"]  # type: ignore[assignment]
    assert [s.spec.name for s in load_zoo(folder, "heldout-seed")] == ["mlp-digits-w8-d1-s3"]
    both = load_zoo(folder, ["heldout-width", "heldout-family"])
    assert [s.split for s in both] == ["heldout-width", "heldout-family"]
    with pytest.raises(cipm.CipmError, match=r"unknown zoo split\(s\) \['test'\]"):
        load_zoo(folder, "test")


@pytest.mark.parametrize("name", ["mlp-digits-w8-d1-s1", "cnn-digits-w8-d2-s0"])
def test_loaded_model_is_the_trained_one(specimens: dict[str, zoo.Specimen], name: str) -> None:
    s = specimens[name]
    family = zoo.FAMILY[s.spec.family]
    train, test = family.data()
    with zoo.families.one_thread():  # the build's recipe, again: the same model, bit for bit
        trained = train_classifier(
            zoo.families.untrained(s.spec),
            train,
            epochs=family.epochs,
            seed=s.spec.seed,
            lr=family.lr,
        )
    for key, value in trained.state_dict().items():
        assert torch.equal(s.model.state_dict()[key], value), key
    assert not s.model.training
    assert all(p.dtype == torch.float32 for p in s.model.parameters())
    x = test[0][0]
    with torch.no_grad():
        assert torch.equal(s.model(x), trained(x))
    assert s.accuracy == zoo.families.accuracy_on(trained, test)


def test_models_learned(specimens: dict[str, zoo.Specimen]) -> None:
    # tiny models, but all well above chance (10 classes)
    assert specimens["mlp-digits-w8-d1-s0"].accuracy > 0.75
    assert specimens["cnn-digits-w8-d2-s0"].accuracy > 0.3
    assert specimens["mlp-mnist1d-w8-d1-s0"].accuracy > 0.25
    assert specimens["transformer-seq-w8-d1-s0"].accuracy > 0.5


@pytest.mark.parametrize(
    "name", ["mlp-digits-w8-d1-s0", "cnn-digits-w8-d2-s0", "transformer-seq-w8-d1-s0"]
)
def test_loaded_stats_are_the_views_of_disjoint_halves(
    specimens: dict[str, zoo.Specimen], name: str
) -> None:
    s = specimens[name]
    train, _ = zoo.FAMILY[s.spec.family].data()
    assert len(s.calibration) == 4
    for (x, y), (x0, y0) in zip(s.calibration, train[:4], strict=True):
        assert torch.equal(x, x0) and torch.equal(y, y0)  # the first 512 training samples
    halves = (s.calibration[:2], s.calibration[2:])
    assert len(s.views) == 2
    for view, half in zip(s.views, halves, strict=True):
        with zoo.families.one_thread():  # as the build collected them: the same sums, bit for bit
            fresh = cipm.collect(s.model, s.graph, half, config=cipm.CollectConfig(progress=False))
        assert list(view) == list(fresh)
        for g in fresh:
            assert view[g].count == fresh[g].count
            assert view[g].site == fresh[g].site
            assert torch.equal(view[g].mean, fresh[g].mean)
            assert torch.equal(view[g].moments.comoment, fresh[g].moments.comoment)
            assert torch.equal(view[g].features.in_norm, fresh[g].features.in_norm)
    # merged, they are the statistics of the whole set: up to the float32 sums inside
    # collect (which add 256 or 512 samples), and in float64 exactly (1e-10) -- so the two
    # halves miss no sample and share none
    whole = cipm.collect(s.model, s.graph, s.calibration, config=cipm.CollectConfig(progress=False))
    double = copy.deepcopy(s.model).double()
    as64 = [(x.double() if x.is_floating_point() else x, y) for x, y in s.calibration]
    views64 = [
        cipm.collect(double, s.graph, h, config=cipm.CollectConfig(progress=False))
        for h in (as64[:2], as64[2:])
    ]
    whole64 = cipm.collect(double, s.graph, as64, config=cipm.CollectConfig(progress=False))
    merged64 = views64[0].merge(views64[1])
    for g in whole:
        a, b = s.views[0][g], s.views[1][g]
        assert a.count + b.count == whole[g].count
        assert not torch.allclose(a.mean, b.mean)  # two different halves of the data
        torch.testing.assert_close(s.stats[g].mean, whole[g].mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(s.stats[g].cov, whole[g].cov, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(merged64[g].mean, whole64[g].mean, rtol=0, atol=1e-10)
        torch.testing.assert_close(merged64[g].cov, whole64[g].cov, rtol=0, atol=1e-10)


def test_one_trace_serves_every_seed(specimens: dict[str, zoo.Specimen]) -> None:
    # seed 1's graph.json is the trace of seed 0 (one per architecture): it is seed 1's too
    s = specimens["mlp-digits-w8-d1-s1"]
    assert s.graph == cipm.trace(s.model, s.calibration[0][0][:2])
    assert len(s.graph.groups) == 1 and s.graph.groups[0].size == 8


def test_pairs_and_their_targets(built: dict[str, object]) -> None:
    folder: Path = built["folder"]  # type: ignore[assignment]
    found = pairs(load_zoo(folder))
    assert [(a.spec.name, b.spec.name) for a, b in found] == [
        ("mlp-digits-w8-d1-s0", "mlp-digits-w8-d1-s1"),
        ("mlp-digits-w8-d1-s0", "mlp-digits-w8-d1-s3"),
        ("mlp-digits-w8-d1-s1", "mlp-digits-w8-d1-s3"),
    ]
    for a, b in found:
        perm = pair_target(folder, a, b)
        assert isinstance(perm, cipm.Permutation) and perm.graph == a.graph
        again = cipm.align(a.model, b.model, a.graph, method="activation", data=a.calibration)
        assert perm == again
        assert not perm.is_identity()  # independently trained: their units differ in order
        x = a.calibration[0][0]
        with torch.no_grad():  # the permuted model is the same function
            torch.testing.assert_close(cipm.permute(b.model, perm)(x), b.model(x))
    a, b = found[0]
    with pytest.raises(cipm.CipmError, match=r"not a zoo pair"):
        pair_target(folder, b, a)
    t = load_zoo(folder, "heldout-family")[0]
    with pytest.raises(cipm.CipmError, match=r"not a zoo pair"):
        pair_target(folder, a, t)


def test_rebuild_is_cached_and_resumes(built: dict[str, object], tmp_path: Path) -> None:
    folder = tmp_path / "zoo"
    shutil.copytree(built["folder"], folder)  # type: ignore[arg-type]
    seen = files(folder)
    build_zoo(folder, SPECS, progress=False, heldout_widths=HELDOUT_WIDTHS)
    changed = {k for k, v in files(folder).items() if seen.get(k) != v}
    assert changed == {"index.json"}  # nothing retrained, realigned or rewritten
    # an interrupted build: one entry and one pair target never written
    gone = "mlp-digits-w8-d1-s1"
    weights = (folder / gone / "model.safetensors").read_bytes()
    target = folder / "pairs" / "mlp-digits-w8-d1-s0__mlp-digits-w8-d1-s3.safetensors"
    stored = target.read_bytes()
    shutil.rmtree(folder / gone)
    target.unlink()
    (folder / "index.json").unlink()
    with pytest.raises(cipm.CipmError, match=r"did not finish"):
        load_zoo(folder)
    seen = files(folder)
    build_zoo(folder, SPECS, progress=False, heldout_widths=HELDOUT_WIDTHS)
    now = files(folder)
    assert {k for k, v in now.items() if seen.get(k) != v} == {
        "index.json",
        "pairs",
        gone,
        *(f"{gone}/{f}" for f in (*zoo.reading.FILES, "meta.json", FOLDER_MARK)),
        str(target.relative_to(folder)),
    }
    assert (folder / gone / "model.safetensors").read_bytes() == weights  # seeded: the same
    assert target.read_bytes() == stored
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporary left


def test_split_relabelled_without_retraining(built: dict[str, object], tmp_path: Path) -> None:
    folder = tmp_path / "zoo"
    shutil.copytree(built["folder"], folder)  # type: ignore[arg-type]
    weights = (folder / "mlp-digits-w6-d1-s0" / "model.safetensors").stat().st_mtime_ns
    build_zoo(folder, SPECS, progress=False)  # width 6 no longer held out
    [s] = [s for s in load_zoo(folder, "train") if s.spec.width == 6]
    assert s.spec.name == "mlp-digits-w6-d1-s0"
    assert (folder / s.spec.name / "model.safetensors").stat().st_mtime_ns == weights


def test_missing_and_corrupt_zoos_are_refused(built: dict[str, object], tmp_path: Path) -> None:
    with pytest.raises(cipm.CipmError, match=r"no zoo at .*nowhere: there is no such folder"):
        load_zoo(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(cipm.CipmError, match=r"no zoo index .*did not finish"):
        load_zoo(tmp_path / "empty")
    folder = tmp_path / "zoo"
    shutil.copytree(built["folder"], folder)  # type: ignore[arg-type]
    name = "mlp-digits-w8-d1-s0"
    model = folder / name / "model.safetensors"
    model.write_bytes(model.read_bytes()[:100])
    with pytest.raises(cipm.CipmError, match=rf"zoo entry {name} .*model.safetensors is not"):
        load_zoo(folder)
    shutil.copy(folder / "mlp-digits-w6-d1-s0" / "model.safetensors", model)
    with pytest.raises(cipm.CipmError, match=rf"zoo entry {name} .*not a {name} model's"):
        load_zoo(folder)
    shutil.copy(folder / "mlp-digits-w8-d1-s1" / "model.safetensors", model)
    (folder / name / "stats.safetensors").unlink()
    with pytest.raises(cipm.CipmError, match=rf"zoo entry {name} .*has no stats.safetensors"):
        load_zoo(folder, "train")
    shutil.copy(folder / "mlp-digits-w8-d1-s1" / "stats.safetensors", folder / name)
    graph = folder / "transformer-seq-w8-d1-s0" / "graph.json"
    shutil.copy(graph, folder / name / "graph.json")
    with pytest.raises(cipm.CipmError, match=rf"zoo entry {name} .*graph.json is not this model"):
        load_zoo(folder, "train")
    (folder / "index.json").write_text("{not json")
    with pytest.raises(cipm.CipmError, match=r"index.json is not readable JSON"):
        load_zoo(folder)


def test_families_and_their_data() -> None:
    assert FAMILIES == ("mlp-digits", "cnn-digits", "mlp-mnist1d", "transformer-seq")
    shapes = {"mlp-digits": (64,), "cnn-digits": (1, 8, 8), "mlp-mnist1d": (40,)}
    for family in FAMILIES:
        train, test = zoo.family_data(family)
        x, y = train[0]
        assert tuple(x.shape[1:]) == shapes.get(family, (12,)) and len(x) == len(y) == 128
        assert set(torch.cat([y for _, y in train]).tolist()) == set(range(10))
        n_train, n_test = (sum(len(y) for _, y in b) for b in (train, test))
        assert abs(n_train / (n_train + n_test) - 0.8) < 0.01
        train.clear()  # a copy: the family's own batches are left alone
        assert zoo.family_data(family)[0]
    x, y = zoo.family_data("mlp-mnist1d")[0][0]
    assert abs(float(x.mean())) < 0.2 and abs(float(x.std()) - 1) < 0.2  # standardized
    with pytest.raises(cipm.CipmError, match=r"unknown zoo family 'mnist'"):
        zoo.family_data("mnist")


def test_the_sequence_class_is_the_majority_token() -> None:
    train, test = zoo.family_data("transformer-seq")
    x = torch.cat([x for x, _ in train + test])
    y = torch.cat([y for _, y in train + test])
    counts = torch.nn.functional.one_hot(x, 16).sum(1)
    top = counts.sort(1, descending=True).values
    assert torch.equal(counts.argmax(1), y)
    assert (top[:, 0] == 4).all() and (top[:, 1] < 4).all()  # no ties


def test_meta_command_line_trains_and_evaluates(
    built: dict[str, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cipm meta train` on a zoo's training split writes a network, its curve (CSV and
    PNG) that `cipm meta eval` then compares with the analytic policies."""
    from cipm.cli import main

    out = tmp_path / "meta.safetensors"
    argv = ["meta", "train", "--zoo", str(built["folder"]), "-o", str(out), "--quiet"]
    assert main([*argv, "--steps", "3", "--batch", "1", "--hidden", "8", "--layers", "1"]) == 0
    assert out.is_file() and out.with_suffix(".png").stat().st_size > 0
    rows = out.with_suffix(".csv").read_text().splitlines()
    assert rows[0].startswith("step,compression") and len(rows) == 4
    assert len(cipm.MetaAnalyzer.load(out).history.rows) == 3
    capsys.readouterr()
    assert main(["meta", "eval", str(out), "--zoo", str(built["folder"]), "--split", "train"]) == 0
    text = capsys.readouterr().out
    assert "p:learned" in text and "mlp-digits-w8-d1-s0 ~ s1" in text
    assert main(["meta", "train", "--zoo", str(built["folder"]), "-o", str(tmp_path / "x.pt")]) == 2

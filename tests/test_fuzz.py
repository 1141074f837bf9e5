"""Fuzzing the promise of issue 32: bad input to `cipm.export`, `cipm.read_policy` (and
`Policy`), the federated statistics and the command line gets a `cipm.CipmError` (the CLI:
exit code 2 and one line on stderr), never a raw ValueError, TypeError, KeyError, ...; and
the caller's model and files are never changed or lost.

Every property lets its call either succeed, checked for a sound result, or raise a
CipmError; anything else escaping fails the test with hypothesis's smallest example.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx
import pytest
import torch
from conftest import snapshot, traced
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from safetensors.torch import load_file, save_file
from torch import nn

import cipm
from cipm.cli import _parser, main
from cipm.examples import catalog
from cipm.exporting import Exporter, ExportJob, Policy
from cipm.federated import ClientUpdate, MatchConfig, aggregate_updates, split_update, update_arrays
from cipm.plugins.safetensors_export import read_safetensors_policy
from cipm.pruning import PruneReport
from cipm.statistics import CrossMoments, CrossStatistics, Moments

SCALE = int(os.environ.get("CIPM_FUZZ_SCALE", "1"))  # CIPM_FUZZ_SCALE=20: a deeper search


def fuzz(examples: int) -> settings:
    """Few examples, no deadline (a trace or an ONNX export takes a second)."""
    return settings(
        max_examples=examples * SCALE,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


# -- the models, built once ----------------------------------------------------------------
MODEL, X = catalog.build("mlp")  # 8 -> 32 -> 32 -> 32 -> 4: three hidden groups of 32
GRAPH = traced("mlp")
NAMES = [g.name for g in GRAPH]


class Other(nn.Sequential):
    """Another model whose one group shares a name with the MLP's, at another size."""

    def __init__(self) -> None:
        super().__init__(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


OTHER = Other().eval()
OTHER_GRAPH = cipm.trace(OTHER, X)
PERM = GRAPH.random_permutation(seed=0)
OTHER_PERM = OTHER_GRAPH.random_permutation(seed=0)
PRUNED = cipm.prune(
    MODEL, GRAPH, ratio=0.5, method="magnitude", config=cipm.PruneConfig(progress=False)
)


def unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    after = model.state_dict()
    return before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def files(root: Path) -> dict[str, bytes]:
    """Every file under `root` (relative path -> bytes)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def _stored_json(model: nn.Module, policy: Any) -> str:
    """The policy JSON `cipm.export` writes into a file's header."""
    with tempfile.TemporaryDirectory() as folder:
        path = cipm.export(model, Path(folder) / "m.safetensors", policy=policy)
        text = read_safetensors_policy(path)
    assert text is not None
    return text


BASES = [_stored_json(cipm.permute(MODEL, PERM), PERM), _stored_json(PRUNED.model, PRUNED.report)]


# -- 1. read_policy / Policy.from_json -----------------------------------------------------
JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),  # NaN and Infinity too: json.loads reads them
    st.text(max_size=6),
)
ANY_JSON = st.recursive(
    JSON_LEAF,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
DEEP = "\x00DEEP\x00"  # stands for a nesting too deep for json.dumps to write
INDICES = st.lists(st.integers(-3, 40), max_size=40)
JUNK_VALUE = st.one_of(
    ANY_JSON,
    st.builds(list),  # new empty ones: the mutations below change what they drew
    st.builds(dict),
    st.sampled_from([-1, 0, 2**63, 2**64, -(2**63) - 1, 10**30, 1.0, 1e308, "1", True]),
    INDICES,
    st.just(DEEP),
)


def _as_text(doc: Any, depth: int) -> str:
    text = json.dumps(doc)
    return text.replace(json.dumps(DEEP), "[" * depth + "]" * depth)


@st.composite
def mutated_policies(draw: st.DrawFn) -> str:
    """A real policy's JSON with one to four things broken."""
    doc = json.loads(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 4))):
        what = draw(st.sampled_from(["drop", "replace", "group", "units", "size", "add"]))
        groups, sizes = doc.get("groups"), doc.get("sizes")
        if what == "drop" and doc:
            doc.pop(draw(st.sampled_from(sorted(doc))))
        elif what == "replace":
            key = draw(st.sampled_from(["cipm_policy", "kind", "cipm", "model", "groups", "sizes"]))
            doc[key] = draw(JUNK_VALUE)
        elif what == "group" and isinstance(groups, dict) and groups:
            name = draw(st.sampled_from(sorted(groups)))
            if draw(st.booleans()):
                del groups[name]
            else:
                groups[draw(st.text(max_size=8))] = groups.pop(name)
        elif what == "units" and isinstance(groups, dict) and groups:
            name = draw(st.sampled_from(sorted(groups)))
            units = groups[name]
            if isinstance(units, list) and units:
                i = draw(st.integers(0, len(units) - 1))
                how = draw(st.sampled_from(["dup", "neg", "huge", "float", "cut", "rev", "set"]))
                if how == "dup":
                    units[i] = units[(i + 1) % len(units)]
                elif how == "neg":
                    units[i] = -1 - units[i] if isinstance(units[i], int) else -1
                elif how == "huge":
                    units[i] = draw(st.sampled_from([32, 2**31, 2**63, 2**64, 10**30]))
                elif how == "float":
                    units[i] = float(units[i]) if isinstance(units[i], int) else 0.5
                elif how == "cut":
                    del units[i:]
                elif how == "rev":
                    units.reverse()
                else:
                    units[i] = draw(JUNK_VALUE)
            else:
                groups[name] = draw(JUNK_VALUE)
        elif what == "size" and isinstance(sizes, dict):
            name = draw(st.sampled_from([*sorted(sizes), *NAMES, "nope"]))
            sizes[name] = draw(JUNK_VALUE | st.integers(-2, 40))
        elif what == "add":
            doc[draw(st.text(max_size=6))] = draw(JUNK_VALUE)
    return _as_text(doc, draw(st.sampled_from([3, 200, 100_000])))


def exercise(policy: Policy) -> None:
    """A policy that parsed is sound: it round-trips, and what it holds either fits a graph
    and permutes its model (which stays as it was) or is refused with a CipmError."""
    assert isinstance(policy, Policy)
    assert policy.kind in ("permutation", "pruned")
    # a size past any model would make `removed` list units until memory runs out
    assert all(1 <= n <= 2**31 for n in policy.sizes.values()), policy.sizes
    for name, units in policy.groups.items():
        assert units and all(type(i) is int for i in units), (name, units)
        if policy.kind == "permutation":
            assert sorted(units) == list(range(len(units))) and policy.sizes[name] == len(units)
        else:
            assert list(units) == sorted(set(units)) and units[0] >= 0, (name, units)
            assert name not in policy.sizes or units[-1] < policy.sizes[name]
    assert Policy.from_json(policy.to_json()) == policy
    for model, graph in ((MODEL, GRAPH), (OTHER, OTHER_GRAPH)):
        for make in (policy.permutation, policy.inverse):
            try:
                perm = make(graph)
            except cipm.CipmError:
                continue
            before = snapshot(model)
            permuted = cipm.permute(model, perm)
            assert unchanged(model, before)
            assert permuted(X).shape == model(X).shape
    for name in [*policy.groups, *NAMES, "nope"]:
        try:
            removed = policy.removed(name)
        except cipm.CipmError:
            continue
        kept = policy.groups[name]
        assert set(removed).isdisjoint(kept)
        assert sorted([*removed, *kept]) == list(range(policy.sizes[name]))


def parse(text: str | bytes) -> None:
    try:
        policy = Policy.from_json(text)
    except cipm.CipmError:
        return
    exercise(policy)


@fuzz(150)
@given(ANY_JSON)
@example({"cipm_policy": 1, "kind": "permutation", "cipm": "0", "groups": {"g": []}})
@example({"cipm_policy": 1, "kind": "pruned", "cipm": "0", "groups": {"g": [-1]}})
@example({"cipm_policy": 1, "kind": "pruned", "cipm": [], "model": {}, "groups": {}})
@example(
    {"cipm_policy": 1, "kind": "pruned", "cipm": "0", "groups": {"g": [0]}, "sizes": {"g": 10**30}}
)
def test_any_json_is_a_policy_or_a_cipm_error(doc: Any) -> None:
    parse(json.dumps(doc))


@fuzz(150)
@given(mutated_policies())
def test_a_broken_real_policy_is_a_cipm_error_or_still_sound(text: str) -> None:
    parse(text)


@fuzz(60)
@given(st.binary(max_size=64) | st.text(max_size=64))
@example(b'"\xff"')  # not UTF-8: json.loads raised UnicodeDecodeError
def test_random_bytes_are_no_policy(raw: bytes | str) -> None:
    parse(raw)


def _safetensors_with_header(header: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header


@fuzz(60)
@given(
    suffix=st.sampled_from([".safetensors", ".onnx", ".SAFETENSORS", ".txt", ""]),
    content=st.one_of(
        st.binary(max_size=80),
        mutated_policies().map(
            lambda t: _safetensors_with_header(
                json.dumps({"__metadata__": {"cipm.policy": t}}).encode()
            )
        ),
        ANY_JSON.map(lambda d: _safetensors_with_header(json.dumps(d).encode())),
        st.binary(max_size=16).map(lambda b: struct.pack("<Q", 2**64 - 1) + b),
    ),
)
def test_read_policy_of_any_file_is_a_policy_or_a_cipm_error(
    tmp_path: Path, suffix: str, content: bytes
) -> None:
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    path = folder / f"model{suffix}"
    path.write_bytes(content)
    try:
        policy = cipm.read_policy(path)
    except cipm.CipmError:
        policy = None
    if policy is not None:
        exercise(policy)
    assert files(folder) == {path.name: content}  # reading changes nothing


@pytest.mark.parametrize("path", [None, 3, b"x.onnx", ["x.onnx"], "x" * 5000 + ".onnx", "a\0.onnx"])
def test_read_policy_of_a_non_path_is_a_cipm_error(path: Any) -> None:
    with pytest.raises(cipm.CipmError):
        cipm.read_policy(path)


# -- 2. export ------------------------------------------------------------------------------
def _report(**fields: Any) -> PruneReport:
    return PruneReport(**fields)


POLICIES: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.sampled_from(
        [PERM, OTHER_PERM, PERM.inverse(), PRUNED.report, Policy.of(PERM), 5, "perm", [0, 1]]
    ),
    st.dictionaries(st.sampled_from([*NAMES, "nope", ""]), INDICES | JUNK_VALUE, max_size=3),
    st.sampled_from(
        [
            _report(),
            _report(sizes={NAMES[0]: (32, 2)}, kept={NAMES[0]: (0, 99)}),
            _report(sizes={NAMES[0]: 32}, kept={NAMES[0]: (0, 1)}),  # malformed sizes
            _report(sizes={NAMES[0]: (32, 2)}, kept={NAMES[0]: "ab"}),
        ]
    ),
    mutated_policies().map(lambda t: Policy.from_json(t) if _parses(t) else t),
)


def _parses(text: str) -> bool:
    try:
        Policy.from_json(text)
    except cipm.CipmError:
        return False
    return True


PATHS = st.sampled_from(
    ["new", "nested", "under_file", "existing_file", "foreign_dir", "empty_dir", "long", "nul"]
)
SUFFIXES = st.sampled_from([".onnx", ".safetensors", "", ".ONNX", ".txt", ".half", ".full"])
FORMATS = st.sampled_from(
    [None, "onnx", "safetensors", "huggingface", "halfway", "nope", 5, ["onnx"]]
)


def _halfway(job: ExportJob, path: Path) -> None:
    path.write_bytes(b"half a model")
    raise RuntimeError("the plugin's converter failed halfway")


def _disk_full(job: ExportJob, path: Path) -> None:
    path.write_bytes(b"x")
    raise OSError(28, "No space left on device")


class FaultyExporters:
    """A plugin whose exporters fail after writing part of the file."""

    @cipm.hookimpl
    def cipm_exporters(self) -> dict[str, Exporter]:
        return {
            "halfway": Exporter(_halfway, (".half",)),
            "disk_full": Exporter(_disk_full, (".full",)),
        }


@contextlib.contextmanager
def faulty_exporters() -> Iterator[None]:
    plugin = FaultyExporters()
    cipm.get_plugin_manager().register(plugin, name="test_fuzz_faulty")
    try:
        yield
    finally:
        cipm.get_plugin_manager().unregister(plugin)


INPUTS = st.sampled_from([X, X, None, X[:, :5], (X,), {"input": X}, "x", X.double()])


def _target(kind: str, suffix: str, folder: Path, junk: bytes) -> Path:
    (folder / "foreign.bin").write_bytes(junk)  # a file of the user's beside every target
    if kind == "nested":
        return folder / "a" / "b" / f"model{suffix}"
    if kind == "under_file":
        return folder / "foreign.bin" / f"model{suffix}"
    if kind == "existing_file":
        (folder / f"model{suffix}").write_bytes(junk)
    elif kind == "foreign_dir":
        (folder / f"model{suffix}").mkdir()
        (folder / f"model{suffix}" / "notes.txt").write_bytes(junk)
    elif kind == "empty_dir":
        (folder / f"model{suffix}").mkdir()
    elif kind == "long":
        return folder / ("m" * 300 + suffix)
    elif kind == "nul":
        return folder / f"mo\0del{suffix}"
    return folder / f"model{suffix}"


def _reads_back(path: Path, model: nn.Module, policy: Any, format_: str | None) -> None:
    """What export wrote is the model, with the policy it was given."""
    assert path.exists()
    suffix = path.suffix.lower()
    written = format_ or {".onnx": "onnx", ".safetensors": "safetensors"}.get(suffix)
    if written == "safetensors":
        state = load_file(path)
        assert state.keys() == model.state_dict().keys()
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    if written == "onnx":
        onnx.checker.check_model(str(path))
    if written not in ("onnx", "safetensors") or suffix != f".{written}":
        return  # format= named another format than the suffix: read_policy goes by suffix
    if policy is None:
        with pytest.raises(cipm.CipmError, match="holds no cipm policy"):
            cipm.read_policy(path)
    else:
        assert cipm.read_policy(path) == Policy.of(policy, type(model).__name__)


# a call that writes, and what each of its arguments can be instead
SOUND = {
    "policy": st.sampled_from([None, PERM, PRUNED.report, Policy.of(PERM), {NAMES[0]: [0, 3]}]),
    "kind": st.sampled_from(["new", "nested", "existing_file"]),
    "suffix": st.sampled_from([".safetensors", ".safetensors", ".onnx"]),  # ONNX: ~1 s each
    "format_": st.none(),
    "inputs": st.just(X),
}
BROKEN = {
    "policy": POLICIES,
    "kind": PATHS,
    "suffix": SUFFIXES,
    "format_": FORMATS,
    "inputs": INPUTS,
}


@st.composite
def export_calls(draw: st.DrawFn) -> dict[str, Any]:
    """Arguments of `cipm.export`, up to three of them drawn from what can go wrong."""
    broken = draw(st.sets(st.sampled_from(sorted(BROKEN)), max_size=3))
    return {k: draw((BROKEN if k in broken else SOUND)[k]) for k in sorted(BROKEN)}


@fuzz(40)
@given(call=export_calls(), junk=st.binary(max_size=32), permuted=st.booleans())
def test_export_writes_a_file_that_reads_back_or_raises_and_changes_nothing(
    tmp_path: Path, call: dict[str, Any], junk: bytes, permuted: bool
) -> None:
    policy, kind, suffix = call["policy"], call["kind"], call["suffix"]
    format_, inputs = call["format_"], call["inputs"]
    model = cipm.permute(MODEL, PERM) if permuted else MODEL
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    target = _target(kind, suffix, folder, junk)
    before_files, before = files(folder), snapshot(model)
    try:
        with faulty_exporters():
            written = cipm.export(model, target, inputs, policy=policy, format=format_)
    except cipm.CipmError:
        written = None
    assert unchanged(model, before)
    after = files(folder)
    event(f"export: {'written' if written else 'CipmError'}")
    if written is None:
        assert after == before_files  # nothing written, nothing lost, no temporary left
        return
    assert written == target
    _reads_back(target, model, policy, format_)
    rest = {k: v for k, v in after.items() if not Path(folder, k).is_relative_to(target)}
    assert (
        rest == {k: v for k, v in before_files.items() if k in rest}
        and rest.keys() <= before_files.keys()
    )


@pytest.mark.parametrize("format_", [["onnx"], {"onnx": 1}, 3.5])
def test_export_of_an_unhashable_format_is_a_cipm_error(tmp_path: Path, format_: Any) -> None:
    with pytest.raises(cipm.CipmError, match="format"):
        cipm.export(MODEL, tmp_path / "m.safetensors", X, format=format_)
    assert list(tmp_path.iterdir()) == []


# -- 3. federated statistics ---------------------------------------------------------------
CROSS = cipm.collect_cross(
    MODEL, cipm.permute(MODEL, PERM), GRAPH, [X, X * 2], config=cipm.CollectConfig(progress=False)
)
ARRAYS = update_arrays(MODEL, CROSS)
PREFIX = "cipm.statistics/"
FIELDS = ("count", "mean_a", "comoment_a", "mean_b", "comoment_b", "cross")
NUMBERS = st.one_of(
    st.integers(-3, 5), st.floats(allow_nan=True, allow_infinity=True), st.just(2**62)
)


@st.composite
def tensors(draw: st.DrawFn, n: int = 32) -> Any:
    """Tensors of the right shape or not, finite or not, of any dtype; and non-tensors."""
    shape = draw(st.sampled_from([(), (n,), (n, n), (n - 1,), (n, n - 1), (0,), (n, n, 1), (1, n)]))
    dtype = draw(
        st.sampled_from([torch.float64, torch.float32, torch.int64, torch.bool, torch.complex64])
    )
    fill = draw(NUMBERS)
    try:
        value = torch.full(shape, fill, dtype=dtype)
    except (RuntimeError, OverflowError, TypeError, ValueError):
        value = torch.zeros(shape, dtype=dtype)
    how = draw(st.sampled_from(["plain", "random", "sparse", "meta", "python", "junk"]))
    if how == "random" and dtype.is_floating_point:
        seed = torch.Generator().manual_seed(draw(st.integers(0, 99)))
        value = torch.randn(shape, dtype=dtype, generator=seed)
        if value.numel() and draw(st.booleans()):
            value.view(-1)[0] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    elif how == "sparse" and value.dim():
        value = value.to_sparse()
    elif how == "meta":
        value = value.to("meta")
    elif how == "python":
        return value.tolist()
    elif how == "junk":
        return draw(JSON_LEAF)
    return value


@st.composite
def client_arrays(draw: st.DrawFn) -> dict[Any, Any]:
    arrays: dict[Any, Any] = dict(ARRAYS)
    for _ in range(draw(st.integers(1, 4))):
        group = draw(st.sampled_from([*NAMES, "nope", "", "0:hidden/x"]))
        field = draw(st.sampled_from([*FIELDS, "extra"]))
        key = f"{PREFIX}{group}/{field}"
        what = draw(st.sampled_from(["drop", "tensor", "count", "key"]))
        if what == "drop":
            arrays.pop(key, None)
        elif what == "tensor":
            arrays[key] = draw(tensors())
        elif what == "count":
            arrays[f"{PREFIX}{group}/count"] = draw(
                st.one_of(
                    NUMBERS.map(torch.tensor),
                    st.sampled_from(
                        [torch.tensor([3, 4]), torch.tensor(True), torch.tensor(2 + 0j)]
                    ),
                    NUMBERS,
                    st.just(None),
                    st.just("7"),
                )
            )
        else:
            arrays[draw(st.sampled_from([3, None, PREFIX, f"{PREFIX}/count", "0.weight"]))] = draw(
                tensors()
            )
    return arrays


def sound(stats: CrossStatistics, graph: cipm.SymmetryGraph = GRAPH) -> None:
    """Statistics a client could have sent: every group's moments finite, of its size."""
    assert isinstance(stats, CrossStatistics) and set(stats) == {g.name for g in graph}
    for g in graph:
        m = stats[g.name]
        assert m.a.count == m.b.count and isinstance(m.a.count, int) and m.a.count >= 1
        for t, shape in (
            (m.a.mean, (g.size,)),
            (m.b.comoment, (g.size, g.size)),
            (m.cross, (g.size, g.size)),
        ):
            assert t.shape == shape and bool(torch.isfinite(t).all())


@fuzz(150)
@given(client_arrays())
def test_split_update_gives_sound_statistics_or_a_cipm_error(arrays: dict[Any, Any]) -> None:
    given_arrays = dict(arrays)
    try:
        state, stats = split_update(arrays, GRAPH)
    except cipm.CipmError:
        return
    # the caller's mapping is left as it was
    assert arrays.keys() == given_arrays.keys() and all(
        arrays[k] is v for k, v in given_arrays.items()
    )
    assert all(not str(k).startswith(PREFIX) for k in state)
    if stats is not None:
        sound(stats)
        sound(stats.merge(stats))


@fuzz(30)
@given(
    st.sampled_from([None, 3, [1], "x", {"a": 1}, {3: torch.zeros(1)}]),
    st.sampled_from([GRAPH, None, "g"]),
)
def test_split_update_of_junk_is_a_cipm_error(arrays: Any, graph: Any) -> None:
    with contextlib.suppress(cipm.CipmError):
        split_update(arrays, graph)


MOMENT_COUNTS = st.one_of(
    st.integers(-2, 3), st.just(2**40), st.floats(), st.sampled_from([True, None, "3"])
)


def _sound(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@st.composite
def moment_parts(draw: st.DrawFn, n: int = 3) -> tuple[Any, Any, Any]:
    """What a `Moments` is made of: a count, a mean and a co-moment; one or two broken."""
    broken = draw(st.sets(st.sampled_from(["count", "mean", "comoment"]), max_size=2))
    seed = draw(st.integers(0, 99))
    count = draw(MOMENT_COUNTS if "count" in broken else st.integers(1, 10**6))
    mean = draw(tensors(n)) if "mean" in broken else _sound((n,), seed)
    comoment = draw(tensors(n)) if "comoment" in broken else _sound((n, n), seed + 1)
    return count, mean, comoment


def _moments(count: Any, mean: Any, comoment: Any) -> Moments:
    m = Moments(count, mean, comoment)
    assert isinstance(m.count, int) and m.count >= 1 and m.mean.shape == (len(m.mean),)
    assert m.comoment.shape == (len(m.mean), len(m.mean))
    return m


@fuzz(150)
@given(moment_parts(), moment_parts(), st.booleans(), st.data())
@example(
    (0, torch.zeros(3), torch.zeros(3, 3)), (0, torch.zeros(3), torch.zeros(3, 3)), False, None
)
def test_merging_moments_is_sound_or_a_cipm_error(
    a: tuple[Any, Any, Any], b: tuple[Any, Any, Any], cross: bool, data: st.DataObject | None
) -> None:
    with contextlib.suppress(cipm.CipmError):
        ma, mb = _moments(*a), _moments(*b)
        if not cross:
            merged = ma.merge(mb)
            assert merged.count == ma.count + mb.count and merged.mean.shape == ma.mean.shape
            return
        assert data is not None
        shape = (len(ma.mean), len(mb.mean))
        one = CrossMoments(ma, mb, data.draw(tensors(3) | st.just(_sound(shape, 0))))
        other = CrossMoments(mb, ma, data.draw(tensors(3) | st.just(_sound(shape[::-1], 1))))
        merged = one.merge(other)
        assert merged.cross.shape == shape and merged.a.count == ma.count + mb.count


def _nan_cross(name: str) -> CrossMoments:
    m = CROSS[name]
    return CrossMoments(m.a, m.b, torch.full_like(m.cross, math.nan))


@fuzz(100)
@given(
    st.dictionaries(
        st.sampled_from([*NAMES, "nope", ""]),
        st.sampled_from(["same", "other group", "nan", "small", "junk"]),
        max_size=4,
    ),
    st.sampled_from(["self", "collected", "none", "junk"]),
)
def test_cross_statistics_of_any_groups_are_sound_or_a_cipm_error(
    groups: dict[str, str], other: str
) -> None:
    small = CrossMoments(
        *(Moments(2, _sound((3,), i), _sound((3, 3), i)) for i in (0, 1)), _sound((3, 3), 2)
    )
    values = {
        name: {
            "same": lambda n: CROSS[n] if n in NAMES else small,
            "other group": lambda n: CROSS[
                NAMES[(NAMES.index(n) + 1) % 3] if n in NAMES else NAMES[0]
            ],
            "nan": lambda n: _nan_cross(n if n in NAMES else NAMES[0]),
            "small": lambda n: small,
            "junk": lambda n: "junk",
        }[how](name)
        for name, how in groups.items()
    }
    with contextlib.suppress(cipm.CipmError):
        stats = CrossStatistics(GRAPH, values)
        sound(stats)
        partner = {"self": stats, "collected": CROSS, "none": None, "junk": values}[other]
        sound(stats.merge(partner))


@fuzz(60)
@given(
    st.sampled_from([*NAMES, "nope", 3, None, ("a",)]),
    st.sampled_from([CROSS, "junk", None, {}, {NAMES[0]: CROSS[NAMES[0]]}]),
)
def test_statistics_by_group_are_read_or_a_cipm_error(name: Any, other: Any) -> None:
    with contextlib.suppress(cipm.CipmError):
        assert CROSS[name] is CROSS.get(name)
        sound(CROSS.merge(other))
    got = CROSS.get(name, "none")
    assert got == "none" if isinstance(got, str) else any(got is v for v in CROSS.values())
    assert (name in CROSS) == (name in NAMES)


@fuzz(20)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["ok", "missing", "shape", "junk", "nan"]),
            st.one_of(NUMBERS, st.sampled_from(["3", None])),
            st.sampled_from(["none", "ok", "other", "junk"]),
        ),
        min_size=1,
        max_size=3,
    ),
    st.sampled_from(["weight", "activation"]),
)
def test_aggregate_updates_is_a_state_or_a_cipm_error(updates: list[Any], method: str) -> None:
    template, before = MODEL, snapshot(MODEL)
    state = MODEL.state_dict()
    made = []
    for kind, count, stats in updates:
        s: Any = dict(state)
        if kind == "missing":
            s.pop("0.weight")
        elif kind == "shape":
            s["0.weight"] = torch.zeros(3, 3)
        elif kind == "junk":
            s = {"0.weight": "abc"}
        elif kind == "nan":
            s["0.weight"] = torch.full_like(state["0.weight"], math.nan)
        statistics = {"none": None, "ok": CROSS, "other": OTHER_GRAPH, "junk": "stats"}[stats]
        made.append(ClientUpdate(s, count, statistics))  # type: ignore[arg-type]
    try:
        out = aggregate_updates(template, GRAPH, state, made, config=MatchConfig(method=method))
    except cipm.CipmError:
        pass
    else:
        assert out.keys() == state.keys()
        assert all(out[k].shape == v.shape for k, v in state.items())
    assert unchanged(MODEL, before)


# -- 4. the command line ----------------------------------------------------------------------
def build_mlp() -> nn.Module:
    """A --factory for the fuzz."""
    return catalog.mlp()[0]


def build_raises() -> nn.Module:
    raise ValueError("a factory of the user's that fails")


def build_int() -> int:
    return 3


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


PARSER = _parser()
SKIPPED = {"meta zoo", "meta train"}  # they train models for minutes
COMMANDS = {
    name: sub
    for top, parser in _subcommands(PARSER).items()
    for name, sub in (
        {f"{top} {verb}": p for verb, p in _subcommands(parser).items()}
        if _subcommands(parser)
        else {top: parser}
    ).items()
    if name not in SKIPPED
}

# what the fuzz makes in each run's folder (paths are relative: the run's cwd is that folder)
MODEL_FILES = [
    "model.pt", "weights.safetensors", "weights.pt", "model.pt2", "garbage.bin", "empty.pt",
    "tensor.pt", "folder", "missing.pt", "mlp", "no-such-model", "",
]  # fmt: skip
INPUT_FILES = [
    "x.pt", "ids.pt", "garbage.pt", "empty.pt", "tensor.pt", "missing.pt", "model.pt",
    "intx.pt", "emptyx.pt",
]  # fmt: skip
# shapes past what a tensor can have (never one that fits: 100000,100000 would allocate 40 GB)
OVERFLOWING = ["99999999999999,99999999999999", "99999999999999999999999"]
OUTPUTS = [
    "out.pt", "out.pt2", "out.onnx", "out.safetensors", "outdir", "emptydir", "folder",
    "garbage.bin", "model.pt", "sub/deeper/out.pt", "garbage.bin/out.pt", ".",
    "o" * 300 + ".pt", "out.txt",
]  # fmt: skip
SHAPES = st.one_of(
    st.lists(st.integers(-1, 9), min_size=1, max_size=4).map(lambda d: ",".join(map(str, d))),
    st.sampled_from(["4,8", "4,8", "2,8", "8", "a,b", "", "4,8,", "4.5,8", *OVERFLOWING]),
)
VALUES: dict[str, st.SearchStrategy[str]] = {
    "model": st.sampled_from(MODEL_FILES),
    "network": st.sampled_from(["pretrained", "weights.safetensors", "garbage.bin", "missing"]),
    "input": SHAPES | st.sampled_from(INPUT_FILES),
    "factory": st.sampled_from(
        [
            "test_fuzz:build_mlp",
            "test_fuzz:build_raises",
            "test_fuzz:build_int",
            "test_fuzz:nothing",
            "no_such_module_cipm:f",
            "nocolon",
            ":",
            "os.path:join",
        ]
    ),
    "output": st.sampled_from(OUTPUTS),
    "json": st.sampled_from(["graph.json", "folder", "sub/g.json", "garbage.bin/g.json"]),
    "ratio": st.one_of(
        st.floats(-1, 2).map(str), st.sampled_from(["0.5", "nan", "inf", "-0", "x", "1e-300"])
    ),
    "size": st.tuples(
        st.sampled_from([*NAMES, "nope", "", "a=b"]),
        st.sampled_from(["1", "0", "16", "32", "99", "x", "-1"]),
    ).map("=".join),
    "method": st.sampled_from(["magnitude", "fold", "activation", "learned", "nope", ""]),
    "data": st.sampled_from(
        [
            "data.pt",
            "batches.pt",
            "garbage.pt",
            "empty.pt",
            "nan.pt",
            "x.pt",
            "model.pt",
            "intx.pt",
            "emptyx.pt",
        ]
    ),
    "batch": st.sampled_from(["1", "3", "64", "0", "-2", "x"]),
    "format": st.sampled_from(["onnx", "safetensors", "huggingface", "nope"]),
    "block": st.sampled_from(["torch_layers", "onnx_exporter", "nosuch", ""]),
    "zoo": st.sampled_from(["folder", "missing", "garbage.bin", "emptydir"]),
    "split": st.sampled_from(["train", "test", "nope"]),
}
FALLBACK = st.text(max_size=8)  # an option a later cipm adds: junk still must not crash


PICKLED = {"model": "model.pt", "unsafe_pickle": True, "input": "4,8"}
WEIGHTS = {"model": "weights.safetensors", "factory": "test_fuzz:build_mlp", "input": "x.pt"}
ARCHIVE = {"model": "model.pt2", "input": "4,8"}
# command lines that work, for the fuzz to start from and break one or two things of
TEMPLATES: dict[str, list[dict[str, Any]]] = {
    "inspect": [{"model": "mlp"}, PICKLED, WEIGHTS, {**ARCHIVE, "json": "graph.json"}],
    "canonicalize": [
        {"model": "mlp", "output": "out.safetensors"},
        {**PICKLED, "output": "out.pt"},
        {**WEIGHTS, "output": "outdir"},
        {**ARCHIVE, "output": "out.pt2"},
        {**PICKLED, "output": "out.onnx"},
    ],
    "prune": [
        {"model": "mlp", "ratio": "0.5", "output": "out.safetensors"},
        {**PICKLED, "ratio": "0.25", "data": "data.pt", "output": "out.pt"},
        {**ARCHIVE, "ratio": "0.5", "data": "data.pt", "output": "out.pt2"},
        {**WEIGHTS, "size": [f"{NAMES[0]}=16"], "method": "magnitude", "output": "out.onnx"},
    ],
    "export": [
        {"model": "mlp", "output": "out.safetensors"},
        {**ARCHIVE, "output": "out.onnx"},
        {**WEIGHTS, "output": "out.safetensors", "format": "safetensors"},
    ],
    "plugins": [{}, {"block": ["torch_layers"]}],
    "meta eval": [{"network": "pretrained", "zoo": "missing"}],
}


def _value(action: argparse.Action, draw: st.DrawFn) -> Any:
    if action.nargs == 0:
        return True
    value = draw(VALUES.get(action.dest, FALLBACK))
    return [value] if isinstance(action, argparse._AppendAction) else value


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    """A command line of a real subcommand: a working one with one to three things changed,
    or one drawn whole."""
    name = draw(st.sampled_from(sorted(COMMANDS)))
    actions = {
        a.dest: a for a in COMMANDS[name]._actions if not isinstance(a, argparse._HelpAction)
    }
    templates = TEMPLATES.get(name, [])
    if templates and draw(st.integers(0, 3)):
        chosen = dict(draw(st.sampled_from(templates)))
        changes = draw(st.integers(0, 3))
    else:
        chosen = {
            dest: _value(a, draw)
            for dest, a in actions.items()
            if a.required or not a.option_strings or draw(st.integers(0, 2)) == 0
        }
        changes = 0
    for _ in range(changes):
        dest = draw(st.sampled_from(sorted(actions)))
        if dest in chosen and draw(st.integers(0, 2)) == 0:
            del chosen[dest]  # a required one too: argparse says so
        elif isinstance(actions[dest], argparse._AppendAction) and dest in chosen:
            chosen[dest] = [*chosen[dest], *_value(actions[dest], draw)]
        else:
            chosen[dest] = _value(actions[dest], draw)
    argv = name.split()
    for dest, value in chosen.items():
        action = actions[dest]
        if not action.option_strings:
            argv.append(value)
            continue
        for item in value if isinstance(value, list) else [value]:
            flag = draw(st.sampled_from(action.option_strings))
            argv += [flag] if item is True else [flag, item]
    if draw(st.integers(0, 9)) == 0:  # an unknown option, or one without its value
        argv.append(draw(st.sampled_from(["--nope", "-o", "--input", "--help"])))
    return argv


def _assets(folder: Path, junk: bytes) -> None:
    torch.save(MODEL, folder / "model.pt")
    save_file(MODEL.state_dict(), folder / "weights.safetensors")
    torch.save(MODEL.state_dict(), folder / "weights.pt")
    (folder / "model.pt2").write_bytes(PT2)
    (folder / "garbage.bin").write_bytes(junk)
    (folder / "garbage.pt").write_bytes(junk)
    (folder / "empty.pt").write_bytes(b"")
    torch.save(torch.tensor(3.0), folder / "tensor.pt")
    torch.save(X, folder / "x.pt")
    torch.save(torch.randint(0, 5, (4, 8)), folder / "intx.pt")
    torch.save(torch.randn(0, 8), folder / "emptyx.pt")
    torch.save({"input": X}, folder / "ids.pt")
    torch.save(torch.randn(16, 8), folder / "data.pt")
    torch.save([X, X], folder / "batches.pt")
    torch.save(torch.full((16, 8), math.nan), folder / "nan.pt")
    (folder / "folder").mkdir()
    (folder / "folder" / "notes.txt").write_bytes(junk)
    (folder / "emptydir").mkdir()


def _pt2() -> bytes:
    with tempfile.TemporaryDirectory() as d:
        torch.export.save(torch.export.export(MODEL, (X,)), Path(d) / "m.pt2")
        return (Path(d) / "m.pt2").read_bytes()


PT2 = _pt2()


def _outputs(argv: list[str]) -> set[str]:
    """The paths a command line may write: what follows -o/--output/--json."""
    return {b for a, b in itertools.pairwise(argv) if a in ("-o", "--output", "--json")}


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


@fuzz(30)
@given(argv=command_lines(), junk=st.binary(max_size=64))
def test_the_cli_exits_0_or_2_with_one_line_and_keeps_every_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], junk: bytes
) -> None:
    run(tmp_path, capsys, argv, junk)


def run(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], junk: bytes) -> None:
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    _assets(folder, junk)
    before = files(folder)
    outside = sorted(os.listdir(tmp_path))
    capsys.readouterr()
    with _cwd(folder):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse: usage errors exit 2, --help 0
            rc, parsed = e.code, False
        else:
            parsed = True
    _, err = capsys.readouterr()
    if currently_in_test_context():  # a hypothesis example, not a plain regression test
        event(f"{argv[0]}: exit {rc}" + ("" if parsed else " (argparse)"))
    assert rc in (0, 2), (argv, rc, err)
    assert "Traceback" not in err, (argv, err)
    if rc == 2 and parsed:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("cipm: error: "), (argv, err)
    assert sorted(os.listdir(tmp_path)) == outside  # nothing written beside the run's folder
    written = {str(Path(p)) for p in _outputs(argv)}
    after = files(folder)
    for name, content in before.items():
        if name in written or (rc == 0 and any(Path(name).is_relative_to(w) for w in written)):
            continue
        assert after.get(name) == content, (argv, name)


# -- CLI bugs the fuzz found --------------------------------------------------------------
# Each was a raw exception: the fuzz draws these lines too; here they are run every time.
FOUND_CLI_BUGS = {
    # example_input: torch.randn(*shape) raised RuntimeError (storage size overflow) or
    # TypeError (a dim past int64)
    "overflowing --input shape": ["inspect", "mlp", "--input", OVERFLOWING[0]],
    "--input dim past int64": ["inspect", "mlp", "--input", OVERFLOWING[1]],
    # inspect's float64 check: the model goes to float64, an integer input stays integer
    "integer --input tensor": ["inspect", "model.pt", "--unsafe-pickle", "--input", "intx.pt"],
    # the same check on an input of 0 samples: (a - b).abs().max() of an empty output
    "empty --input tensor": ["inspect", "model.pt", "--unsafe-pickle", "--input", "emptyx.pt"],
}


@pytest.mark.parametrize("argv", list(FOUND_CLI_BUGS.values()), ids=list(FOUND_CLI_BUGS))
def test_cli_bugs_the_fuzz_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    run(tmp_path, capsys, argv, b"")

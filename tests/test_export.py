"""Exporters: ONNX checked in onnxruntime, safetensors, policies, atomic writes, plugins, CLI.

ONNX outputs are compared with torch's on inputs of a batch size the export never saw, to
within `cipm.exporting.check.TOLERANCE` (float32: 1e-4 times the output's largest magnitude,
at least 1e-4).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from conftest import assert_state_equal, traced
from safetensors.torch import load_file
from torch import nn

import cipm
from cipm.cli import main
from cipm.examples import catalog
from cipm.exporting import Exporter, ExportJob, Policy
from cipm.pruning import prune_plan

ZOO = ["mlp", "cnn_bn", "resnet20", "transformer_pre_norm"]


def ort_outputs(path: Path, *inputs: torch.Tensor) -> list[np.ndarray]:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return session.run(None, {n: x.numpy() for n, x in zip(names, inputs, strict=True)})


def assert_runs_like(model: nn.Module, path: Path, x: torch.Tensor) -> None:
    """onnxruntime on a batch of 5 new samples (the export saw another size) agrees with
    torch to float32 precision, and onnx's checker accepts the file."""
    onnx.checker.check_model(str(path))
    fresh = torch.randn(5, *x.shape[1:], generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = model(fresh)
    (got,) = ort_outputs(path, fresh)
    scale = max(1.0, float(expected.abs().max()))
    np.testing.assert_allclose(got, expected.numpy(), rtol=0, atol=1e-4 * scale)


def only(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


@pytest.mark.parametrize("name", ZOO)
def test_permuted_zoo_model_runs_in_onnxruntime_and_keeps_its_policy(
    name: str, tmp_path: Path
) -> None:
    model, x = catalog.build(name)
    graph = traced(name)
    perm = cipm.Permutation.random(graph, seed=3)
    permuted = cipm.permute(model, perm)
    path = cipm.export(permuted, tmp_path / "model.onnx", x, policy=perm)
    assert_runs_like(permuted, path, x)
    assert_runs_like(model, path, x)  # the same function as the original
    assert only(tmp_path) == ["model.onnx"]  # no temporary left
    policy = cipm.read_policy(path)
    assert policy.kind == "permutation" and policy.version == cipm.__version__
    assert policy.permutation(graph) == perm
    assert_state_equal(cipm.permute(permuted, policy.inverse(graph)), model)
    meta = onnxruntime.InferenceSession(str(path)).get_modelmeta().custom_metadata_map
    assert Policy.from_json(meta["cipm.policy"]) == policy


@pytest.mark.parametrize("name", ZOO)
def test_pruned_zoo_model_runs_in_onnxruntime(name: str, tmp_path: Path) -> None:
    model, x = catalog.build(name)
    graph = traced(name)
    plans = prune_plan(model, graph, ratio=0.5, method="magnitude")
    pruned = cipm.prune(model, graph, ratio=0.5, method="magnitude")
    small = pruned.model
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    path = cipm.export(small, tmp_path / "small.onnx", x, policy=pruned.report)
    assert_runs_like(small, path, x)
    policy = cipm.read_policy(path)
    assert policy.kind == "pruned"
    assert {k: list(v) for k, v in policy.groups.items()} == {
        k: p.keep.tolist() for k, p in plans.items()
    }
    group = next(iter(plans))
    assert len(policy.removed(group)) == graph[group].size - len(plans[group].keep)
    if name == "mlp":  # the policy names the units the small model has: its first layer's rows
        assert torch.equal(small[0].weight, model[0].weight[list(policy.groups[group])])


def test_a_pruning_report_never_rides_on_the_model(tmp_path: Path) -> None:
    """The report travels with the result, not the model: a pruned model permuted afterwards
    exports without a policy unless given one, never with the stale kept units."""
    model, x = catalog.build("mlp")
    graph = traced("mlp")
    pruned = cipm.prune(model, graph, ratio=0.5, method="magnitude")
    small_graph = cipm.trace(pruned.model, x)
    permuted = cipm.permute(pruned.model, small_graph.random_permutation(seed=0))
    assert not any(name.startswith("_cipm") for name in vars(pruned.model))
    path = cipm.export(permuted, tmp_path / "permuted.safetensors")
    with pytest.raises(cipm.CipmError, match="holds no cipm policy"):
        cipm.read_policy(path)
    with_report = cipm.export(pruned.model, tmp_path / "small.safetensors", policy=pruned.report)
    assert dict(cipm.read_policy(with_report).groups) == dict(pruned.report.kept)


def test_safetensors_holds_the_same_tensors_and_the_policy(tmp_path: Path) -> None:
    model, _ = catalog.build("cnn_bn")
    graph = traced("cnn_bn")
    perm = cipm.Permutation.random(graph, seed=1)
    permuted = cipm.permute(model, perm)
    path = cipm.export(permuted, tmp_path / "w.safetensors", policy=perm)
    state = load_file(path)
    expected = permuted.state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k]) for k in state)
    assert cipm.read_policy(path).permutation(graph) == perm


def test_safetensors_of_tied_weights_keeps_every_name(tmp_path: Path) -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(10, 4)
            self.head = nn.Linear(4, 10, bias=False)
            self.head.weight = self.embed.weight

    model = Tied()
    state = load_file(cipm.export(model, tmp_path / "tied.safetensors"))
    assert torch.equal(state["embed.weight"], state["head.weight"])
    assert sorted(state) == ["embed.weight", "head.weight"]
    with pytest.raises(cipm.CipmError, match="no cipm policy"):
        cipm.read_policy(tmp_path / "tied.safetensors")


class Eigh(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.eigh(x @ x.mT)[0]


def test_a_model_onnx_cannot_export_names_the_op_and_leaves_the_file(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old contents")
    with pytest.raises(cipm.CipmError, match=r"aten\._linalg_eigh.*safetensors"):
        cipm.export(Eigh(), target, torch.randn(2, 3, 3))
    assert target.read_bytes() == b"old contents" and only(tmp_path) == ["model.onnx"]


def test_a_failing_exporter_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    def half_then_fail(job: ExportJob, path: Path) -> None:
        path.write_bytes(b"half a file")
        raise RuntimeError("disk on fire")

    plugin = ExporterPlugin({"broken": Exporter(write=half_then_fail, suffixes=(".broken",))})
    target = tmp_path / "m.broken"
    target.write_bytes(b"old")
    with registered(plugin), pytest.raises(cipm.CipmError, match=r"'broken' exporter failed.*fire"):
        cipm.export(nn.Linear(2, 2), target)
    assert target.read_bytes() == b"old" and only(tmp_path) == ["m.broken"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"path": "m.xyz"}, r"no exporter writes suffix '\.xyz'"),
        ({"path": "m.onnx", "format": "nosuch"}, "no exporter for format 'nosuch'"),
        ({"path": "folder"}, "no exporter writes a folder for a Linear"),
        ({"path": "m.onnx"}, "give example_inputs"),
        ({"path": "m.safetensors", "policy": [1, 2]}, "policy= takes a cipm.Permutation"),
        ({"path": "m.safetensors", "policy": {"g": [2, 1]}}, "increasing and distinct"),
        ({"path": "m", "format": "huggingface"}, "cannot hold a Linear"),
    ],
)
def test_bad_requests_are_cipm_errors(kwargs: dict[str, Any], message: str, tmp_path: Path) -> None:
    path = tmp_path / kwargs.pop("path")
    with pytest.raises(cipm.CipmError, match=message):
        cipm.export(nn.Linear(2, 2), path, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_path_is_a_cipm_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(cipm.CipmError, match="cannot write"):
        cipm.export(nn.Linear(2, 2), tmp_path / "file" / "m.safetensors")
    with pytest.raises(cipm.CipmError, match="is a folder"):
        cipm.export(nn.Linear(2, 2), tmp_path, format="safetensors")


def test_policy_json_is_checked() -> None:
    with pytest.raises(cipm.CipmError, match="not JSON"):
        Policy.from_json("{")
    with pytest.raises(cipm.CipmError, match="not a cipm policy"):
        Policy.from_json('{"kind": "pruned"}')
    with pytest.raises(cipm.CipmError, match="format 99"):
        Policy.from_json('{"cipm_policy": 99}')
    with pytest.raises(cipm.CipmError, match="not a permutation"):
        Policy("permutation", {"g": (0, 0)}, "0.1.0")
    graph = traced("mlp")
    pruned = Policy.of({graph.groups[0].name: [0, 2]})
    with pytest.raises(cipm.CipmError, match="not a permutation"):
        pruned.permutation(graph)
    assert Policy.from_json(pruned.to_json()) == pruned


# -- plugins -------------------------------------------------------------------------------
class ExporterPlugin:
    """A third-party exporter plugin, registered in-process."""

    def __init__(self, table: dict[str, Exporter]) -> None:
        self.table = table

    @cipm.hookimpl
    def cipm_exporters(self) -> dict[str, Exporter]:
        return self.table


class registered:
    def __init__(self, plugin: object) -> None:
        self.plugin = plugin

    def __enter__(self) -> None:
        cipm.get_plugin_manager().register(self.plugin, name="test_exporter")

    def __exit__(self, *exc: object) -> None:
        cipm.get_plugin_manager().unregister(self.plugin)


def write_text_format(job: ExportJob, path: Path) -> None:
    count = sum(p.numel() for p in job.model.parameters())
    policy = job.policy.to_json() if job.policy else ""
    path.write_text(f"{count}\n{policy}\n")


def read_text_policy(path: Path) -> str | None:
    return path.read_text().splitlines()[1] or None


TEXT = Exporter(write_text_format, (".params",), read_policy=read_text_policy)


def test_an_in_process_exporter_plugin_is_used_and_can_leave(tmp_path: Path) -> None:
    model, _ = catalog.build("mlp")
    perm = cipm.Permutation.random(traced("mlp"), seed=0)
    with registered(ExporterPlugin({"params": TEXT})):
        assert "params" in cipm.exporters()
        path = cipm.export(model, tmp_path / "m.params", policy=perm)
        assert path.read_text().split()[0] == str(sum(p.numel() for p in model.parameters()))
        assert cipm.read_policy(path).permutation(traced("mlp")) == perm
    assert "params" not in cipm.exporters()
    with pytest.raises(cipm.CipmError, match="params"):
        cipm.export(model, tmp_path / "n.params")


def test_a_second_onnx_exporter_is_reported() -> None:
    with registered(ExporterPlugin({"onnx": TEXT})), warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        table = cipm.exporters()
    assert table["onnx"] is TEXT  # registered last, called first
    assert any("both give a exporter for 'onnx'" in str(m.message) for m in w)


def test_a_malformed_exporter_plugin_is_a_plugin_error() -> None:
    with (
        registered(ExporterPlugin({"bad": "not an exporter"})),  # type: ignore[dict-item]
        pytest.raises(cipm.PluginError, match="exporter for 'bad'"),
    ):
        cipm.exporters()


ENTRY_POINT_PLUGIN = """
from pathlib import Path
import cipm
from cipm.exporting import Exporter

def write(job, path):
    policy = job.policy.to_json() if job.policy else ""
    Path(path).write_text(f"{type(job.model).__name__}\\n{policy}\\n")

def read(path):
    return path.read_text().splitlines()[1]

@cipm.hookimpl
def cipm_exporters():
    return {"names": Exporter(write, (".names",), read_policy=read)}
"""


def test_an_entry_point_exporter_plugin_loads_in_a_new_process(tmp_path: Path) -> None:
    (tmp_path / "names_exporter.py").write_text(ENTRY_POINT_PLUGIN)
    info = tmp_path / "names_exporter-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: names-exporter\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[cipm]\nnames = names_exporter\n")
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(tmp_path)!r})
        import cipm
        from cipm.examples import catalog
        model, x = catalog.build("mlp")
        graph = cipm.trace(model, x)
        perm = cipm.Permutation.random(graph, seed=2)
        cipm.export(model, {str(tmp_path / "m.names")!r}, policy=perm)
        policy = cipm.read_policy({str(tmp_path / "m.names")!r})
        print(sorted(cipm.exporters()), policy.permutation(graph) == perm)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("]")[0].count("'names'") == 1 and out.stdout.strip().endswith("True")
    assert (tmp_path / "m.names").read_text().startswith("Sequential")


# -- command line --------------------------------------------------------------------------
def test_cli_export_writes_onnx_and_safetensors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, x = catalog.build("cnn_bn")
    assert main(["export", "cnn_bn", "-o", str(tmp_path / "m.onnx")]) == 0
    assert_runs_like(model, tmp_path / "m.onnx", x)
    assert main(["export", "cnn_bn", "-o", str(tmp_path / "w.safetensors")]) == 0
    state = load_file(tmp_path / "w.safetensors")
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert main(["export", "cnn_bn", "-o", str(tmp_path / "m.xyz")]) == 2
    assert "no exporter writes suffix '.xyz'" in capsys.readouterr().err
    assert main(["export", "cnn_bn", "--format", "nosuch", "-o", str(tmp_path / "m")]) == 2
    assert "installed formats are" in capsys.readouterr().err


def test_cli_prune_and_canonicalize_write_export_formats(tmp_path: Path) -> None:
    model, x = catalog.build("mlp")
    small = tmp_path / "small.onnx"
    argv = ["prune", "mlp", "--ratio", "0.5", "--method", "magnitude", "-o", str(small)]
    assert main(argv) == 0
    session = onnxruntime.InferenceSession(str(small))
    assert session.run(None, {session.get_inputs()[0].name: x.numpy()})[0].shape == (4, 4)
    weights = [i for i in onnx.load(str(small)).graph.initializer if len(i.dims) == 2]
    assert max(max(i.dims) for i in weights) == 16  # 32 hidden units each, half pruned
    canon = tmp_path / "canon.safetensors"
    assert main(["canonicalize", "mlp", "-o", str(canon)]) == 0
    policy = cipm.read_policy(canon)
    assert policy.permutation(traced("mlp")) == cipm.canonical_permutation(model, traced("mlp"))
    assert main(["canonicalize", "mlp", "-o", str(tmp_path / "canon.pt2")]) == 0  # as before
    assert torch.export.load(tmp_path / "canon.pt2") is not None

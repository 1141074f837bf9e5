"""The command line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

import cipm
from cipm.cli import main
from cipm.testing import zoo


def test_inspect_prints_groups_and_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "graph.json"
    assert main(["inspect", "resnet20", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "SymmetryGraph of ResNet: 12 groups" in text
    err = float(text.split("float64 = ")[1].split()[0])
    assert err < 1e-9
    assert len(json.loads(out.read_text())["groups"]) == 12


def test_plugins_lists_and_blocks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--block", "torch_layers"]) == 0
    names = capsys.readouterr().out.split()
    assert "torch_shapes" in names and "torch_layers" not in names


def test_unknown_model_is_a_usage_error() -> None:
    with pytest.raises(SystemExit):
        main(["inspect", "no-such-model"])


def test_written_files_get_ordinary_permissions(tmp_path: Path) -> None:
    import os

    from cipm.io import write_text_atomic

    target = tmp_path / "note.json"
    write_text_atomic(target, "{}")
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert target.read_text() == "{}" and len(list(tmp_path.iterdir())) == 1  # no temp left


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    from cipm.io import save_model

    target = tmp_path / "model.pt"
    target.write_bytes(b"old")
    with pytest.raises(Exception):  # noqa: B017 (whatever pickling raises)
        save_model(lambda: None, target)  # a lambda cannot be pickled
    assert target.read_bytes() == b"old" and len(list(tmp_path.iterdir())) == 1


def saved(tmp_path: Path, name: str = "cnn_bn") -> tuple[Path, torch.nn.Module, torch.Tensor]:
    model, x = zoo.build(name)
    path = tmp_path / "model.pt"
    torch.save(model, path)
    return path, model, x


def test_prune_writes_a_smaller_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, model, x = saved(tmp_path)
    data = tmp_path / "data.pt"
    torch.save(torch.randn(128, *x.shape[1:]), data)
    out = tmp_path / "small.pt"
    argv = ["prune", str(path), "--input", ",".join(map(str, x.shape)), "--ratio", "0.5"]
    assert main([*argv, "--data", str(data), "-o", str(out)]) == 0
    small = torch.load(out, weights_only=False)
    assert type(small) is type(model)
    assert small[0][0].out_channels == model[0][0].out_channels // 2
    assert small(x).shape == model(x).shape
    assert "1,586 -> 510 parameters" in capsys.readouterr().out


def test_canonicalize_gives_permuted_copies_the_same_tensors(tmp_path: Path) -> None:
    path, model, x = saved(tmp_path, "mlp")
    graph = cipm.trace(model, x)
    other = tmp_path / "permuted.pt"
    torch.save(cipm.permute(model, graph.random_permutation(seed=3)), other)
    shape = ",".join(map(str, x.shape))
    for source, target in ((path, "a.pt"), (other, "b.pt")):
        assert (
            main(["canonicalize", str(source), "--input", shape, "-o", str(tmp_path / target)]) == 0
        )
    a, b = (torch.load(tmp_path / t, weights_only=False).state_dict() for t in ("a.pt", "b.pt"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_prune_bad_input_is_an_error_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _, x = saved(tmp_path)
    out = tmp_path / "small.pt"
    shape = ",".join(map(str, x.shape))
    cases = [
        (["--size", "0.0:channels=0"], "would leave it empty"),
        (["--ratio", "0.5", "--method", "merge"], "needs statistics"),
        (["--ratio", "1.5"], r"ratio must be in \[0, 1\)"),
        (["--size", "nonsense"], "GROUP=UNITS"),
    ]
    for extra, message in cases:
        assert main(["prune", str(path), "--input", shape, *extra, "-o", str(out)]) == 2
        assert re.search(message, capsys.readouterr().err)
        assert not out.exists()
    assert main(["prune", str(tmp_path / "missing.pt"), "--input", shape, "-o", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["prune", str(path), "--input", "a,b", "--ratio", "0.5", "-o", str(out)]) == 2
    assert "--input must be a shape" in capsys.readouterr().err

"""The command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cipm.cli import main


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

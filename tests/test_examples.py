"""Example scripts run and say what they claim."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_permute_your_model(capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_path(str(EXAMPLES / "permute_your_model.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "2 groups (1 residual, 1 hidden)" in out
    assert float(out.split("after permuting: ")[1].split()[0]) < 1e-9
    assert "restores every tensor exactly: True" in out


def test_canonical_heatmaps(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    argv = ["canonical_heatmaps.py", "--epochs", "1", "--out", str(tmp_path)]
    monkeypatch.setattr("sys.argv", argv)
    runpy.run_path(str(EXAMPLES / "canonical_heatmaps.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert out.count("canonicalizes to the same tensors: True") == 2
    assert len(list(tmp_path.glob("*.png"))) == 5  # 2 MLP groups, 3 CNN groups


def test_prune_digits(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["prune_digits.py", "--epochs", "2"])
    runpy.run_path(str(EXAMPLES / "prune_digits.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert out.count("14,538 parameters") == 4  # every method at half the channels
    merged = float(out.split("group by group on data: accuracy ")[1].split(",")[0])
    assert f"saved and loaded: accuracy {merged:.3f}" in out

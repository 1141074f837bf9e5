"""The command line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

import cipm
from cipm.cli import main
from cipm.examples import catalog


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
    assert main(["plugins", "--block", "nosuch"]) == 2
    assert "no plugin named ['nosuch']" in capsys.readouterr().err


def test_unknown_model_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "no-such-model"]) == 2
    assert "model no-such-model does not exist" in capsys.readouterr().err


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
    model, x = catalog.build(name)
    path = tmp_path / "model.pt"
    torch.save(model, path)
    return path, model, x


def test_prune_writes_a_smaller_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, model, x = saved(tmp_path)
    data = tmp_path / "data.pt"
    torch.save(torch.randn(128, *x.shape[1:]), data)
    out = tmp_path / "small.pt"
    argv = ["prune", str(path), "--unsafe-pickle", "--input", ",".join(map(str, x.shape))]
    argv += ["--ratio", "0.5"]
    assert main([*argv, "--data", str(data), "-o", str(out)]) == 0
    small = torch.load(out, weights_only=False)
    assert type(small) is type(model)
    assert small[0][0].out_channels == model[0][0].out_channels // 2
    assert small(x).shape == model(x).shape
    assert "1,586 -> 510 parameters" in capsys.readouterr().out


def test_prune_says_which_groups_it_kept_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_coverage import FixedWidth  # reshapes to a width it keeps in Python

    model = torch.nn.Sequential(
        FixedWidth(), torch.nn.Linear(8, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2)
    )
    path = tmp_path / "model.pt"
    torch.save(model, path)
    argv = ["prune", str(path), "--unsafe-pickle", "--input", "5,4", "--ratio", "0.5"]
    assert main([*argv, "-o", str(tmp_path / "small.pt")]) == 0
    out = capsys.readouterr().out
    assert "kept whole: 0.lin:hidden (0 fails at its new size: RuntimeError: shape" in out
    small = torch.load(tmp_path / "small.pt", weights_only=False)
    assert small[0].lin.out_features == 8 and small[1].out_features == 3


def test_canonicalize_gives_permuted_copies_the_same_tensors(tmp_path: Path) -> None:
    path, model, x = saved(tmp_path, "mlp")
    graph = cipm.trace(model, x)
    other = tmp_path / "permuted.pt"
    torch.save(cipm.permute(model, graph.random_permutation(seed=3)), other)
    shape = ",".join(map(str, x.shape))
    for source, target in ((path, "a.pt"), (other, "b.pt")):
        assert (
            main(
                [
                    "canonicalize",
                    str(source),
                    "--unsafe-pickle",
                    "--input",
                    shape,
                    "-o",
                    str(tmp_path / target),
                ]
            )
            == 0
        )
    a, b = (torch.load(tmp_path / t, weights_only=False).state_dict() for t in ("a.pt", "b.pt"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_prune_bad_input_is_an_error_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _, x = saved(tmp_path)
    out = tmp_path / "small.pt"
    shape = ",".join(map(str, x.shape))
    data = tmp_path / "data.pt"
    torch.save(torch.randn(16, *x.shape[1:]), data)
    cases = [
        (["--size", "0.0:channels=0"], "would leave it empty"),
        (["--ratio", "0.5", "--method", "fold"], "--method fold needs --data"),
        ([], r"--ratio FRACTION or --size GROUP=UNITS"),
        (["--ratio", "0.5", "--batch", "0", "--data", str(data)], "--batch must be at least 1"),
        (["--ratio", "0.5", "--data", str(path)], "does not unpickle code from data files"),
        (["--ratio", "1.5"], r"ratio must be in \[0, 1\)"),
        (["--size", "nonsense"], "GROUP=UNITS"),
    ]
    for extra, message in cases:
        argv = ["prune", str(path), "--unsafe-pickle", "--input", shape, *extra, "-o", str(out)]
        assert main(argv) == 2
        assert re.search(message, capsys.readouterr().err)
        assert not out.exists()
    assert (
        main(
            [
                "prune",
                str(tmp_path / "missing.pt"),
                "--unsafe-pickle",
                "--input",
                shape,
                "--ratio",
                "0.5",
                "-o",
                str(out),
            ]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
    argv = ["prune", str(path), "--unsafe-pickle", "--ratio", "0.5", "-o", str(out)]
    assert main([*argv, "--input", "a,b"]) == 2
    assert "--input must be a shape" in capsys.readouterr().err
    assert main([*argv, "--input=-1,3,8,8"]) == 2
    assert "--input dims must be whole numbers >= 1" in capsys.readouterr().err


class Evil:
    """A pickle whose loading writes a file: what an attacker would ship as a "model"."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.write_text, (self.target, "ran code from the file"))


def test_a_malicious_pickle_never_runs_without_the_opt_in(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save(Evil(marker), evil)
    good, _, x = saved(tmp_path)
    shape = ",".join(map(str, x.shape))
    out = str(tmp_path / "out.pt")
    pruning = ["--ratio", "0.5", "--data", str(evil), "-o", out]
    attempts = [
        ["canonicalize", str(evil), "--input", shape, "-o", out],
        ["inspect", str(evil), "--input", shape],
        ["canonicalize", str(good), "--unsafe-pickle", "--input", str(evil), "-o", out],
        ["prune", str(good), "--unsafe-pickle", "--input", shape, *pruning],
    ]
    for argv in attempts:
        assert main(argv) == 2, argv
        assert not marker.exists(), argv
    err = capsys.readouterr().err
    assert "--unsafe-pickle only if you trust it" in err
    assert "does not unpickle code from input files" in err
    assert "does not unpickle code from data files" in err
    assert not Path(out).exists()


def build_mlp() -> torch.nn.Module:
    """A --factory for the tests: the zoo's MLP architecture, untrained."""
    return catalog.mlp()[0]


def test_safetensors_weights_with_a_factory(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    model, x = catalog.build("mlp")
    weights = tmp_path / "mlp.safetensors"
    save_file(model.state_dict(), weights)
    torch.save(x, tmp_path / "x.pt")
    out = tmp_path / "canonical.pt"
    argv = ["canonicalize", str(weights), "--factory", "test_cli:build_mlp", "--unsafe-pickle"]
    assert main([*argv, "--input", str(tmp_path / "x.pt"), "-o", str(out)]) == 0
    canon = torch.load(out, weights_only=False)
    graph = cipm.trace(model, x)
    expected = cipm.canonicalize(model, graph).state_dict()
    assert all(torch.equal(canon.state_dict()[k], v) for k, v in expected.items())


def test_a_hugging_face_folder_and_a_pt2_archive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers import BertConfig, BertModel

    config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, vocab_size=50)  # fmt: skip
    BertModel(config).save_pretrained(tmp_path / "bert")
    torch.save({"input_ids": torch.randint(0, 50, (2, 6))}, tmp_path / "ids.pt")
    torch.save(torch.randint(0, 50, (2, 6)), tmp_path / "ids_tensor.pt")
    for ids in ("ids.pt", "ids_tensor.pt"):  # keyword inputs, and the ids alone (was a raw
        # TypeError: a Hugging Face output is no tensor to subtract)
        assert main(["inspect", str(tmp_path / "bert"), "--input", str(tmp_path / ids)]) == 0
        text = capsys.readouterr().out
        assert "SymmetryGraph of BertModel" in text
        assert float(text.split("float64 = ")[1].split()[0]) < 1e-9
    model, x = catalog.build("cnn_bn")
    torch.export.save(torch.export.export(model, (x,)), tmp_path / "cnn.pt2")
    shape = ",".join(map(str, x.shape))
    out = tmp_path / "small.pt2"
    argv = ["prune", str(tmp_path / "cnn.pt2"), "--input", shape, "--ratio", "0.5"]
    assert main([*argv, "--method", "magnitude", "-o", str(out)]) == 0
    assert "1,586 -> 510 parameters" in capsys.readouterr().out
    small = torch.export.load(out).module()
    assert small(x).shape == model(x).shape
    assert main([*argv, "--method", "magnitude", "-o", str(tmp_path / "small.pt")]) == 2
    assert "would be a pickled whole model" in capsys.readouterr().err


def test_the_output_path_is_checked_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _, x = saved(tmp_path)
    shape = ",".join(map(str, x.shape))
    argv = ["canonicalize", str(path), "--unsafe-pickle", "--input", shape, "-o"]
    assert main([*argv, str(tmp_path)]) == 2  # the folder holds the model it reads
    assert "would overwrite" in capsys.readouterr().err
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert main([*argv, str(elsewhere)]) == 2
    assert "no exporter writes a folder for a Sequential" in capsys.readouterr().err
    assert main([*argv, "/proc/cipm-model.pt"]) == 2
    assert "cannot write -o /proc/cipm-model.pt" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path), "--input", shape]) == 2
    assert "not a Hugging Face model folder" in capsys.readouterr().err


def test_a_class_from_the_saving_scripts_main_gets_a_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    class Net(torch.nn.Sequential):
        pass

    Net.__module__, Net.__qualname__ = "__main__", "Net"
    monkeypatch.setattr(sys.modules["__main__"], "Net", Net, raising=False)
    torch.save(
        Net(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)), tmp_path / "m.pt"
    )
    monkeypatch.delattr(sys.modules["__main__"], "Net")
    argv = ["inspect", str(tmp_path / "m.pt"), "--unsafe-pickle", "--input", "2,3"]
    assert main(argv) == 2
    assert "defined in the saving script's __main__" in capsys.readouterr().err


def test_help_lists_examples_one_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    lines = capsys.readouterr().out.splitlines()
    assert "  cipm inspect resnet20" in "\n".join(lines)
    assert any(line.strip().startswith("cipm plugins --block") for line in lines)


def test_no_progress_bars_when_output_is_not_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _, x = saved(tmp_path)
    data = tmp_path / "data.pt"
    torch.save(torch.randn(64, *x.shape[1:]), data)
    argv = ["prune", str(path), "--unsafe-pickle", "--input", ",".join(map(str, x.shape))]
    assert main([*argv, "--ratio", "0.5", "--data", str(data), "-o", str(tmp_path / "s.pt")]) == 0
    assert capsys.readouterr().err == ""

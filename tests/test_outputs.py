"""Nothing of the caller's is lost: a folder format never replaces a folder holding files
cipm did not write, and the command line never writes over a file or folder it reads."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch
from test_export_hf import built

import cipm
from cipm.cli import main
from cipm.discovery.program import save_program
from cipm.examples import catalog
from cipm.io import FOLDER_MARK


def test_a_folder_export_never_deletes_files_cipm_did_not_write(tmp_path: Path) -> None:
    model, x, _ = built("llama")
    mine = tmp_path / "project"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(cipm.CipmError, match="files cipm did not write"):
        cipm.export(model, mine, x)
    assert (mine / "notes.txt").read_text() == "mine" and len(list(mine.iterdir())) == 1
    out = cipm.export(model, tmp_path / "out", x)  # a new folder: written, marked
    assert (out / FOLDER_MARK).exists() and (out / "config.json").exists()
    again = cipm.export(model, out, x)  # cipm's own folder: replaced
    assert (again / "config.json").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (cipm.export(model, empty, x) / "config.json").exists()


def test_the_cli_refuses_to_write_over_its_inputs(tmp_path: Path) -> None:
    model, x = catalog.build("mlp")
    archive = save_program(model, x, tmp_path / "m.pt2")
    before = archive.read_bytes()
    shape = ",".join(map(str, x.shape))
    assert main(["inspect", str(archive), "--input", shape, "--json", str(archive)]) == 2
    assert archive.read_bytes() == before
    calibration = tmp_path / "calib.pt"
    torch.save(torch.randn(16, x.shape[1]), calibration)
    saved = calibration.read_bytes()
    argv = ["prune", "mlp", "--ratio", "0.5", "--data", str(calibration), "-o", str(calibration)]
    assert main(argv) == 2
    assert calibration.read_bytes() == saved
    # a folder that holds an input is refused too (-o "$PWD" next to the model)
    argv = ["prune", str(archive), "--input", shape, "--ratio", "0.5", "-o", str(tmp_path)]
    assert main([*argv, "--method", "magnitude"]) == 2
    assert archive.read_bytes() == before


def test_the_cli_checks_a_folder_output_before_the_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("keep")
    assert main(["prune", "mlp", "--ratio", "0.5", "--method", "magnitude", "-o", str(taken)]) == 2
    assert "files cipm did not write" in capsys.readouterr().err
    assert (taken / "keep.txt").read_text() == "keep"


def test_a_permutation_of_another_model_is_not_stored_with_this_one(tmp_path: Path) -> None:
    narrow, x = catalog.mlp(width=16)
    wide, _ = catalog.mlp(width=32)
    perm = cipm.trace(narrow, x).random_permutation(seed=0)
    with pytest.raises(cipm.CipmError, match="does not fit the symmetry graph"):
        cipm.export(wide, tmp_path / "wide.safetensors", policy=perm)
    assert not (tmp_path / "wide.safetensors").exists()
    written = cipm.export(cipm.permute(narrow, perm), tmp_path / "narrow.safetensors", policy=perm)
    assert cipm.read_policy(written).permutation(perm.graph) == perm


def test_broken_client_statistics_and_networks_are_clear_errors(tmp_path: Path) -> None:
    """A client's statistics arrive as arrays; a count of -5, two counts, a truncated or a
    NaN matrix are refused with the group and field named, never used."""
    from cipm.federated import split_update, update_arrays

    model, x = catalog.build("mlp")
    graph = cipm.trace(model, x)
    quiet = cipm.CollectConfig(progress=False)
    cross_stats = cipm.collect_cross(model, model, graph, [x, 2 * x], config=quiet)
    arrays = update_arrays(model, cross_stats)
    key = next(k for k in arrays if k.endswith("/count"))
    group = key.split("/")[-2]
    cross = key[: -len("count")] + "cross"
    broken = {
        "count": torch.tensor(-5),
        "counts": torch.tensor([4, 4]),
        "truncated": arrays[cross][:-1],
        "nan": arrays[cross].clone().fill_(float("nan")),
    }
    for what, value in broken.items():
        target = cross if what in ("truncated", "nan") else key
        with pytest.raises(cipm.CipmError, match=f"group '{group}'"):
            split_update({**arrays, target: value}, graph)
    # a meta-network whose weights hold NaN is refused on loading, not used
    meta = cipm.MetaAnalyzer()
    with torch.no_grad():
        next(iter(meta.network.parameters())).fill_(float("nan"))
    path = meta.save(tmp_path / "nan.safetensors")
    with pytest.raises(cipm.CipmError, match="NaN or Inf"):
        cipm.MetaAnalyzer.load(path)


def test_malformed_policies_and_arguments_are_clear_errors() -> None:
    from cipm.exporting.policy import FORMAT_VERSION, Policy

    head = {"cipm_policy": FORMAT_VERSION, "cipm": "0.1.0", "kind": "pruned"}
    with pytest.raises(cipm.CipmError, match="group 'a'"):
        Policy.from_json(json.dumps({**head, "groups": {"a": []}}))
    with pytest.raises(cipm.CipmError, match="not JSON"):
        Policy.from_json("[" * 100_000 + "]" * 100_000)  # nested past Python's recursion
    model, x = catalog.build("mlp")
    with pytest.raises(cipm.CipmError, match=r"expected cipm\.collect statistics"):
        cipm.MetaAnalyzer().policy(model, cipm.trace(model, x))  # type: ignore[arg-type]


def test_no_group_moves_a_buffer_no_checkpoint_stores(tmp_path: Path) -> None:
    """LLaMA's rotary frequencies (`inv_freq`) are a non-persistent buffer: a state dict drops
    them and a reloaded model recomputes them unpermuted. No group of the graph moves them, so
    any permutation, saved by cipm or by save_pretrained and loaded back, computes the same
    (float64), and `original_inv_freq` (dynamic RoPE's reset value) is still the model's."""
    model, x, graph = built("llama")
    model = model.double()
    unsaved = {
        f"{path}.{name}".lstrip(".")
        for path, module in model.named_modules()
        for name in module._non_persistent_buffers_set
    }
    assert any(k.endswith("inv_freq") for k in unsaved)
    assert not [m.key for g in graph for m in g.members if m.key in unsaved]
    with torch.no_grad():
        expected = model(**x).logits
    for seed in range(3):
        perm = graph.random_permutation(seed=seed)
        permuted = cipm.permute(model, perm)
        permuted.save_pretrained(tmp_path / f"hf{seed}")
        reloaded = type(model).from_pretrained(tmp_path / f"hf{seed}", torch_dtype=torch.float64)
        path = cipm.export(permuted, tmp_path / f"p{seed}.safetensors", policy=perm)
        restored = cipm.permute(permuted, cipm.read_policy(path).inverse(graph))
        for m in (permuted, reloaded, restored):
            with torch.no_grad():
                # LLaMA's RMSNorm computes in float32: agreement to its rounding
                torch.testing.assert_close(m(**x).logits, expected, rtol=1e-5, atol=1e-6)
        rotary = permuted.model.rotary_emb
        assert torch.equal(rotary.original_inv_freq, rotary.inv_freq)


def test_canonicalize_cli_writes_a_llama_that_reloads_the_same(tmp_path: Path) -> None:
    """`cipm canonicalize hf_llama --input ids.pt -o c.safetensors` (and to a folder) used to
    write a model whose reloaded rotary frequencies no longer matched its q/k rows."""
    model, x, _ = built("llama")
    model.save_pretrained(tmp_path / "hf_llama")
    torch.save(x["input_ids"], tmp_path / "ids.pt")
    base = [str(tmp_path / "hf_llama"), "--input", str(tmp_path / "ids.pt")]
    assert main(["canonicalize", *base, "-o", str(tmp_path / "canon")]) == 0
    assert main(["canonicalize", *base, "-o", str(tmp_path / "c.safetensors")]) == 0
    reloaded = type(model).from_pretrained(tmp_path / "canon").eval()
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded(input_ids=x["input_ids"]).logits,
            model(input_ids=x["input_ids"]).logits,
            rtol=1e-4,
            atol=1e-4,
        )


def test_written_files_have_a_plain_files_mode(tmp_path: Path) -> None:
    """Every file cipm writes gets the mode a plain open() gives (not the 0600 of a
    temporary file), whichever writer made it."""
    model, x = catalog.build("mlp")
    umask = os.umask(0o022)
    try:
        for name in ("m.safetensors", "m.onnx"):
            path = cipm.export(model, tmp_path / name, x)
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, name
    finally:
        os.umask(umask)


def test_command_help_says_what_each_option_is() -> None:
    """Every option of every command (and of `cipm meta`'s) has a help text."""
    import argparse

    from cipm.cli import _parser

    def bare(parser: argparse.ArgumentParser, path: str) -> list[str]:
        found = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found += bare(sub, f"{path} {name}")
            elif action.option_strings and not action.help and action.dest != "help":
                found.append(f"{path} {action.option_strings[-1]}")
        return found

    assert not bare(_parser(), "cipm")


def test_a_failed_onnx_export_says_why_in_plain_text() -> None:
    from cipm.plugins.onnx_export import _why

    coloured = RuntimeError("\x1b[1m\x1b[31mTorch export failed\x1b[0m: unsupported\nmore")
    assert _why(coloured) == "RuntimeError: Torch export failed: unsupported"


def test_prune_a_pt2_archive_with_data_batches_like_its_inputs(tmp_path: Path) -> None:
    """A .pt2 archive runs only at the shapes it was traced on: --data is batched at the
    --input batch size (a last shorter batch left out), not at 64."""
    model, x = catalog.build("mlp")
    archive = save_program(model, x, tmp_path / "m.pt2")
    calibration = tmp_path / "calib.pt"
    torch.save(torch.randn(4 * len(x) + 1, x.shape[1]), calibration)
    shape = ",".join(map(str, x.shape))
    out = tmp_path / "small.pt2"
    argv = ["prune", str(archive), "--input", shape, "--ratio", "0.5", "--data", str(calibration)]
    assert main([*argv, "-o", str(out), "--quiet"]) == 0
    small = torch.export.load(str(out)).module()
    assert small(x).shape == model(x).shape


def broken_factory() -> torch.nn.Module:
    """A --factory whose own code fails."""
    raise ValueError("no such layer size")


def test_a_failing_factory_or_a_corrupt_weights_file_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, x = catalog.build("mlp")
    corrupt = tmp_path / "mlp.safetensors"
    corrupt.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")
    torch.save(x, tmp_path / "x.pt")
    common = ["--input", str(tmp_path / "x.pt"), "-o", str(tmp_path / "out.pt2")]
    argv = ["canonicalize", str(corrupt), "--factory", "test_outputs:broken_factory", *common]
    assert main(argv) == 2
    assert "--factory test_outputs:broken_factory raised ValueError" in capsys.readouterr().err
    argv = ["canonicalize", str(corrupt), "--factory", "test_cli:build_mlp", *common]
    assert main(argv) == 2
    assert "is not a readable safetensors file" in capsys.readouterr().err
    assert not (tmp_path / "out.pt2").exists()


def test_a_missing_parent_folder_is_an_error_and_nothing_is_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped folder is said, not created (export used to make every missing parent,
    and leave them behind when it failed)."""
    model, x = catalog.build("mlp")
    hf_model, ids, _ = built("llama")
    for m, inputs, name in (
        (model, x, "m.onnx"),
        (model, x, "m.safetensors"),
        (hf_model, ids, "hf"),
    ):
        with pytest.raises(cipm.CipmError, match=r"missing/deeper does not exist"):
            cipm.export(m, tmp_path / "missing" / "deeper" / name, inputs)
    archive = save_program(model, x, tmp_path / "m.pt2")
    shape = ",".join(map(str, x.shape))
    for out in ("c.pt2", "c.onnx"):
        argv = ["canonicalize", str(archive), "--input", shape, "-o"]
        assert main([*argv, str(tmp_path / "missing" / out)]) == 2
        assert "missing does not exist (create it first)" in capsys.readouterr().err
    assert not (tmp_path / "missing").exists()


def test_a_pickle_output_needs_the_same_opt_in_as_reading_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`canonicalize -o canonical.pt` wrote a pickle that cipm then refused to read without
    --unsafe-pickle: writing one takes the opt-in too, said before any work; with it, the
    file reads back with it."""
    model, x = catalog.build("mlp")
    archive = save_program(model, x, tmp_path / "m.pt2")
    weights = tmp_path / "m.safetensors"
    cipm.export(model, weights)
    shape = ",".join(map(str, x.shape))
    out = tmp_path / "canonical.pt"
    assert main(["canonicalize", str(archive), "--input", shape, "-o", str(out)]) == 2
    assert "--unsafe-pickle" in capsys.readouterr().err and not out.exists()
    argv = ["canonicalize", str(weights), "--factory", "test_cli:build_mlp", "--input", shape]
    assert main([*argv, "--unsafe-pickle", "-o", str(out)]) == 0
    assert main(["inspect", str(out), "--input", shape, "--unsafe-pickle"]) == 0


def test_export_of_the_archive_prune_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cipm export` of the .pt2 that `cipm prune` writes (fixed shapes: it runs only at the
    batch it was traced on) to ONNX: exported at those shapes and checked in onnxruntime,
    without torch's own warnings on stderr."""
    import onnxruntime

    model, x = catalog.build("cnn_bn")
    archive = save_program(model, x, tmp_path / "cnn.pt2")
    shape = ",".join(map(str, x.shape))
    small = tmp_path / "small.pt2"
    argv = ["prune", str(archive), "--input", shape, "--ratio", "0.5", "--method", "magnitude"]
    assert main([*argv, "-o", str(small)]) == 0
    onnx = tmp_path / "small.onnx"
    assert main(["export", str(small), "--input", shape, "-o", str(onnx)]) == 0
    assert capsys.readouterr().err == ""
    session = onnxruntime.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    expected = torch.export.load(str(small)).module()(x)
    torch.testing.assert_close(torch.from_numpy(got), expected, rtol=1e-4, atol=1e-4)


def test_a_hugging_face_config_without_model_type_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text('{"hidden_size": 32}')
    torch.save(torch.zeros(1, 4, dtype=torch.long), tmp_path / "ids.pt")
    assert main(["inspect", str(folder), "--input", str(tmp_path / "ids.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cipm: error: cannot load the Hugging Face model in")
    assert "model_type" in err
    assert err.count("\n") == 1


def test_an_unknown_group_name_is_a_cipm_error_and_a_key_error() -> None:
    """Graph, permutation and statistics lookups by an unknown name raise one error that is
    both a CipmError (the guide's promise) and a KeyError (a mapping's, so `in` and `.get`
    work), naming the group."""
    model, x = catalog.build("mlp")
    graph = cipm.trace(model, x)
    stats = cipm.collect(model, graph, [x], config=cipm.CollectConfig(progress=False))
    for table in (graph, graph.random_permutation(seed=0), stats):
        with pytest.raises(cipm.UnknownGroupError, match="no group 'nope'") as info:
            table["nope"]
        assert isinstance(info.value, cipm.CipmError) and isinstance(info.value, KeyError)
    assert stats.get("nope") is None and "nope" not in stats


def test_a_format_is_not_written_under_another_formats_name(tmp_path: Path) -> None:
    """`export(model, "x.onnx", format="safetensors")` wrote safetensors that read_policy
    then took for ONNX and refused."""
    model, x = catalog.build("mlp")
    with pytest.raises(cipm.CipmError, match=r"x.onnx is named as a 'onnx' file"):
        cipm.export(model, tmp_path / "x.onnx", x, format="safetensors")
    assert not (tmp_path / "x.onnx").exists()
    written = cipm.export(model, tmp_path / "weights", format="safetensors")  # no suffix: fine
    assert written.is_file()

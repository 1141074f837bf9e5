"""Hugging Face models exported: ONNX in onnxruntime (permuted and pruned), and pruned
models through save_pretrained -> from_pretrained with a config at their pruned sizes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
import transformers
from test_transformers import VOCAB, bert, gpt2, llama

import cipm
from cipm.cli import main
from cipm.io import FOLDER_MARK
from cipm.pruning import uniform_sizes

os.environ.setdefault("HF_HUB_OFFLINE", "1")

FACTORIES = {"bert": bert, "gpt2": gpt2, "llama": llama}
AUTO = {"bert": transformers.AutoModel, "gpt2": transformers.AutoModelForCausalLM}
AUTO["llama"] = transformers.AutoModelForCausalLM


def tokens(batch: int, length: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (batch, length), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones(batch, length, dtype=torch.long)}


def built(name: str) -> tuple[torch.nn.Module, dict[str, torch.Tensor], cipm.SymmetryGraph]:
    torch.manual_seed(0)
    model = FACTORIES[name]().eval()
    x = tokens(2, 7, seed=0)
    return model, x, cipm.trace(model, x, outputs="free" if name == "bert" else "fixed")


def first(out: object) -> torch.Tensor:
    return out.logits if hasattr(out, "logits") else out.last_hidden_state  # type: ignore[attr-defined]


def assert_onnx_matches(model: torch.nn.Module, path: Path) -> None:
    """onnxruntime on a batch and length the export never saw agrees with torch to float32
    precision (1e-4 of the output's scale)."""
    x = tokens(3, 5, seed=11)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {i.name: x[i.name].numpy() for i in session.get_inputs()})[0]
    with torch.no_grad():
        expected = first(model(**x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * max(1.0, np.abs(expected).max()))


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_permuted_hf_model_runs_in_onnxruntime(name: str, tmp_path: Path) -> None:
    model, x, graph = built(name)
    perm = graph.random_permutation(seed=5)
    permuted = cipm.permute(model, perm)
    path = cipm.export(permuted, tmp_path / "m.onnx", x, policy=perm)
    assert_onnx_matches(permuted, path)
    assert cipm.read_policy(path).permutation(graph) == perm


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_pruned_hf_model_runs_in_onnxruntime(name: str, tmp_path: Path) -> None:
    model, x, graph = built(name)
    small = cipm.prune(model, graph, ratio=0.5, method="magnitude").model
    path = cipm.export(small, tmp_path / "small.onnx", x)
    assert_onnx_matches(small, path)


# name -> group kinds pruned by half that the family's config can describe
ROUND_TRIPS = [
    ("gpt2", ("hidden",)),
    ("gpt2", ("hidden", "heads", "residual")),
    ("llama", ("hidden", "heads")),
    ("llama", ("hidden", "heads", "residual")),
    ("bert", ("hidden", "heads", "residual")),
]


@pytest.mark.parametrize(("name", "kinds"), ROUND_TRIPS)
def test_pruned_hf_model_reloads_with_from_pretrained(
    name: str, kinds: tuple[str, ...], tmp_path: Path
) -> None:
    model, x, graph = built(name)
    small = cipm.prune(
        model, graph, ratio=0.5, method="magnitude", config=cipm.PruneConfig(kinds=kinds)
    ).model
    out = cipm.export(small, tmp_path / "out", x)
    reloaded = AUTO[name].from_pretrained(out, local_files_only=True).eval()
    assert type(reloaded) is type(model)
    n = sum(p.numel() for p in reloaded.parameters())
    assert (
        n == sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    )
    fresh = tokens(3, 6, seed=4)
    with torch.no_grad():
        torch.testing.assert_close(first(reloaded(**fresh)), first(small(**fresh)))
    assert model.config.num_attention_heads == 4  # the original's config is as it was


def test_pruned_bert_feed_forward_only_reloads(tmp_path: Path) -> None:
    model, x, graph = built("bert")
    sizes = {g.name: g.size // 2 for g in graph if "intermediate" in g.name}
    small = cipm.prune(model, graph, sizes=sizes, method="magnitude").model
    cipm.export(small, tmp_path / "out", x)
    reloaded = transformers.BertModel.from_pretrained(tmp_path / "out", local_files_only=True)
    assert reloaded.config.intermediate_size == 24
    with torch.no_grad():
        torch.testing.assert_close(first(reloaded.eval()(**x)), first(small(**x)))


def test_heads_a_config_cannot_describe_are_an_error_and_keep_the_folder(tmp_path: Path) -> None:
    model, x, graph = built("gpt2")
    small = cipm.prune(
        model, graph, ratio=0.5, method="magnitude", config=cipm.PruneConfig(kinds=("heads",))
    ).model
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / FOLDER_MARK).write_text("")  # an earlier export's folder, which cipm may replace
    with pytest.raises(cipm.CipmError, match=r"GPT2Config stores no head size.*residual stream"):
        cipm.export(small, out, x)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in out.iterdir()) == [FOLDER_MARK, "config.json"]
    assert (out / "config.json").read_text() == "{}"


def test_different_widths_per_layer_are_an_error_offering_uniform_sizes(tmp_path: Path) -> None:
    model, x, graph = built("gpt2")
    ffn = [g.name for g in graph if g.kind.value == "hidden"]
    uneven = {ffn[0]: 24, ffn[1]: 40}
    with pytest.raises(cipm.CipmError, match=r"n_inner.*\[24, 40\].*uniform_sizes"):
        cipm.export(
            cipm.prune(model, graph, sizes=uneven, method="magnitude").model, tmp_path / "o"
        )
    sizes = uniform_sizes(graph, uneven)
    assert sizes == {ffn[0]: 40, ffn[1]: 40}
    small = cipm.prune(model, graph, sizes=sizes, method="magnitude").model
    out = cipm.export(small, tmp_path / "o", x, policy={ffn[0]: list(range(40))})
    assert transformers.GPT2Config.from_pretrained(out).n_inner == 40
    assert cipm.read_policy(out).groups[ffn[0]] == tuple(range(40))


def test_cli_prune_of_a_hf_folder_writes_a_folder_that_reloads(tmp_path: Path) -> None:
    model, x, graph = built("llama")
    model.save_pretrained(tmp_path / "llama")
    torch.save(x, tmp_path / "ids.pt")
    argv = ["prune", str(tmp_path / "llama"), "--input", str(tmp_path / "ids.pt")]
    argv += ["--ratio", "0.5", "--method", "magnitude", "-o", str(tmp_path / "small")]
    assert main(argv) == 0
    reloaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "small").eval()
    expected = cipm.prune(model, graph, ratio=0.5, method="magnitude").model
    config = reloaded.config  # half of 4 query heads go: 1 of 2 key/value heads, with its 2
    assert (config.num_attention_heads, config.num_key_value_heads) == (2, 1)
    assert config.intermediate_size == 24
    with torch.no_grad():
        torch.testing.assert_close(first(reloaded(**x)), first(expected(**x)))

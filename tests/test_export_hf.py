"""Hugging Face models exported: ONNX in onnxruntime (permuted and pruned), and pruned
models through save_pretrained -> from_pretrained with a config at their pruned sizes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest
import torch
import transformers
from test_transformers import FF, VOCAB, bert, gpt2, llama

import cipm
from cipm.cli import main
from cipm.io import FOLDER_MARK
from cipm.pruning import uniform_sizes

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def qwen2() -> torch.nn.Module:
    """Grouped-query attention whose head size is hidden_size // num_attention_heads unless
    the config sets head_dim, which Qwen2Config leaves unset (issue 32); float64."""
    cfg = transformers.Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=256,
        max_position_embeddings=16,
        use_cache=False,
        bos_token_id=0,
        eos_token_id=0,
    )
    return transformers.Qwen2ForCausalLM(cfg).to(torch.float64)


ONNX = {"bert": bert, "gpt2": gpt2, "llama": llama}
FACTORIES = {**ONNX, "qwen2": qwen2}
AUTO = {"bert": transformers.AutoModel, "gpt2": transformers.AutoModelForCausalLM}
AUTO["llama"] = AUTO["qwen2"] = transformers.AutoModelForCausalLM
# what the exporter writes beside the sizes, whatever the pruning
BOOKKEEPING = {"architectures", "dtype", "_name_or_path", "transformers_version"}


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


@pytest.mark.parametrize("name", sorted(ONNX))
def test_permuted_hf_model_runs_in_onnxruntime(name: str, tmp_path: Path) -> None:
    model, x, graph = built(name)
    perm = graph.random_permutation(seed=5)
    permuted = cipm.permute(model, perm)
    path = cipm.export(permuted, tmp_path / "m.onnx", x, policy=perm)
    assert_onnx_matches(permuted, path)
    assert cipm.read_policy(path).permutation(graph) == perm


@pytest.mark.parametrize("name", sorted(ONNX))
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
    ("qwen2", ("hidden",)),
    ("qwen2", ("heads",)),
    ("qwen2", ("residual",)),
    ("qwen2", ("hidden", "heads")),
    ("qwen2", ("hidden", "heads", "residual")),
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
    reloaded = reloaded.to(next(small.parameters()).dtype)
    assert type(reloaded) is type(model)
    n = sum(p.numel() for p in reloaded.parameters())
    assert (
        n == sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    )
    fresh = tokens(3, 6, seed=4)
    with torch.no_grad():
        torch.testing.assert_close(first(reloaded(**fresh)), first(small(**fresh)))
    assert model.config.num_attention_heads == 4  # the original's config is as it was


# kinds pruned by half -> the config fields that must change (head_dim: the head size no
# longer follows from hidden_size // num_attention_heads); no field outside SIZES changes
QWEN2_FIELDS = [
    (("hidden",), {"intermediate_size"}),
    (("heads",), {"num_attention_heads", "head_dim"}),
    (("residual",), {"hidden_size", "head_dim"}),
    (("hidden", "heads"), {"intermediate_size", "num_attention_heads", "head_dim"}),
]
SIZES = {"intermediate_size", "hidden_size", "num_attention_heads", "num_key_value_heads"}


@pytest.mark.parametrize(("kinds", "fields"), QWEN2_FIELDS)
def test_pruned_qwen2_config_holds_the_pruned_sizes_and_nothing_else(
    kinds: tuple[str, ...], fields: set[str], tmp_path: Path
) -> None:
    """Issue 32: the exporter has no table for Qwen2; its fields are found from the pruned
    modules, and a field the pruning did not touch is as it was."""
    model, x, graph = built("qwen2")
    small: Any = cipm.prune(
        model, graph, ratio=0.5, method="magnitude", config=cipm.PruneConfig(kinds=kinds)
    ).model
    out = cipm.export(small, tmp_path / "out", x)  # reloads it and compares outputs on x
    config = transformers.Qwen2Config.from_pretrained(out)
    attn, mlp = small.model.layers[0].self_attn, small.model.layers[0].mlp
    head = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    assert head == attn.head_dim == 32
    assert config.num_attention_heads * head == attn.q_proj.out_features
    assert config.num_key_value_heads * head == attn.k_proj.out_features
    assert config.intermediate_size == mlp.up_proj.out_features
    assert config.hidden_size == small.model.embed_tokens.embedding_dim
    before, after = model.config.to_dict(), config.to_dict()
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert fields <= changed - BOOKKEEPING <= SIZES | fields


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


def test_cli_prune_to_a_folder_says_before_the_work_what_the_config_cannot_hold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """GPT-2's config derives its head size from hidden / heads, so pruned heads alone cannot
    be written as a folder. With the default kinds, `cipm prune -o FOLDER` prunes only those
    the config can describe and says what it left out; with `--kinds` naming heads, it stops
    before any statistics are collected (it used to fail after the work)."""
    model, x, _ = built("gpt2")
    model.save_pretrained(tmp_path / "gpt2")
    torch.save(x, tmp_path / "ids.pt")
    argv = ["prune", str(tmp_path / "gpt2"), "--input", str(tmp_path / "ids.pt"), "--ratio"]
    argv += ["0.5", "--method", "magnitude", "--quiet"]
    assert main([*argv, "-o", str(tmp_path / "small")]) == 0
    out = capsys.readouterr().out
    assert "pruning hidden only (--kinds to choose): GPT2Config" in out
    config = transformers.AutoConfig.from_pretrained(tmp_path / "small")
    assert (config.n_inner, config.n_head) == (FF // 2, 4)
    import cipm.cli as cli

    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("pruned before the check")

    monkeypatch.setattr(cli, "prune", no_work)
    assert main([*argv, "--kinds", "hidden,heads", "-o", str(tmp_path / "heads")]) == 2
    assert "stores no head size" in capsys.readouterr().err
    assert not (tmp_path / "heads").exists()

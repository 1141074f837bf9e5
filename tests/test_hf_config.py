"""The Hugging Face exporter's config of a pruned model, found with no table of model families
(issue 32): models built on the meta device at real sizes, their modules shrunk as pruning
leaves them, and tiny pruned models where a config cannot say what the pruning did."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import hf_families
import pytest
import torch
import transformers
from torch import nn

import cipm
from cipm.plugins.hf_export import config_fits, pruned_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def qwen2_0_5b() -> Any:
    """Qwen2-0.5B's shape (hidden 896, 24 layers of 4864 FFN units, 14 query and 2 key/value
    heads of 64), random and on the meta device: no memory, no download."""
    config = transformers.Qwen2Config(
        vocab_size=151936,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        tie_word_embeddings=True,
        use_cache=False,
    )
    with torch.device("meta"):
        return transformers.Qwen2ForCausalLM(config)


def shrink_mlp(model: Any, width: int, layers: range | None = None) -> None:
    """The feed-forward layers as pruning to `width` units leaves them."""
    with torch.device("meta"):
        for i in layers or range(len(model.model.layers)):
            mlp, hidden = model.model.layers[i].mlp, model.config.hidden_size
            mlp.gate_proj = nn.Linear(hidden, width, bias=False)
            mlp.up_proj = nn.Linear(hidden, width, bias=False)
            mlp.down_proj = nn.Linear(width, hidden, bias=False)


def shrink_heads(model: Any, heads: int, kv_heads: int) -> None:
    """The attention layers as head pruning leaves them: projections of fewer heads of the
    same size, and the head counts the resize hook writes back."""
    with torch.device("meta"):
        for layer in model.model.layers:
            attn, hidden = layer.self_attn, model.config.hidden_size
            attn.q_proj = nn.Linear(hidden, heads * attn.head_dim)
            attn.k_proj = nn.Linear(hidden, kv_heads * attn.head_dim)
            attn.v_proj = nn.Linear(hidden, kv_heads * attn.head_dim)
            attn.o_proj = nn.Linear(heads * attn.head_dim, hidden, bias=False)
            attn.num_key_value_groups = heads // kv_heads


def changes(before: Any, after: Any) -> dict[str, tuple[Any, Any]]:
    old, new = before.to_dict(), after.to_dict()
    return {
        k: (old.get(k), new.get(k)) for k in old.keys() | new.keys() if old.get(k) != new.get(k)
    }


def test_an_unpruned_model_fits_its_own_config() -> None:
    model = qwen2_0_5b()
    assert config_fits(model) is None
    assert changes(model.config, pruned_config(model)) == {}


def test_qwen2_0_5b_feed_forward_pruned_by_half_sets_intermediate_size_alone() -> None:
    """The issue's model: 2432 FFN units in every layer is intermediate_size=2432, nothing
    else, found in a few seconds (about 2 s measured on a laptop CPU)."""
    model = qwen2_0_5b()
    shrink_mlp(model, 2432)
    start = time.perf_counter()
    config = pruned_config(model)
    elapsed = time.perf_counter() - start
    assert changes(model.config, config) == {"intermediate_size": (4864, 2432)}
    assert model.config.intermediate_size == 4864  # the model's own config is untouched
    assert elapsed < 30, elapsed
    assert config_fits(model) is None


def test_pruned_heads_keep_their_size_where_the_config_derives_it() -> None:
    """Qwen2Config has no head_dim (the head size is hidden_size // num_attention_heads): 7
    query heads of 64 over a residual of 896 need head_dim=64 written, not 896 // 7."""
    model = qwen2_0_5b()
    shrink_heads(model, heads=7, kv_heads=1)
    shrink_mlp(model, 2432)
    assert changes(model.config, pruned_config(model)) == {
        "num_attention_heads": (14, 7),
        "num_key_value_heads": (2, 1),
        "head_dim": (None, 64),
        "intermediate_size": (4864, 2432),
    }


def test_layers_pruned_to_different_widths_name_the_field_and_uniform_sizes() -> None:
    model = qwen2_0_5b()
    shrink_mlp(model, 2432)
    shrink_mlp(model, 1000, layers=range(3, 4))
    message = config_fits(model)
    assert message is not None
    assert re.search(
        r"Qwen2Config has one intermediate_size for every layer, but the pruned layers have "
        r"\[2432, 2432, 2432, 1000, 2432, .*uniform_sizes\(graph, sizes\)",
        message,
    )
    with pytest.raises(cipm.CipmError, match=re.escape(message)):
        pruned_config(model)


def test_a_width_no_field_sets_names_the_tensor() -> None:
    """Bloom's feed-forward width is 4 * hidden_size in its code, not a config field."""
    config = transformers.BloomConfig(vocab_size=64, hidden_size=32, n_layer=2, n_head=4)
    with torch.device("meta"):
        model: Any = transformers.BloomForCausalLM(config)
        for block in model.transformer.h:
            block.mlp.dense_h_to_4h = nn.Linear(32, 64)
            block.mlp.dense_4h_to_h = nn.Linear(64, 32)
    with pytest.raises(
        cipm.CipmError,
        match=r"no field of BloomConfig sets .*transformer\.h\.0\.mlp\.dense_h_to_4h\.weight: "
        r"\(64, 32\) in the model, \(128, 32\) from the config.*ONNX or safetensors",
    ):
        pruned_config(model)


def test_a_scale_computed_from_a_pruned_width_is_an_error() -> None:
    """Gemma scales its embeddings by sqrt(hidden_size): a config at the pruned width would
    scale them otherwise, so no config describes the pruned residual stream."""
    model, x, _ = hf_families.build("gemma")
    graph = cipm.trace(model, x)
    config = cipm.PruneConfig(kinds=("residual",))
    small = cipm.prune(model, graph, ratio=0.5, method="magnitude", config=config).model
    message = config_fits(small)
    assert message is not None
    assert "model.embed_tokens.scalar_embed_scale: 5.65" in message
    assert "from the config" in message


def test_a_written_folder_that_computes_otherwise_is_refused_without_example_inputs(
    tmp_path: Path,
) -> None:
    """CodeGen pruned in every kind gets a config whose shapes match, but its attention reads
    a width attribute the pruning leaves stale: the reload check, on the model's own
    `dummy_inputs` when no example inputs are given (it used to run only with them), refuses
    it and nothing is written."""
    model, x, _ = hf_families.build("codegen")
    graph = cipm.trace(model, x)
    config = cipm.PruneConfig(kinds=("hidden", "heads", "residual"))
    small = cipm.prune(model, graph, ratio=0.5, method="magnitude", config=config).model
    with pytest.raises(cipm.CipmError, match="the reloaded model: output 0 differs"):
        cipm.export(small, tmp_path / "codegen")
    assert not (tmp_path / "codegen").exists()

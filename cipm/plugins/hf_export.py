"""The Hugging Face exporter: ``save_pretrained`` into a folder, with a config that describes
the model as it is, so ``from_pretrained`` rebuilds a pruned model at its pruned sizes.

A pruned model keeps the config it was made with (``n_head=4`` over two heads), which no
longer builds it. The sizes are read back from the pruned modules, per model family, into
the config fields that family's classes read (`FAMILIES`); a config built so is then checked
by building the model from it (on the meta device, no memory) and comparing every tensor's
shape. What a family's config cannot say — a width that differs between layers, heads whose
size the config derives from other fields — is a `CipmError` that says what to prune instead.
Given example inputs, the written folder is loaded back and its outputs compared with the
model's. The policy is written beside the weights as ``cipm_policy.json``.
"""

from __future__ import annotations

import contextlib
import copy
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cipm import CipmError
from cipm.plugin import (
    Exporter,
    ExportJob,
    eval_semantics,
    fresh_inputs,
    hookimpl,
    mismatch,
    outputs,
)

POLICY_FILE = "cipm_policy.json"
Layer = Callable[[Any], int]


@dataclass(frozen=True)
class Family:
    """Where a model family's config fields are in its modules.

    Attributes:
        layers: path of the list of layers under ``model.base_model``.
        per_layer: config field -> its value read from one layer.
        hidden: the residual width's config field and its value read from the base model.
        limits: what the config computes instead of storing, as (a tensor name part, what
            to prune instead) for the error message when such a tensor has the wrong shape.
    """

    layers: str
    per_layer: Mapping[str, Layer] = field(hash=False)
    hidden: tuple[str, Layer]
    limits: tuple[tuple[str, str], ...] = ()


_HEADS = (
    "{config} stores no head size: it is hidden_size / num_attention_heads, so pruned heads "
    "fit it only if the residual stream keeps the same fraction of its units: prune the "
    "residual stream with the heads, or leave the heads out (kinds=('hidden',))"
)

_bert = Family(
    layers="encoder.layer",
    per_layer={
        "intermediate_size": lambda layer: layer.intermediate.dense.out_features,
        "num_attention_heads": lambda layer: (
            layer.attention.self.query.out_features // layer.attention.self.attention_head_size
        ),
    },
    hidden=("hidden_size", lambda b: b.embeddings.word_embeddings.embedding_dim),
    limits=(
        (".attention.", _HEADS),
        ("pooler.", "the pooler's width is hidden_size: leave its group out of the pruning"),
    ),
)

FAMILIES: dict[str, Family] = {
    "bert": _bert,
    "gpt2": Family(
        layers="h",
        per_layer={
            "n_inner": lambda layer: layer.mlp.c_fc.nf,
            "n_head": lambda layer: layer.attn.c_attn.nf // 3 // layer.attn.head_dim,
        },
        hidden=("n_embd", lambda b: b.wte.embedding_dim),
        limits=((".attn.", _HEADS),),
    ),
    "llama": Family(
        layers="layers",
        per_layer={
            "intermediate_size": lambda layer: layer.mlp.gate_proj.out_features,
            "num_attention_heads": lambda layer: (
                layer.self_attn.q_proj.out_features // layer.self_attn.head_dim
            ),
            "num_key_value_heads": lambda layer: (
                layer.self_attn.k_proj.out_features // layer.self_attn.head_dim
            ),
            "head_dim": lambda layer: layer.self_attn.head_dim,
        },
        hidden=("hidden_size", lambda b: b.embed_tokens.embedding_dim),
    ),
}


def is_huggingface(model: torch.nn.Module) -> bool:
    transformers = sys.modules.get("transformers")  # not imported: cannot be one of its models
    return transformers is not None and isinstance(model, transformers.PreTrainedModel)


def pruned_config(model: Any) -> Any:
    """A copy of `model.config` with the sizes its modules have now.

    Raises:
        CipmError: the sizes differ between layers, or the config cannot express them.
    """
    config = copy.deepcopy(model.config)
    name = type(config).__name__
    family = FAMILIES.get(getattr(config, "model_type", ""))
    if family is not None:
        base = model.base_model
        layers = base.get_submodule(family.layers)
        for key, read in family.per_layer.items():
            sizes = [read(layer) for layer in layers]
            if len(set(sizes)) > 1:
                raise CipmError(
                    f"{name} has one {key} for every layer, but the pruned layers have "
                    f"{sizes}; prune every layer to the same width: "
                    "sizes = cipm.pruning.uniform_sizes(graph, sizes), then "
                    "cipm.prune(model, stats, sizes=sizes) (or export to ONNX or safetensors)"
                )
            setattr(config, key, sizes[0])
        setattr(config, family.hidden[0], family.hidden[1](base))
    wrong = _shape_mismatches(model, config)
    if wrong:
        shown = "; ".join(f"{k}: {a} in the model, {b} from the config" for k, a, b in wrong[:3])
        if family is None:
            raise CipmError(
                f"cipm does not know which {name} fields hold the sizes of a pruned "
                f"{type(model).__name__} ({shown}); export to ONNX or safetensors instead"
            )
        hints = [h.format(config=name) for part, h in family.limits if part in wrong[0][0]]
        raise CipmError(
            f"{name} cannot describe this pruned {type(model).__name__} ({shown}). "
            + "; ".join([*hints, "or export it to ONNX or safetensors instead"])
        )
    return config


def _shape_mismatches(model: Any, config: Any) -> list[tuple[str, tuple[int, ...], Any]]:
    """Tensors whose shape in `model` differs from a model built from `config`."""
    with torch.device("meta"):
        built = type(model)(config)
    want = {k: tuple(v.shape) for k, v in built.state_dict().items()}
    return [
        (k, tuple(v.shape), want.get(k, "no such tensor"))
        for k, v in model.state_dict().items()
        if want.get(k) != tuple(v.shape)
    ]


def write_huggingface(job: ExportJob, path: Path) -> None:
    """save_pretrained with the pruned config; reload and compare given example inputs.

    Raises:
        CipmError: see `pruned_config`; the written folder loads to other outputs.
    """
    model: Any = job.model  # a transformers PreTrainedModel (see is_huggingface)
    shadow = copy.copy(model)  # the same modules, another config: the caller's is untouched
    shadow.config = pruned_config(model)
    with _quiet():
        shadow.save_pretrained(str(path))
    if job.policy is not None:
        (path / POLICY_FILE).write_text(job.policy.to_json(), encoding="utf-8")
    if job.example_inputs is None:
        return
    try:
        with _quiet():
            reloaded = type(model).from_pretrained(str(path), local_files_only=True)
    except Exception as e:
        raise CipmError(f"the written {type(model).__name__} does not load back: {e}") from e
    reloaded = reloaded.to(next(model.parameters()).dtype)
    for inputs in (job.example_inputs, fresh_inputs(job.example_inputs)):
        with eval_semantics(model, warn=False):
            expected = outputs(model, inputs)
        mismatch(expected, outputs(reloaded.eval(), inputs), "the reloaded model")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No transformers progress bars for the block (the caller's setting restored)."""
    from transformers.utils import logging

    was_off = logging.is_progress_bar_enabled() is False
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if not was_off:
            logging.enable_progress_bar()


def read_huggingface_policy(path: Path) -> str | None:
    policy = path / POLICY_FILE
    return policy.read_text(encoding="utf-8") if policy.is_file() else None


@hookimpl
def cipm_exporters() -> Mapping[str, Exporter]:
    return {
        "huggingface": Exporter(
            write=write_huggingface,
            folder=True,
            accepts=is_huggingface,
            read_policy=read_huggingface_policy,
            description="a Hugging Face model folder (save_pretrained, config at the pruned "
            "sizes); for transformers models",
        )
    }

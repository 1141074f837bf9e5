"""The ONNX exporter: ``torch.onnx.export(..., dynamo=True)`` with a dynamic batch (and
dynamic positions for token inputs; at the example's shapes for a model that takes no others,
such as a loaded torch.export archive), checked by ``onnx.checker`` and in onnxruntime against
torch on fresh inputs before the file is kept; the policy goes into ``metadata_props``.

onnx, onnxruntime and onnxscript are the ``onnx`` extra (``pip install 'cipm[onnx]'``),
imported only when a model is exported.
"""

from __future__ import annotations

import inspect
import logging
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from cipm import CipmError
from cipm.plugin import (
    METADATA_KEY,
    Exporter,
    ExportJob,
    as_args,
    dynamic_dims,
    eval_semantics,
    fresh_inputs,
    hookimpl,
    mismatch,
    outputs,
)

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_OP = re.compile(r"OpOverload\(op='([\w.]+)', overload='(\w+)'\)|target=torch\.ops\.([\w.]+)")


def write_onnx(job: ExportJob, path: Path) -> None:
    """Export, save, check in onnx and onnxruntime (see the module docstring).

    Raises:
        CipmError: no example inputs, the onnx extra missing, an op torch.onnx cannot
            convert (named), or onnxruntime disagreeing with torch.
    """
    if job.example_inputs is None:
        raise CipmError("ONNX export traces the model: give example_inputs")
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise CipmError("ONNX export needs: pip install 'cipm[onnx]'") from e
    model, example = job.model, job.example_inputs
    args, kwargs = as_args(example)
    with eval_semantics(model, warn=False):
        fresh, expected = _fresh_outputs(model, example)
        program = _export(model, args, kwargs, dynamic=fresh is not None)
        if job.policy is not None:
            program.model.metadata_props[METADATA_KEY] = job.policy.to_json()
        program.save(str(path), external_data=False)
        onnx.checker.check_model(str(path))
        if fresh is None:  # a model of fixed shapes: fresh values at the example's shapes
            fresh = fresh_inputs(example, resize=False)
            expected = outputs(model, fresh)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, _feed(session, model, fresh))
    mismatch(expected, got, "onnxruntime, on fresh inputs,")


def read_onnx_policy(path: Path) -> str | None:
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return props.get(METADATA_KEY)


def _fresh_outputs(model: torch.nn.Module, example: Any) -> tuple[Any, list[torch.Tensor]]:
    """Inputs of new shapes and torch's outputs on them, or (None, []) when the model takes
    only the example's shapes (a loaded torch.export archive): it is exported at those."""
    fresh = fresh_inputs(example)
    try:
        return fresh, outputs(model, fresh)
    except Exception:
        return None, []


def _export(
    model: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], dynamic: bool
) -> Any:
    dims = torch.export.Dim.DYNAMIC
    spec = lambda x: (  # noqa: E731
        {d: dims for d in dynamic_dims(x)} if dynamic and isinstance(x, torch.Tensor) else None
    )
    shapes = {name: _tree(value, spec) for name, value in _bound(model, args, kwargs).items()}
    logging.disable(logging.WARNING)  # torch.onnx logs every optional op it skips
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.onnx.export(
                model, args, kwargs=kwargs, dynamic_shapes=shapes, dynamo=True, verbose=False
            )
    except Exception as e:
        raise CipmError(
            f"torch.onnx cannot export {type(model).__name__}: {_why(e)}. Export the weights "
            "with their policy instead: cipm.export(model, 'model.safetensors')"
        ) from e
    finally:
        logging.disable(logging.NOTSET)


def _why(error: BaseException) -> str:
    """The op the exporter failed on, if it says, else its first line."""
    seen: BaseException | None = error
    while seen is not None:
        found = _OP.search(str(seen))
        if found:
            op = f"{found[1]}.{found[2]}" if found[1] else found[3]
            return f"no ONNX conversion for op '{op}'"
        seen = seen.__cause__ or seen.__context__
    plain = _ANSI.sub("", str(error))  # torch.onnx colours its messages for a terminal
    lines = [line for line in plain.splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def _bound(model: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's inputs by forward parameter name (torch.export keys dynamic shapes so)."""
    try:
        bound = inspect.signature(model.forward).bind(*args, **kwargs)
    except TypeError as e:
        raise CipmError(f"the example inputs do not fit {type(model).__name__}.forward: {e}") from e
    return dict(bound.arguments)


def _tree(value: Any, leaf: Any) -> Any:
    if isinstance(value, tuple | list):
        return type(value)(_tree(v, leaf) for v in value)
    if isinstance(value, Mapping):
        return {k: _tree(v, leaf) for k, v in value.items()}
    return leaf(value)


def _feed(session: Any, model: torch.nn.Module, inputs: Any) -> dict[str, Any]:
    """onnxruntime's inputs: the tensors of the call, by the graph's input names (the forward
    parameter names for top-level tensors, else in call order)."""
    args, kwargs = as_args(inputs)
    bound = _bound(model, args, kwargs)
    names = [i.name for i in session.get_inputs()]
    tensors = {k: v for k, v in bound.items() if isinstance(v, torch.Tensor)}
    if set(names) <= set(tensors):
        return {n: tensors[n].numpy() for n in names}
    leaves = [x for x in torch.utils._pytree.tree_leaves(bound) if isinstance(x, torch.Tensor)]
    return {n: x.numpy() for n, x in zip(names, leaves, strict=False)}


@hookimpl
def cipm_exporters() -> Mapping[str, Exporter]:
    return {
        "onnx": Exporter(
            write=write_onnx,
            suffixes=(".onnx",),
            read_policy=read_onnx_policy,
            description="ONNX via torch.onnx (dynamo), checked in onnxruntime; needs inputs",
        )
    }

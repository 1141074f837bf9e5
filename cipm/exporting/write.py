"""`cipm.export` and `cipm.read_policy`: a model to a file of any installed format, written
atomically, and the policy back out of such a file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from cipm.errors import CipmError
from cipm.exporting.exporter import choose, exporters
from cipm.exporting.formats import ExportJob
from cipm.exporting.policy import Policy
from cipm.graph.symmetry import Permutation
from cipm.io import atomic_path
from cipm.tensors.fitted import fitted_tensors

__all__ = ["export", "read_policy"]


def export(
    model: torch.nn.Module,
    path: str | os.PathLike[str],
    example_inputs: Any = None,
    *,
    policy: Any = None,
    format: str | None = None,
) -> Path:
    """Write `model` to `path` in a deployable format, with the policy that made it.

    The format is `format` if given, else the path's: ``.onnx`` (ONNX, checked in
    onnxruntime against torch on fresh inputs), ``.safetensors`` (the tensors and the policy
    in the header), a folder (a path without suffix) for a Hugging Face model
    (``save_pretrained`` with a config that describes the pruned sizes); `cipm.exporters()`
    lists every installed format. The file is written to a temporary path beside `path` and
    renamed onto it only when complete: a failure leaves no partial file and an existing one
    as it was.

    Args:
        model: the model; it is not changed.
        path: where to write.
        example_inputs: inputs the model takes (a tensor, a tuple, or a dict of keyword
            inputs); ONNX needs them to trace, the Hugging Face format to check the written
            model reloads to the same outputs.
        policy: what to store with the model: a `cipm.Permutation`, or for a pruned model
            its `cipm.PruneReport` (``cipm.prune(...).report``) or a mapping of group name to
            kept units (``cipm.pruning.prune_plan(...)``, or lists of indices), or a
            `Policy`. None stores none.
        format: a name from `cipm.exporters()` (``"onnx"``, ``"safetensors"``,
            ``"huggingface"``, ...).

    Returns:
        The path written.

    Raises:
        CipmError: an unknown format or one that cannot hold the model, an unwritable path,
            a model the format's exporter cannot convert (naming why), a malformed policy, or
            a permutation of another model's groups.

    Example:
        >>> perm = graph.random_permutation(seed=0)
        >>> cipm.export(cipm.permute(model, perm), "model.onnx", x, policy=perm).name
        'model.onnx'
        >>> cipm.read_policy("model.onnx").inverse(graph) == perm.inverse()
        True
    """
    if not isinstance(model, torch.nn.Module):
        raise CipmError(f"export needs a torch.nn.Module, got {type(model).__name__}")
    target = _path(path, "export")
    if format is not None and not isinstance(format, str):
        raise CipmError(f"format= takes a format name (cipm.exporters()), got {format!r}")
    try:
        name, exporter = choose(model, target, format, exporters())
    except OSError as e:  # the path cannot even be looked at (a name too long, a loop)
        raise CipmError(f"cannot write {target}: {e.strerror or e}") from None
    if isinstance(policy, Permutation):  # it knows its model: the model must fit it
        fitted_tensors(model, policy.graph, "the exported model")
    stored = None if policy is None else Policy.of(policy, type(model).__name__)
    job = ExportJob(model, example_inputs, stored, target)
    try:
        with atomic_path(target, folder=exporter.folder) as tmp:
            exporter.write(job, tmp)
    except CipmError:
        raise
    except OSError as e:
        raise CipmError(f"cannot write {target}: {e.strerror or e}") from e
    except Exception as e:  # a plugin's own failure: said in the user's terms
        raise CipmError(
            f"the '{name}' exporter failed on {type(model).__name__} ({target}): "
            f"{type(e).__name__}: {e}"
        ) from e
    return target


def read_policy(path: str | os.PathLike[str]) -> Policy:
    """The policy stored in a file `cipm.export` wrote.

    Raises:
        CipmError: the file does not exist, no installed format reads it, or it holds no
            cipm policy.
    """
    target = _path(path, "read_policy")
    try:
        if not target.exists():
            raise CipmError(f"{target} does not exist")
        folder = target.is_dir()
    except OSError as e:  # a name too long, a loop of links, no permission
        raise CipmError(f"cannot read {target}: {e.strerror or e}") from None
    table = exporters()
    suffix = "" if folder else target.suffix.lower()
    readers = [
        (name, e.read_policy)
        for name, e in table.items()
        if e.read_policy is not None and (suffix in e.suffixes if suffix else e.folder and folder)
    ]
    if not readers:
        known = sorted({s for e in table.values() if e.read_policy for s in e.suffixes})
        raise CipmError(f"no installed format reads a policy from {target}; known: {known}")
    for name, reader in readers:
        try:
            text = reader(target)
        except CipmError:
            raise
        except Exception as e:
            raise CipmError(f"{target} is not a readable {name} file: {e}") from e
        if text is not None:
            return Policy.from_json(text, str(target))
    raise CipmError(f"{target} holds no cipm policy (it was exported without policy=)")


def _path(path: Any, what: str) -> Path:
    """`path` as a Path, once it is one a file can have."""
    if not isinstance(path, str | os.PathLike):
        raise CipmError(f"{what} needs a path, got {type(path).__name__}")
    try:
        target = Path(path)
    except TypeError:  # a PathLike whose __fspath__ gives bytes
        raise CipmError(f"{what} needs a path of text, got {path!r}") from None
    if "\0" in str(target):
        raise CipmError(f"{what}: a path cannot hold a NUL character, got {str(target)!r}")
    return target

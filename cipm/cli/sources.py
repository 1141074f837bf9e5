"""Where the command line reads models, example inputs and calibration data from.

Nothing read here runs code from a file unless the user opted in: inputs and data are loaded
with ``torch.load(weights_only=True)`` (tensors, lists, dicts, numbers); a model comes from a
file or folder a plugin's model source reads (`cipm_model_sources`: a Hugging Face folder,
among the built-ins), from safetensors or state-dict weights plus a ``module:factory`` that
builds the model, or from a ``torch.export`` archive (.pt2). A whole pickled model can only be
loaded by unpickling it, which runs whatever code the file holds: that needs
``--unsafe-pickle``.
"""

from __future__ import annotations

import importlib
import math
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from cipm.errors import CipmError
from cipm.examples import catalog
from cipm.exporting.sources import model_sources, source_for

__all__ = ["batches", "example_input", "formats", "load_model", "load_tensors"]

OWN_FORMATS = (
    "safetensors or state-dict weights with --factory MODULE:CALLABLE, a torch.export "
    "archive (.pt2), or a built-in example"
)


def formats() -> str:
    """What a model can be given as: every plugin's model source, then the CLI's own."""
    return ", ".join([*(s.description for s in model_sources().values()), OWN_FORMATS])


def load_model(
    source: str, *, factory: str | None = None, unsafe_pickle: bool = False
) -> torch.nn.Module:
    """The model named by `source`: a built-in example name or a file/folder (see module).

    Raises:
        CipmError: the file is missing or not a model of a supported format; a pickle
            without `unsafe_pickle`.
    """
    if source in {**catalog.MODELS, **catalog.LARGE}:
        return catalog.build(source)[0]
    path = Path(source)
    if not path.exists():
        raise CipmError(f"model {path} does not exist (give {formats()})")
    reader = source_for(path) if path.is_dir() or factory is None else None
    if reader is not None:
        model = reader.load(path)
    elif path.is_dir():
        known = " or ".join(s.description for s in model_sources().values())
        raise CipmError(f"{path} is a folder but not {known or 'a model folder any plugin reads'}")
    elif factory is not None:
        model = _from_weights(path, factory)
    elif path.suffix == ".pt2":
        model = _exported(path)
    elif unsafe_pickle:
        model = _unpickled(path)
    else:
        raise CipmError(
            f"{path} would have to be unpickled, which runs any code the file holds; pass "
            f"--unsafe-pickle only if you trust it, or give {formats()}"
        )
    if not isinstance(model, torch.nn.Module):
        raise CipmError(f"{path} holds a {type(model).__name__}, not a torch.nn.Module")
    return model.eval()


def load_tensors(path: Path, what: str) -> Any:
    """Tensors (alone or in lists, tuples and dicts) from a .pt file, never running code."""
    if not path.is_file():
        raise CipmError(f"{what} file {path} does not exist")
    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError:
        raise CipmError(
            f"{what} file {path} holds more than tensors, numbers, lists and dicts; cipm "
            f"does not unpickle code from {what} files"
        ) from None
    except Exception as e:
        raise CipmError(f"cannot read {what} from {path}: {e}") from e


def example_input(spec: str) -> Any:
    """``--input``: a shape such as ``1,3,32,32`` (random floats) or a .pt file of tensors."""
    if spec.endswith(".pt"):
        return load_tensors(Path(spec), "input")
    try:
        shape = [int(n) for n in spec.split(",")]
    except ValueError:
        raise CipmError(
            f"--input must be a shape like 1,3,32,32 or a .pt file, not {spec!r}"
        ) from None
    if any(n < 1 for n in shape):
        raise CipmError(f"--input dims must be whole numbers >= 1, got {spec!r}")
    if math.prod(shape) > 2**31:
        raise CipmError(f"--input {spec} has more elements than an example needs (at most 2^31)")
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def batches(data: Any, batch: int, whole: bool = False) -> list[Any]:
    """``--data``: a tensor of samples (cut into batches of `batch`; with `whole`, for a
    model of fixed shapes, a last shorter batch is left out) or a list of batches."""
    if batch < 1:
        raise CipmError(f"--batch must be at least 1, got {batch}")
    if isinstance(data, torch.Tensor) and data.dim() >= 1 and len(data):
        cut = list(data.split(batch))
        if whole and len(cut[-1]) < batch:
            cut.pop()
        if not cut:
            raise CipmError(
                f"--data holds {len(data)} samples, fewer than one batch of {batch}, the "
                "batch size this model's fixed shapes take"
            )
        return cut
    if isinstance(data, list | tuple) and data:
        return list(data)
    raise CipmError("--data must hold a tensor of samples or a non-empty list of batches")


def _from_weights(path: Path, factory: str) -> torch.nn.Module:
    module_name, _, attr = factory.partition(":")
    if not module_name or not attr:
        raise CipmError(
            f"--factory takes MODULE:CALLABLE (e.g. mypkg.models:build), not {factory!r}"
        )
    try:
        build = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise CipmError(f"--factory {factory}: {e}") from None
    try:
        model = build()
    except Exception as e:  # the user's own code: its failure, said in one line
        raise CipmError(f"--factory {factory} raised {type(e).__name__}: {e}") from e
    if not isinstance(model, torch.nn.Module):
        raise CipmError(f"--factory {factory} returned a {type(model).__name__}, not a module")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise CipmError("safetensors weights need: pip install 'cipm[formats]'") from e
        try:
            state = load_file(path)
        except Exception as e:  # SafetensorError, or an OSError of a truncated file
            raise CipmError(f"{path} is not a readable safetensors file: {e}") from None
    else:
        state = load_tensors(path, "weights")
    if not isinstance(state, dict):
        raise CipmError(f"{path} holds a {type(state).__name__}, not a state dict of weights")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise CipmError(f"weights in {path} do not fit --factory {factory}: {first}") from None
    return model


def _exported(path: Path) -> torch.nn.Module:
    try:
        with warnings.catch_warnings():  # torch's deprecation note on its own pytree specs
            warnings.filterwarnings("ignore", message=".*treespec, LeafSpec")
            return torch.export.unflatten(torch.export.load(path))
    except Exception as e:
        raise CipmError(f"cannot load the torch.export archive {path}: {e}") from e


def _unpickled(path: Path) -> Any:
    try:
        return torch.load(path, weights_only=False)
    except AttributeError as e:  # "Can't get attribute 'Net' on <module '__main__' ...>"
        raise CipmError(
            f"cannot load model from {path}: {e}. Its class must be importable here; a class "
            "defined in the saving script's __main__ is not: move it into a module, or save "
            "the weights (safetensors) and load them with --factory"
        ) from None
    except Exception as e:
        raise CipmError(f"cannot load model from {path}: {e}") from e

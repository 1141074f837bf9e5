"""Pruning that never returns a broken model: each pruned group is checked on example inputs.

Modules keep sizes in Python (head counts, reshape targets, split sizes). Where no
``cipm_resized`` plugin brings them in line, the pruned model fails inside its own forward.
A `Checker` runs each candidate on the example inputs. One-shot pruning (`searched`) checks
the whole result and, if it fails, finds the groups to blame by halving; pruning with data
checks after every group. Blamed groups are kept whole and reported (`PruneReport`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch

from cipm.batches import as_args
from cipm.errors import CipmError, CipmWarning, ResizeError
from cipm.graph.symmetry import SymmetryGraph
from cipm.pruning.result import KeptWhole, Pruned, PruneReport

__all__ = ["Checker", "coupled", "reported", "searched"]

Build = Callable[[Sequence[str]], torch.nn.Module]


class Checker:
    """Builds pruned candidates and runs them on example inputs, expecting outputs shaped
    as `model`'s (with `free_outputs`, groups may shrink output dims: then only their number
    is kept). Without example inputs only a module refusing its sizes is caught; `unchecked`
    then says why.

    `traced` inputs are the graph's: traced on, perhaps before the model changed dtype, so
    their floating tensors are cast to the model's; if the model still does not run on them,
    the checker goes without them instead of raising.

    Raises:
        CipmError: `model` itself does not run on (given, not `traced`) `example_inputs`.
    """

    def __init__(
        self, model: torch.nn.Module, example_inputs: Any, free_outputs: bool, *, traced: bool
    ) -> None:
        self.free = free_outputs
        self.example_inputs = _cast(example_inputs, model) if traced else example_inputs
        self.unchecked = "" if example_inputs is not None else "no example inputs"
        if example_inputs is None:
            return
        self.expected, failure = self._shapes(model)
        if failure is None:
            return
        if not traced:
            raise CipmError(f"the example inputs do not run the original model: {failure[1]}")
        self.example_inputs, self.unchecked = None, f"the traced inputs fail: {failure[1]}"

    def failure(self, candidate: torch.nn.Module) -> tuple[str, str] | None:
        """None if `candidate` runs like the original; else the innermost module that was
        running when it failed, and why."""
        if self.example_inputs is None:
            return None
        shapes, failure = self._shapes(candidate)
        if failure is None and shapes != self.expected:
            return "", f"outputs of shapes {shapes} instead of {self.expected}"
        return failure

    def built(
        self, make: Callable[[], torch.nn.Module]
    ) -> tuple[torch.nn.Module | None, tuple[str, str] | None]:
        """``make()``, or None and why it fails: a module that refuses its new sizes
        (a `ResizeError`) fails as a model that does not run. A failed candidate is dropped
        at once (a search holding one per level would hold a model per level)."""
        try:
            candidate = make()
        except ResizeError as e:
            return None, (e.module, str(e.__cause__ or e))
        failure = self.failure(candidate)
        return (None, failure) if failure is not None else (candidate, None)

    def _shapes(self, model: torch.nn.Module) -> tuple[list[Any], tuple[str, str] | None]:
        shapes, failure = _shapes(model, self.example_inputs)
        return ([len(s) for s in shapes] if self.free else shapes), failure


def coupled(graph: SymmetryGraph, names: Sequence[str]) -> list[list[str]]:
    """`names` in clusters of groups that share a tensor dimension (heads and their head
    size, the q | k | v segments of one projection): a module's code often follows their
    sizes only together, so a cluster is pruned or kept whole as one. In `names`' order."""
    parent = {n: n for n in names}

    def root(n: str) -> str:
        while parent[n] != n:
            n = parent[n]
        return n

    seen: dict[tuple[str, int], str] = {}
    for name in names:
        for m in graph[name].members:
            other = seen.setdefault((m.key, m.dim), name)
            parent[root(name)] = root(other)
    clusters: dict[str, list[str]] = {}
    for name in names:
        clusters.setdefault(root(name), []).append(name)
    return list(clusters.values())


def searched(
    build: Build, clusters: list[list[str]], checker: Checker
) -> tuple[torch.nn.Module, list[str], list[KeptWhole]]:
    """``build`` of every cluster's groups if the checker passes it; otherwise the clusters
    to blame, found by halving (a cluster is blamed when the model fails with it added to
    those known to run), and the model of the others. Returns the model, the groups pruned
    and the groups kept whole."""
    every = [n for cluster in clusters for n in cluster]
    whole, failure = checker.built(partial(build, every))
    if whole is not None:
        return whole, every, []
    good: list[str] = []
    blamed: list[KeptWhole] = []

    def add(part: list[list[str]]) -> None:  # candidates are not kept: one model at a time
        names = [n for cluster in part for n in cluster]
        _, failure = checker.built(partial(build, [*good, *names]))
        if failure is None:
            good.extend(names)
        elif len(part) == 1:
            blamed.extend(KeptWhole(n, *failure) for n in names)
        else:
            add(part[: len(part) // 2])
            add(part[len(part) // 2 :])

    if len(clusters) == 1:
        assert failure is not None
        blamed.extend(KeptWhole(n, *failure) for n in every)
    else:
        add(clusters[: len(clusters) // 2])
        add(clusters[len(clusters) // 2 :])
    # the groups of the last candidate that ran: built once more, the same model
    return build(good), good, blamed


def reported(
    model: torch.nn.Module,
    sizes: Mapping[str, tuple[int, int]],
    units: Mapping[str, torch.Tensor],
    kept: Sequence[KeptWhole],
    checker: Checker,
) -> Pruned:
    """`model` with its `PruneReport`; says in a `CipmWarning` what was kept whole, or that
    nothing could be checked."""
    if checker.unchecked:
        warnings.warn(
            f"prune could not run the pruned model to check it ({checker.unchecked}); pass "
            "example_inputs=", CipmWarning, stacklevel=3,
        )  # fmt: skip
    if kept:
        warnings.warn(
            f"prune kept {len(kept)} group(s) whole, their new sizes break the model's own "
            "code: " + "; ".join(f"'{k.group}' in {k.module or 'the model'}: {k.reason}"
                                 for k in kept) + " (the result's report lists them)",
            CipmWarning, stacklevel=3,
        )  # fmt: skip
    chosen = {g: tuple(int(i) for i in units[g]) for g in sizes}
    return Pruned(model, PruneReport(dict(sizes), chosen, tuple(kept), not checker.unchecked))


def _cast(example: Any, model: torch.nn.Module) -> Any:
    """`example` with its floating tensors in the dtype of `model`'s first floating one."""
    dtype = next((t.dtype for t in model.state_dict().values() if t.is_floating_point()), None)
    if dtype is None:
        return example
    if isinstance(example, torch.Tensor):
        return example.to(dtype) if example.is_floating_point() else example
    if isinstance(example, dict):
        return {k: _cast(v, model) for k, v in example.items()}
    if isinstance(example, tuple | list):
        return type(example)(_cast(v, model) for v in example)
    return example


def _shapes(
    model: torch.nn.Module, example: Any
) -> tuple[list[tuple[int, ...]], tuple[str, str] | None]:
    """Output shapes of `model` on `example`, or where and why it failed. It runs as the
    caller will run it; only after a failure again, with hooks that find the module (hooks
    change code paths: torch's fused transformer kernels are skipped when any are set)."""
    args, kwargs = as_args(example)
    try:
        with torch.no_grad():
            out = model(*args, **kwargs)
    except Exception as e:
        why = f"{type(e).__name__}: {_line(e)}"
        with _module_stack(model) as stack, contextlib.suppress(Exception), torch.no_grad():
            model(*args, **kwargs)
        return [], (stack[-1] if stack else "", why)
    return [tuple(t.shape) for t in _tensors(out)], None


@contextmanager
def _module_stack(model: torch.nn.Module) -> Iterator[list[str]]:
    """The paths of the modules running at each moment (innermost last)."""
    stack: list[str] = []

    def leave(*_: Any) -> None:  # a forward hook's non-None result would replace the output
        stack.pop()

    handles = []
    for path, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(lambda *_, p=path: stack.append(p)))
        handles.append(module.register_forward_hook(leave))
    try:
        yield stack
    finally:
        for handle in handles:
            handle.remove()


def _tensors(out: Any) -> Iterator[torch.Tensor]:
    """The tensors in a model's output: alone, in mappings (output classes that are dicts
    too), sequences, or the fields of a dataclass."""
    if isinstance(out, torch.Tensor):
        yield out
    elif isinstance(out, Mapping):
        for v in out.values():
            yield from _tensors(v)
    elif isinstance(out, tuple | list):
        for v in out:
            yield from _tensors(v)
    elif dataclasses.is_dataclass(out) and not isinstance(out, type):
        for f in dataclasses.fields(out):
            yield from _tensors(getattr(out, f.name))


def _line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else ""

"""The Hugging Face exporter: ``save_pretrained`` into a folder, with a config that describes
the model as it is, so ``from_pretrained`` rebuilds a pruned model at its pruned sizes.

The fields that hold the sizes are found with no list of model families: each config field
is changed once and the class built on the meta device, to see what it moves (tensor dims,
numbers modules hold); a field that moves a wrong size is tried at the size's ratio (``4864 ->
2432``: halved, or doubled if it divides) or, unset, at the size, and a greedy search keeps
the change (or pair) that leaves the fewest wrong. A number the classes derive unless the
config sets it (a head size) is pinned first, so pruned heads keep their size (pins not
needed are left out). What no field says (widths that differ between layers, a head size or
scale derived from a pruned width) is a `CipmError` that says what to prune instead. The
written folder is loaded back and its outputs compared with the model's, on the example
inputs or the model's ``dummy_inputs``; the policy is written beside as ``cipm_policy.json``.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cipm import CipmError, plugin

POLICY_FILE = "cipm_policy.json"
Item = tuple[str, int | str]  # (tensor, dim), dim -1 its shape; or (module, number attribute)
Sizes = dict[Item, Any]
Wrong = dict[Item, tuple[Any, Any]]  # item -> (the pruned model's value, the built one's)
Changes = dict[str, Any]  # config field -> value
Moves = Mapping[str, set[Item]]  # config field -> the items that changing it moves
_LAYER = re.compile(r"\.\d+(?=\.|$)")  # a layer index in a tensor name


def is_huggingface(model: torch.nn.Module) -> bool:
    transformers = sys.modules.get("transformers")  # not imported: cannot be one of its models
    return transformers is not None and isinstance(model, transformers.PreTrainedModel)


def pruned_config(model: Any) -> Any:
    """A copy of `model.config` with the sizes its modules have now.

    Raises:
        CipmError: the sizes differ between layers, or no fields of the config express them.
    """
    solver = _Solver(model, copy.deepcopy(model.config), _sizes(model))
    with _quiet(logs=True):
        if (twin := solver.built({})) is None:
            raise CipmError(f"{type(model).__name__} does not build from its own config")
        if not _hard(_diff(solver.have, twin)):
            return solver.base
        pins = solver.pins(twin)
        moves = solver.moves(pins)
        _check_layers(solver, twin, moves)
        changes, wrong = pins, solver.wrong(pins) or {}
        while (found := solver.step(changes, wrong, moves)) is not None:
            changes, wrong = found
        if _hard(wrong):
            raise _unsolved(solver, wrong, twin, moves)
        return _changed(solver.base, solver.minimal(changes, pins, wrong))


def config_fits(model: Any) -> str | None:
    """Why `model`'s config cannot describe it (`pruned_config`'s message; None: it can)."""
    try:
        pruned_config(model)
    except CipmError as e:
        return str(e)
    return None


@dataclass(frozen=True)
class _Solver:
    """Config changes (on shallow copies of `base`) that build `model`'s class at `have`."""

    model: Any
    base: Any
    have: Sizes

    def built(self, changes: Changes) -> Sizes | None:
        """The sizes of the model built with `changes` (None: a value refused, no build)."""
        try:
            with torch.device("meta"):
                return _sizes(type(self.model)(_changed(self.base, changes)))
        except Exception:
            return None

    def wrong(self, changes: Changes) -> Wrong | None:
        return None if (got := self.built(changes)) is None else _diff(self.have, got)

    def pins(self, twin: Sizes) -> Changes:
        """Integers the built modules hold alike under a name the config leaves unset (a
        derived head size), where setting them builds the same model."""
        values: dict[Any, set[Any]] = {}
        for (_, name), value in twin.items():
            if isinstance(name, str) and getattr(self.base, name, None) is None:
                values.setdefault(name, set()).add(value)
        pins = {k: v.pop() for k, v in values.items() if [type(x) for x in v] == [int]}
        if self.built(pins) == twin:
            return pins
        return {name: v for name, v in pins.items() if self.built({name: v}) == twin}

    def moves(self, changes: Changes) -> dict[str, set[Item]]:
        """Each number or unset field of the config -> what changing it (alone) moves."""
        base, found = self.wrong(changes) or {}, dict[str, set[Item]]()
        for name, value in _changed(self.base, changes).to_dict().items():
            if value is None or (type(value) in (int, float) and value > 0):
                for probe in [2] if value is None else [value // 2, 2 * value or 1]:
                    if (got := self.wrong({**changes, name: probe})) is not None:
                        found[name] = set(_diff(base, got))
                        break
        return found

    def step(self, changes: Changes, wrong: Wrong, moves: Moves) -> tuple[Changes, Wrong] | None:
        """The change (or pair) that leaves the fewest wrong, first one that makes no right size
        wrong (a head size that fits q, k, v but not the rotary table does); None: none helps."""
        tried: dict[tuple[tuple[str, Any], ...], Wrong] = {}
        for edit in _candidates(_changed(self.base, changes).to_dict(), wrong, moves):
            if (got := self.wrong({**changes, edit[0]: edit[1]})) is not None:
                tried[(edit,)] = got
        fixed = {e: len(_hard(wrong).keys() - got.keys()) for e, got in tried.items()}
        fixers: dict[str, tuple[str, Any]] = {}  # per field, the change that fixes most
        for (edit,) in sorted(tried, key=lambda e: (-fixed[e], _score(tried[e]))):
            if fixed[(edit,)]:
                fixers.setdefault(edit[0], edit)
        for a, b in itertools.combinations(list(fixers.values())[:6], 2):
            if (got := self.wrong({**changes, **dict((a, b))})) is not None:
                tried[(a, b)] = got
        better = [e for e in tried if _score(tried[e]) < _score(wrong)]
        broken = {e: bool(_hard(tried[e]).keys() - wrong.keys()) for e in better}
        best = min(better, key=lambda e: (broken[e], _score(tried[e]), len(e)), default=None)
        return None if best is None else ({**changes, **dict(best)}, tried[best])

    def minimal(self, changes: Changes, pins: Changes, wrong: Wrong) -> Changes:
        """`changes` without the pins (left as they were) that it does as well without."""
        for name, value in pins.items():
            fewer = {k: v for k, v in changes.items() if k != name}
            got = self.wrong(fewer) if changes.get(name) == value else None
            if got is not None and _score(got) <= _score(wrong):
                changes, wrong = fewer, got
        return changes


def _candidates(fields: Mapping[str, Any], wrong: Wrong, moves: Moves) -> set[tuple[str, Any]]:
    """(field, value) for fields that move a wrong size: the value times its ratio, pruned /
    built or built / pruned (a count, or a width per count); for an unset field, the size."""
    found: set[tuple[str, Any]] = set()
    for name, moved in moves.items():
        value = fields.get(name)
        for have, got in (wrong[item] for item in moved & wrong.keys()):
            if type(have) is int and type(got) is int and min(have, got) > 0:
                found |= {(name, have)} if value is None else set()
                for num, den in ((have, got), (got, have)):
                    if type(value) is float or (type(value) is int and value * num % den == 0):
                        found.add((name, type(value)(value * num / den)))
    return {(name, value) for name, value in found if fields.get(name) != value}


def _check_layers(solver: _Solver, twin: Sizes, moves: Moves) -> None:
    """Raise if a wrong size differs between the pruned layers (the config has one)."""
    layers: dict[tuple[str, Any], list[Item]] = {}
    for item in solver.have:
        layers.setdefault((_LAYER.sub(".*", item[0]), item[1]), []).append(item)
    for item in _hard(_diff(solver.have, twin)):
        same = layers.get((_LAYER.sub(".*", item[0]), item[1]), [])
        sizes = [solver.have[i] for i in same]
        if len(set(sizes)) > 1 and len({twin.get(i) for i in same}) == 1:
            owners = sorted((len(m), f) for f, m in moves.items() if item in m)
            what = owners[0][1] if owners else f"width of {_LAYER.sub('.*', item[0])}"
            raise CipmError(
                f"{type(solver.base).__name__} has one {what} for every layer, but the pruned "
                f"layers have {sizes}; prune every layer to the same width: sizes = cipm."
                "pruning.uniform_sizes(graph, sizes), then cipm.prune(model, stats, sizes="
                "sizes) (or export to ONNX or safetensors)"
            )


def _unsolved(solver: _Solver, wrong: Wrong, twin: Sizes, moves: Moves) -> CipmError:
    """The error for what no field sets, in the user's terms: the tensors, what to do."""
    name, model, hard = type(solver.base).__name__, type(solver.model).__name__, _hard(wrong)
    rows = {k: (v[0], twin.get((k, -1))) for (k, d), v in hard.items() if d == -1}
    rows |= {f"{k}.{d}": v for (k, d), v in hard.items() if isinstance(d, str)}
    shown = itertools.islice(rows.items(), 3)
    what = "; ".join(f"{k}: {a} in the model, {b} from the config" for k, (a, b) in shown)
    heads = [f for f, v in solver.base.to_dict().items() if "head" in f and type(v) is int]
    if heads and not moves.get("head_dim") and any("att" in k for k in rows):
        return CipmError(
            f"{name} cannot describe this pruned {model} ({what}): {name} stores no head size but "
            f"derives it from the residual width and {heads[0]}: prune the residual stream by "
            "the heads' fraction with them, or leave the heads out (kinds=('hidden',)), or "
            "export it to ONNX or safetensors instead"
        )
    return CipmError(
        f"no field of {name} sets what this pruned {model} has ({what}): leave the groups "
        "these belong to out of the pruning, or export it to ONNX or safetensors instead"
    )


def _sizes(model: torch.nn.Module) -> Sizes:
    """Every tensor's dims and shape (buffers too), and every number a module holds."""
    found: Sizes = {}
    for key, tensor in {**dict(model.named_buffers()), **model.state_dict(keep_vars=True)}.items():
        found.update(((key, d), n) for d, n in enumerate(tensor.shape))
        found[(key, -1)] = tuple(tensor.shape)
    for path, module in model.named_modules():
        for k, v in vars(module).items():
            if type(v) in (int, float) and v == v and not k.startswith("_"):
                found[(path, k)] = v
    return found


def _diff(have: Sizes, got: Sizes) -> Wrong:
    """The items whose values differ, in the pruned model's order."""
    keys = [*have, *(k for k in got if k not in have)]
    return {k: (have.get(k), got.get(k)) for k in keys if have.get(k) != got.get(k)}


def _hard(wrong: Wrong) -> Wrong:
    """Tensor sizes and scales (an integer a module keeps may be a copy it never reads)."""
    return {k: v for k, v in wrong.items() if type(k[1]) is int or float in map(type, v)}


def _score(wrong: Wrong) -> tuple[int, int]:
    return len(_hard(wrong)), len(wrong)


def _changed(config: Any, changes: Changes) -> Any:
    """A shallow copy of `config` with `changes` set."""
    config = copy.copy(config)
    for name, value in changes.items():
        setattr(config, name, value)
    return config


def write_huggingface(job: plugin.ExportJob, path: Path) -> None:
    """save_pretrained with the pruned config; reload and compare on the example inputs, or
    without them on the model's own ``dummy_inputs``.

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
    example = model.dummy_inputs if job.example_inputs is None else job.example_inputs
    try:
        with _quiet():
            reloaded = type(model).from_pretrained(str(path), local_files_only=True)
    except Exception as e:
        raise CipmError(f"the written {type(model).__name__} does not load back: {e}") from e
    reloaded = reloaded.to(next(model.parameters()).dtype)
    for inputs in (example, plugin.fresh_inputs(example)):
        with plugin.eval_semantics(model, warn=False):
            expected = plugin.outputs(model, inputs)
        plugin.mismatch(expected, plugin.outputs(reloaded.eval(), inputs), "the reloaded model")


@contextlib.contextmanager
def _quiet(logs: bool = False) -> Iterator[None]:
    """No transformers progress bars in the block; with `logs`, no log lines either."""
    from transformers.utils import logging

    bars, verbosity = logging.is_progress_bar_enabled(), logging.get_verbosity()
    logging.disable_progress_bar()
    logging.set_verbosity(logging.ERROR if logs else verbosity)
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def read_huggingface_policy(path: Path) -> str | None:
    return p.read_text(encoding="utf-8") if (p := path / POLICY_FILE).is_file() else None


@plugin.hookimpl
def cipm_exporters() -> Mapping[str, plugin.Exporter]:
    return {
        "huggingface": plugin.Exporter(
            write=write_huggingface,
            folder=True,
            accepts=is_huggingface,
            read_policy=read_huggingface_policy,
            description="a Hugging Face model folder (save_pretrained, config at the pruned "
            "sizes); for transformers models",
            fits=config_fits,
        )
    }

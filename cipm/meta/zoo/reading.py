"""Reading a zoo folder back, and the file helpers its writer shares."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from cipm.errors import CipmError
from cipm.graph.symmetry import Permutation, SymmetryGraph
from cipm.meta.zoo.families import untrained
from cipm.meta.zoo.specs import SPLITS, Specimen, ZooSpec, arch
from cipm.statistics.capture import representative_site
from cipm.statistics.group import GroupStatistics, Statistics
from cipm.statistics.moments import Moments
from cipm.tensors.features import unit_features
from cipm.tensors.fitted import fitted_tensors

__all__ = [
    "FILES",
    "load_entry",
    "load_zoo",
    "pair_target",
    "read_json",
    "read_tensors",
    "save_tensors",
]

FILES = ("model.safetensors", "graph.json", "stats.safetensors", "calibration.safetensors")


def load_zoo(folder: str | Path, split: str | Iterable[str] | None = None) -> list[Specimen]:
    """The specimens of a zoo `build_zoo` made, in its order: all, or those of `split` (a
    split name or several).

    Raises:
        CipmError: no zoo in `folder` (or its build did not finish), an unknown split, or an
            entry that is missing, corrupt or does not fit its spec (naming entry and file).
    """
    root = Path(folder)
    wanted = set(SPLITS) if split is None else {split} if isinstance(split, str) else set(split)
    unknown = sorted(wanted - set(SPLITS))
    if unknown:
        raise CipmError(f"unknown zoo split(s) {unknown}; use {list(SPLITS)}")
    entries = _read_index(root)["entries"]
    return [load_entry(root, _spec(e, root)) for e in entries if e.get("split") in wanted]


def pair_target(folder: str | Path, a: Specimen, b: Specimen) -> Permutation:
    """The activation-matching permutation of `b` onto `a` that `build_zoo` computed:
    ``cipm.permute(b.model, pair_target(folder, a, b))`` lines up with ``a.model``.

    Raises:
        CipmError: `a` and `b` are not a pair (lower seed first), or the zoo has no target
            for them, or the stored one does not fit `a`'s graph.
    """
    if arch(a.spec) != arch(b.spec) or a.spec.seed >= b.spec.seed:
        raise CipmError(
            f"{a.spec.name} and {b.spec.name} are not a zoo pair: the same family, width and "
            "depth, the lower seed first (see pairs())"
        )
    path = Path(folder) / "pairs" / f"{a.spec.name}__{b.spec.name}.safetensors"
    if not path.is_file():
        raise CipmError(f"no pair target {path}; run build_zoo({str(folder)!r}) with both specs")
    return Permutation(a.graph, read_tensors(path, f"pair target {path.name}"))


def load_entry(root: Path, spec: ZooSpec) -> Specimen:
    entry, where = root / spec.name, f"zoo entry {spec.name} in {root}"
    missing = [name for name in (*FILES, "meta.json") if not (entry / name).is_file()]
    if missing:
        raise CipmError(f"{where} has no {', '.join(missing)}; run build_zoo to build it again")
    meta = read_json(entry / "meta.json", where)
    model = untrained(spec)
    try:
        model.load_state_dict(read_tensors(entry / "model.safetensors", where))
    except RuntimeError as e:
        raise CipmError(f"{where}: model.safetensors is not a {spec.name} model's ({e})") from None
    model.eval()
    try:
        graph = SymmetryGraph.from_json((entry / "graph.json").read_text(encoding="utf-8"))
        tensors = fitted_tensors(model, graph)
    except CipmError as e:
        raise CipmError(f"{where}: graph.json is not this model's graph: {e}") from None
    stored = read_tensors(entry / "calibration.safetensors", where)
    calibration = [
        (stored[f"inputs/{i}"], stored[f"targets/{i}"])
        for i in range(len(stored) // 2)
        if f"inputs/{i}" in stored and f"targets/{i}" in stored
    ]
    if not calibration or 2 * len(calibration) != len(stored):
        raise CipmError(f"{where}: calibration.safetensors does not hold (inputs, targets) batches")
    stats = read_tensors(entry / "stats.safetensors", where)
    views = []
    for i in range(2):
        groups = {}
        for g in graph:
            key = f"{i}/{g.name}/"
            try:
                count, mean, comoment = (stats[key + k] for k in ("count", "mean", "comoment"))
            except KeyError:
                raise CipmError(
                    f"{where}: stats.safetensors has no view {i} of group '{g.name}'"
                ) from None
            if mean.shape != (g.size,) or comoment.shape != (g.size, g.size):
                raise CipmError(f"{where}: stats of group '{g.name}' are not of its {g.size} units")
            moments = Moments(int(count), mean, comoment)
            site = representative_site(g)
            groups[g.name] = GroupStatistics(g, site, moments, unit_features(tensors, graph, g))
        views.append(Statistics(graph, groups))
    try:
        split, accuracy = meta["split"], float(meta["accuracy"])
    except (KeyError, TypeError, ValueError):
        raise CipmError(f"{where}: meta.json has no split and accuracy") from None
    return Specimen(spec, split, model, graph, tuple(views), calibration, accuracy)


def _read_index(root: Path) -> dict[str, Any]:
    if not root.is_dir():
        raise CipmError(f"no zoo at {root}: there is no such folder; make one with build_zoo")
    path = root / "index.json"
    if not path.is_file():
        raise CipmError(
            f"no zoo index {path}: the zoo's build did not finish; run build_zoo({str(root)!r}) "
            "to finish it"
        )
    index = read_json(path, f"zoo index {path}")
    if not isinstance(index.get("entries"), list):
        raise CipmError(f"zoo index {path} lists no entries; run build_zoo to write it again")
    return index


def _spec(entry: Any, where: Path) -> ZooSpec:
    try:
        return ZooSpec(**entry["spec"])
    except (KeyError, TypeError) as e:
        raise CipmError(
            f"zoo index {where / 'index.json'}: an entry has no valid spec ({e})"
        ) from None


def read_json(path: Path, where: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CipmError(f"{where}: {path.name} is not readable JSON ({e})") from None
    if not isinstance(data, dict):
        raise CipmError(f"{where}: {path.name} holds no JSON object")
    return data


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write tensors as safetensors: each its own contiguous copy (batches and views share
    storage, which safetensors refuses), no metadata (whose order varies: the same tensors
    give the same bytes)."""
    save_file, _ = _safetensors()
    save_file({k: v.detach().clone().contiguous() for k, v in tensors.items()}, str(path))


def read_tensors(path: Path, where: str) -> dict[str, torch.Tensor]:
    _, load_file = _safetensors()
    from safetensors import SafetensorError

    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as e:
        raise CipmError(f"{where}: {path.name} is not a readable safetensors file ({e})") from None


def _safetensors() -> tuple[Callable[..., None], Callable[[str], dict[str, torch.Tensor]]]:
    try:
        from safetensors.torch import load_file, save_file
    except ImportError as e:
        raise CipmError("the zoo is stored as safetensors: pip install 'cipm[formats]'") from e
    return save_file, load_file

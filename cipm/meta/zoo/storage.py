"""Building a zoo folder: training, tracing, statistics and pair targets (the folder's layout:
`cipm.meta.zoo`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from cipm.alignment.dispatch import align
from cipm.discovery import trace
from cipm.errors import CipmError
from cipm.examples.data import train_classifier
from cipm.graph.symmetry import SymmetryGraph
from cipm.io import atomic_path, write_text_atomic
from cipm.meta.zoo.families import FAMILY, accuracy_on, one_thread, untrained
from cipm.meta.zoo.reading import FILES, load_entry, read_json, save_tensors
from cipm.meta.zoo.specs import (
    HELDOUT_FAMILY,
    HELDOUT_SEEDS,
    HELDOUT_WIDTHS,
    Specimen,
    ZooSpec,
    arch,
    same_architecture,
    split_of,
    zoo_specs,
)
from cipm.statistics.collection import CollectConfig, collect

__all__ = ["build_zoo"]

CALIBRATION_BATCHES = 4  # the first 512 training samples; each half is one view


def build_zoo(
    folder: str | Path,
    specs: Sequence[ZooSpec] | None = None,
    *,
    progress: bool = True,
    heldout_seeds: Sequence[int] = HELDOUT_SEEDS,
    heldout_widths: Sequence[int] = HELDOUT_WIDTHS,
) -> Path:
    """Train, trace and collect statistics of every spec (default: `zoo_specs()`), align
    every pair, and save it all in `folder`. Entries and pair targets already there are kept
    (a rebuild retrains nothing); each is written atomically, so an interrupted build
    resumes. Everything is seeded: a rebuild from scratch makes the same models.

    Args:
        heldout_seeds, heldout_widths: which specs `split_of` holds out (recorded in the
            index); use those `zoo_specs` was given.

    Returns:
        `folder`, whose index.json lists these specs (an entry of another build left there
        is not listed, and `load_zoo` skips it).

    Raises:
        CipmError: specs that are not ZooSpecs or repeat, or a family's data is missing
            (scikit-learn, mnist1d: ``pip install 'cipm[data]'``).
    """
    specs = list(zoo_specs() if specs is None else specs)
    bad = [s for s in specs if not isinstance(s, ZooSpec)]
    if bad:
        raise CipmError(f"build_zoo takes ZooSpecs, got {type(bad[0]).__name__}")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise CipmError(
            f"build_zoo got specs twice: {sorted({n for n in names if names.count(n) > 1})}"
        )
    root = Path(folder)
    (root / "pairs").mkdir(parents=True, exist_ok=True)  # the zoo's own folders
    splits = {
        s.name: split_of(s, heldout_seeds=heldout_seeds, heldout_widths=heldout_widths)
        for s in specs
    }
    todo = same_architecture(specs, lambda s: s)
    graphs: dict[tuple[str, int, int], SymmetryGraph] = {}
    accuracy: dict[str, float] = {}
    loaded: dict[str, Specimen] = {}
    bar = tqdm(total=len(specs) + len(todo), desc="zoo", unit="model", disable=not progress)
    with bar, one_thread():
        for spec in specs:
            bar.set_postfix_str(spec.name)
            accuracy[spec.name] = _entry(root / spec.name, spec, splits[spec.name], graphs)
            bar.update()
        for a, b in todo:
            bar.set_postfix_str(f"align {b.name}")
            _pair(root, a, b, loaded)
            bar.update()
    index = {
        "heldout": {
            "family": HELDOUT_FAMILY,
            "seeds": list(heldout_seeds),
            "widths": list(heldout_widths),
        },
        "entries": [
            {"spec": asdict(s), "split": splits[s.name], "accuracy": accuracy[s.name]}
            for s in specs
        ],
        "pairs": [[a.name, b.name] for a, b in todo],
    }
    write_text_atomic(root / "index.json", json.dumps(index, indent=1))
    return root


def _entry(
    entry: Path, spec: ZooSpec, split: str, graphs: dict[tuple[str, int, int], SymmetryGraph]
) -> float:
    """Train and save one entry, unless it is there already; its accuracy. `graphs` holds
    the graph of each architecture traced so far (it depends on the wiring, not on the
    weights, so one trace serves every seed)."""
    cached = _cached(entry, split)
    if cached is not None:
        return cached
    family = FAMILY[spec.family]
    train, test = family.data()
    model = train_classifier(
        untrained(spec), train, epochs=family.epochs, seed=spec.seed, lr=family.lr
    )
    accuracy = accuracy_on(model, test)
    calibration = train[:CALIBRATION_BATCHES]
    if arch(spec) not in graphs:
        graphs[arch(spec)] = trace(model, calibration[0][0][:2])
    graph = graphs[arch(spec)]
    half = len(calibration) // 2
    views = [
        collect(model, graph, part, config=CollectConfig(progress=False))
        for part in (calibration[:half], calibration[half:])
    ]
    stats = {
        f"{i}/{name}/{part}": value
        for i, view in enumerate(views)
        for name, s in view.items()
        for part, value in (
            ("count", torch.tensor(s.count)),
            ("mean", s.mean),
            ("comoment", s.moments.comoment),
        )
    }
    batches = {
        f"{what}/{i}": t
        for i, b in enumerate(calibration)
        for what, t in zip(("inputs", "targets"), b, strict=True)
    }
    with atomic_path(entry, folder=True) as tmp:
        save_tensors(tmp / "model.safetensors", model.state_dict())
        (tmp / "graph.json").write_text(graph.to_json(), encoding="utf-8")
        save_tensors(tmp / "stats.safetensors", stats)
        save_tensors(tmp / "calibration.safetensors", batches)
        meta = {"spec": asdict(spec), "split": split, "accuracy": accuracy}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return accuracy


def _cached(entry: Path, split: str) -> float | None:
    """The accuracy of a complete entry (its split label brought up to date), or None."""
    if not all((entry / name).is_file() for name in (*FILES, "meta.json")):
        return None
    try:
        meta = read_json(entry / "meta.json", str(entry))
        accuracy = float(meta["accuracy"])
    except (CipmError, KeyError, TypeError, ValueError):
        return None  # a damaged entry is built again
    if meta.get("split") != split:
        write_text_atomic(entry / "meta.json", json.dumps({**meta, "split": split}, indent=1))
    return accuracy


def _pair(root: Path, a: ZooSpec, b: ZooSpec, loaded: dict[str, Specimen]) -> None:
    """Align b onto a by activation matching on the calibration set, unless done already."""
    path = root / "pairs" / f"{a.name}__{b.name}.safetensors"
    if path.is_file():
        return
    for spec in (a, b):
        if spec.name not in loaded:
            loaded[spec.name] = load_entry(root, spec)
    sa, sb = loaded[a.name], loaded[b.name]
    perm = align(sa.model, sb.model, sa.graph, method="activation", data=sa.calibration)
    with atomic_path(path) as tmp:
        save_tensors(tmp, {name: perm[name] for name in perm})

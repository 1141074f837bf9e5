"""The model zoo the meta-analysis network learns from: small trained models of four families,
their symmetry graphs, their statistics on two disjoint calibration halves, and the
activation-matching permutation between every two models that differ only in seed.

`build_zoo` trains and saves every model once (an interrupted build resumes where it
stopped; a finished one is read, not retrained); `load_zoo` reads it back without training
or regenerating data. A zoo folder holds::

    index.json                            every entry (spec, split, accuracy), the pairs,
                                          the held-out seeds, widths and family
    <spec.name>/model.safetensors         the state dict (the module is rebuilt from the spec)
    <spec.name>/graph.json                the SymmetryGraph
    <spec.name>/stats.safetensors         per view and group: count, mean, co-moment (float64)
    <spec.name>/calibration.safetensors   the calibration batches (inputs, targets)
    <spec.name>/meta.json                 spec, split, accuracy
    pairs/<a.name>__<b.name>.safetensors  per group: the order that puts b's units in a's

Example:
    >>> build_zoo("out/zoo")                                  # doctest: +SKIP
    >>> train = load_zoo("out/zoo", split="train")            # doctest: +SKIP
    >>> a, b = pairs(train)[0]                                # doctest: +SKIP
    >>> perm = pair_target("out/zoo", a, b)                   # doctest: +SKIP
    >>> aligned = cipm.permute(b.model, perm)  # lines up with a.model  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import itertools
import json
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from cipm.alignment.dispatch import align
from cipm.discovery import trace
from cipm.errors import CipmError
from cipm.graph.permutation import Permutation
from cipm.graph.symmetry import SymmetryGraph
from cipm.io import atomic_path, write_text_atomic
from cipm.statistics.capture import representative_site
from cipm.statistics.collection import collect
from cipm.statistics.group import GroupStatistics, Statistics
from cipm.statistics.moments import Moments
from cipm.tensors.features import unit_features
from cipm.tensors.modify import fitted_tensors
from cipm.testing.data import Batches, digits, train_classifier
from cipm.testing.sequences import Block

__all__ = [
    "FAMILIES",
    "SPLITS",
    "Specimen",
    "ZooSpec",
    "build_zoo",
    "family_data",
    "load_zoo",
    "pair_target",
    "pairs",
    "split_of",
    "zoo_specs",
]

FAMILIES: tuple[str, ...] = ("mlp-digits", "cnn-digits", "mlp-mnist1d", "transformer-seq")
SPLITS: tuple[str, ...] = ("train", "heldout-seed", "heldout-width", "heldout-family")
HELDOUT_FAMILY = "transformer-seq"
HELDOUT_SEEDS: tuple[int, ...] = (3,)
HELDOUT_WIDTHS: tuple[int, ...] = (128,)
BATCH = 128
CALIBRATION_BATCHES = 4  # the first 512 training samples; each half is one view
HEADS = 2  # attention heads of the transformer family
SEQUENCE, VOCAB = 12, 16  # the transformer family's task
FILES = ("model.safetensors", "graph.json", "stats.safetensors", "calibration.safetensors")


@dataclass(frozen=True)
class ZooSpec:
    """One model of the zoo: its family, width (hidden units, channels or embedding dims),
    depth (hidden layers, conv blocks or transformer blocks) and training seed.

    Raises:
        CipmError: an unknown family, a width, depth or seed that is not a whole number in
            range, or a transformer width its heads do not divide.
    """

    family: str
    width: int
    depth: int
    seed: int

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise CipmError(f"unknown zoo family {self.family!r}; use one of {list(FAMILIES)}")
        for name, low in (("width", 1), ("depth", 1), ("seed", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise CipmError(f"ZooSpec.{name} must be a whole number >= {low}, got {value!r}")
        if self.family == "transformer-seq" and self.width % HEADS:
            raise CipmError(
                f"ZooSpec width {self.width} of a transformer-seq model must be a multiple "
                f"of its {HEADS} heads"
            )

    @property
    def name(self) -> str:
        """The entry's folder name, e.g. ``mlp-digits-w64-d2-s0``."""
        return f"{self.family}-w{self.width}-d{self.depth}-s{self.seed}"


@dataclass(frozen=True, eq=False)
class Specimen:
    """A trained model of the zoo, with what the meta-analysis network reads of it.

    Attributes:
        spec: what it is. split: ``"train"``, ``"heldout-seed"``, ``"heldout-width"`` or
            ``"heldout-family"``.
        model: trained, in eval mode, float32. graph: its symmetry graph.
        views: its statistics on the two disjoint halves of `calibration`.
        calibration: the calibration batches, (inputs, targets) as `cipm.collect` takes them.
        accuracy: test accuracy of the trained model, on data it was not trained on.
    """

    spec: ZooSpec
    split: str
    model: nn.Module
    graph: SymmetryGraph
    views: tuple[Statistics, ...]
    calibration: list[tuple[torch.Tensor, torch.Tensor]]
    accuracy: float

    @property
    def stats(self) -> Statistics:
        """Statistics of the whole calibration set: the views merged (exact)."""
        return functools.reduce(Statistics.merge, self.views)


def zoo_specs(
    families: Sequence[str] = FAMILIES,
    widths: Sequence[int] = (16, 32, 64),
    heldout_widths: Sequence[int] = HELDOUT_WIDTHS,
    depths: Sequence[int] = (2, 3),
    seeds: Sequence[int] = (0, 1, 2),
    heldout_seeds: Sequence[int] = HELDOUT_SEEDS,
) -> list[ZooSpec]:
    """Every combination of family, width (trained and held out), depth and seed (trained
    and held out): the default zoo has 4 x 4 x 2 x 4 = 128 models."""
    return [
        ZooSpec(family, width, depth, seed)
        for family in families
        for width in (*widths, *heldout_widths)
        for depth in depths
        for seed in (*seeds, *heldout_seeds)
    ]


def split_of(
    spec: ZooSpec,
    *,
    heldout_seeds: Sequence[int] = HELDOUT_SEEDS,
    heldout_widths: Sequence[int] = HELDOUT_WIDTHS,
) -> str:
    """The split `spec` belongs to: the held-out family first, then held-out widths, then
    held-out seeds; ``"train"`` otherwise."""
    if spec.family == HELDOUT_FAMILY:
        return "heldout-family"
    if spec.width in heldout_widths:
        return "heldout-width"
    if spec.seed in heldout_seeds:
        return "heldout-seed"
    return "train"


def family_data(family: str) -> tuple[Batches, Batches]:
    """The (train, test) batches of a family's task, the same for every seed: its models
    were trained on the first and their `accuracy` is on the second.

    Raises:
        CipmError: an unknown family, or its data's package is missing.
    """
    if family not in FAMILY:
        raise CipmError(f"unknown zoo family {family!r}; use one of {list(FAMILIES)}")
    train, test = FAMILY[family].data()
    return list(train), list(test)  # the cached lists stay as they are


def pairs(zoo: Sequence[Specimen]) -> list[tuple[Specimen, Specimen]]:
    """Every two specimens of the same family, width and depth, lower seed first."""
    return _pairs(zoo, lambda s: s.spec)


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
    splits = {
        s.name: split_of(s, heldout_seeds=heldout_seeds, heldout_widths=heldout_widths)
        for s in specs
    }
    todo = _pairs(specs, lambda s: s)
    graphs: dict[tuple[str, int, int], SymmetryGraph] = {}
    accuracy: dict[str, float] = {}
    loaded: dict[str, Specimen] = {}
    bar = tqdm(total=len(specs) + len(todo), desc="zoo", unit="model", disable=not progress)
    with bar, _one_thread():
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
    return [_load_entry(root, _spec(e, root)) for e in entries if e.get("split") in wanted]


def pair_target(folder: str | Path, a: Specimen, b: Specimen) -> Permutation:
    """The activation-matching permutation of `b` onto `a` that `build_zoo` computed:
    ``cipm.permute(b.model, pair_target(folder, a, b))`` lines up with ``a.model``.

    Raises:
        CipmError: `a` and `b` are not a pair (lower seed first), or the zoo has no target
            for them, or the stored one does not fit `a`'s graph.
    """
    if _arch(a.spec) != _arch(b.spec) or a.spec.seed >= b.spec.seed:
        raise CipmError(
            f"{a.spec.name} and {b.spec.name} are not a zoo pair: the same family, width and "
            "depth, the lower seed first (see pairs())"
        )
    path = Path(folder) / "pairs" / f"{a.spec.name}__{b.spec.name}.safetensors"
    if not path.is_file():
        raise CipmError(f"no pair target {path}; run build_zoo({str(folder)!r}) with both specs")
    return Permutation(a.graph, _read_tensors(path, f"pair target {path.name}"))


# -- the families -------------------------------------------------------------------------
@dataclass(frozen=True)
class _Family:
    """How a family's models are made and trained; the data is the same for every seed."""

    data: Callable[[], tuple[Batches, Batches]]  # (train, test) batches
    model: Callable[[int, int], nn.Module]  # (width, depth) -> an untrained model
    epochs: int
    lr: float


def _mlp(inputs: int) -> Callable[[int, int], nn.Module]:
    def build(width: int, depth: int) -> nn.Module:
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(inputs if i == 0 else width, width), nn.ReLU()]
        return nn.Sequential(*layers, nn.Linear(width, 10))

    return build


def _cnn(width: int, depth: int) -> nn.Module:
    """`depth` conv3x3-BatchNorm-ReLU blocks (a max-pool after the first: 8x8 -> 4x4, which
    quarters the cost of the rest), global average pooling, a linear classifier."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Conv2d(1 if i == 0 else width, width, 3, padding=1), nn.BatchNorm2d(width)]
        layers += [nn.ReLU(), nn.MaxPool2d(2)] if i == 0 else [nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))


class _SequenceClassifier(nn.Module):
    """Token and position embeddings, pre-norm transformer blocks, mean over tokens, head."""

    def __init__(self, width: int, depth: int) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(VOCAB, width), nn.Embedding(SEQUENCE, width)
        self.blocks = nn.ModuleList(
            Block(width, HEADS, 2 * width, False, True) for _ in range(depth)
        )
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, 10)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tok(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x).mean(dim=1))


def _batches(x: torch.Tensor, y: torch.Tensor) -> Batches:
    return list(zip(x.split(BATCH), y.split(BATCH), strict=True))


def _split(x: torch.Tensor, y: torch.Tensor) -> tuple[Batches, Batches]:
    cut = int(0.8 * len(x))
    return _batches(x[:cut], y[:cut]), _batches(x[cut:], y[cut:])


@contextmanager
def _kept_global_random() -> Iterator[None]:
    """Leave numpy's and Python's global generators as they were: mnist1d seeds both, and
    loading scikit-learn's digits draws from Python's."""
    state = np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        np.random.set_state(state[0])
        random.setstate(state[1])


@functools.cache
def _digits(image: bool) -> tuple[Batches, Batches]:
    with _kept_global_random():
        return digits(image=image, batch=BATCH)


@functools.cache
def _mnist1d() -> tuple[Batches, Batches]:
    """MNIST-1D's 4000/1000 split, made procedurally (nothing is downloaded), standardized
    per position with the training set's mean and std."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as e:
        raise CipmError("the mlp-mnist1d family needs mnist1d: pip install 'cipm[data]'") from e
    with _kept_global_random():
        data = make_dataset(get_dataset_args())
    x, x_test = (torch.tensor(data[k], dtype=torch.float32) for k in ("x", "x_test"))
    mean, std = x.mean(0), x.std(0) + 1e-6
    return (
        _batches((x - mean) / std, torch.tensor(data["y"])),
        _batches((x_test - mean) / std, torch.tensor(data["y_test"])),
    )


@functools.cache
def _majority_sequences(count: int = 3000, seed: int = 0) -> tuple[Batches, Batches]:
    """Name the majority token: sequences of `SEQUENCE` tokens of which 4 are the class
    (one of the first 10 tokens) and the rest any other token, each fewer than 4 times."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (count,), generator=gen)
    x = torch.empty(count, SEQUENCE, dtype=torch.long)
    todo = torch.arange(count)
    while len(todo):  # draw again the rare sequences where another token ties the class
        label = y[todo, None]
        drawn = torch.randint(0, VOCAB - 1, (len(todo), SEQUENCE), generator=gen)
        drawn += (drawn >= label).long()  # any token but the class
        at = torch.rand(len(todo), SEQUENCE, generator=gen).argsort(1)[:, :4]
        drawn.scatter_(1, at, label.expand(-1, 4))
        others = F.one_hot(drawn, VOCAB).sum(1).scatter(1, label, 0)
        fine = others.max(1).values < 4
        x[todo[fine]] = drawn[fine]
        todo = todo[~fine]
    return _split(x, y)


FAMILY: dict[str, _Family] = {
    "mlp-digits": _Family(functools.partial(_digits, False), _mlp(64), epochs=30, lr=1e-3),
    "cnn-digits": _Family(functools.partial(_digits, True), _cnn, epochs=12, lr=3e-3),
    "mlp-mnist1d": _Family(_mnist1d, _mlp(40), epochs=40, lr=2e-3),
    "transformer-seq": _Family(_majority_sequences, _SequenceClassifier, epochs=6, lr=3e-3),
}


def _arch(spec: ZooSpec) -> tuple[str, int, int]:
    return spec.family, spec.width, spec.depth


def _pairs(items: Sequence[Any], spec_of: Callable[[Any], ZooSpec]) -> list[tuple[Any, Any]]:
    """Every two items of the same architecture and different seeds, lower seed first."""
    by_arch: dict[tuple[str, int, int], list[Any]] = {}
    for item in items:
        by_arch.setdefault(_arch(spec_of(item)), []).append(item)
    found = []
    for group in by_arch.values():
        group.sort(key=lambda item: spec_of(item).seed)
        found += [
            (a, b)
            for a, b in itertools.combinations(group, 2)
            if spec_of(a).seed != spec_of(b).seed
        ]
    return found


def _model(spec: ZooSpec) -> nn.Module:
    """An untrained model of `spec`, initialized from its seed (the caller's generator is
    left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        return FAMILY[spec.family].model(spec.width, spec.depth)


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run on one thread: torch's parallel reductions add in an order that depends on the
    thread count, so this makes the same models on any machine (and a busy one does not
    stall on thread barriers); the caller's setting is restored."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _accuracy(model: nn.Module, test: Batches) -> float:
    with torch.no_grad():
        right = sum(int((model(x).argmax(1) == y).sum()) for x, y in test)
    return right / sum(len(y) for _, y in test)


# -- storage ------------------------------------------------------------------------------
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
        _model(spec), train, epochs=family.epochs, seed=spec.seed, lr=family.lr
    )
    accuracy = _accuracy(model, test)
    calibration = train[:CALIBRATION_BATCHES]
    if _arch(spec) not in graphs:
        graphs[_arch(spec)] = trace(model, calibration[0][0][:2])
    graph = graphs[_arch(spec)]
    half = len(calibration) // 2
    views = [
        collect(model, graph, part, progress=False)
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
        _save(tmp / "model.safetensors", model.state_dict())
        (tmp / "graph.json").write_text(graph.to_json(), encoding="utf-8")
        _save(tmp / "stats.safetensors", stats)
        _save(tmp / "calibration.safetensors", batches)
        meta = {"spec": asdict(spec), "split": split, "accuracy": accuracy}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return accuracy


def _cached(entry: Path, split: str) -> float | None:
    """The accuracy of a complete entry (its split label brought up to date), or None."""
    if not all((entry / name).is_file() for name in (*FILES, "meta.json")):
        return None
    try:
        meta = _read_json(entry / "meta.json", str(entry))
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
            loaded[spec.name] = _load_entry(root, spec)
    sa, sb = loaded[a.name], loaded[b.name]
    perm = align(sb.model, sa.model, sa.graph, method="activation", data=sa.calibration)
    with atomic_path(path) as tmp:
        _save(tmp, {name: perm[name] for name in perm})


def _load_entry(root: Path, spec: ZooSpec) -> Specimen:
    entry, where = root / spec.name, f"zoo entry {spec.name} in {root}"
    missing = [name for name in (*FILES, "meta.json") if not (entry / name).is_file()]
    if missing:
        raise CipmError(f"{where} has no {', '.join(missing)}; run build_zoo to build it again")
    meta = _read_json(entry / "meta.json", where)
    model = _model(spec)
    try:
        model.load_state_dict(_read_tensors(entry / "model.safetensors", where))
    except RuntimeError as e:
        raise CipmError(f"{where}: model.safetensors is not a {spec.name} model's ({e})") from None
    model.eval()
    try:
        graph = SymmetryGraph.from_json((entry / "graph.json").read_text(encoding="utf-8"))
        tensors = fitted_tensors(model, graph)
    except CipmError as e:
        raise CipmError(f"{where}: graph.json is not this model's graph: {e}") from None
    stored = _read_tensors(entry / "calibration.safetensors", where)
    calibration = [
        (stored[f"inputs/{i}"], stored[f"targets/{i}"])
        for i in range(len(stored) // 2)
        if f"inputs/{i}" in stored and f"targets/{i}" in stored
    ]
    if not calibration or 2 * len(calibration) != len(stored):
        raise CipmError(f"{where}: calibration.safetensors does not hold (inputs, targets) batches")
    stats = _read_tensors(entry / "stats.safetensors", where)
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
    index = _read_json(path, f"zoo index {path}")
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


def _read_json(path: Path, where: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CipmError(f"{where}: {path.name} is not readable JSON ({e})") from None
    if not isinstance(data, dict):
        raise CipmError(f"{where}: {path.name} holds no JSON object")
    return data


def _save(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write tensors as safetensors: each its own contiguous copy (batches and views share
    storage, which safetensors refuses), no metadata (whose order varies: the same tensors
    give the same bytes)."""
    save_file, _ = _safetensors()
    save_file({k: v.detach().clone().contiguous() for k, v in tensors.items()}, str(path))


def _read_tensors(path: Path, where: str) -> dict[str, torch.Tensor]:
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

"""Training a meta-analysis network on a zoo: seeded, checkpointed, resumable.

Every step draws `batch` subjects (from a generator seeded by the seed and the step, so a run
resumed from a checkpoint draws what an uninterrupted run would), scores their units, turns
the scores into soft ranks at the step's annealed strength, and takes one Adam step on the
weighted sum of the objectives. A checkpoint (safetensors, written atomically) holds the
network, Adam's state, the step and the loss history, and is only resumed by a run with the
same settings.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from cipm.errors import CipmError
from cipm.hooks.manager import plugin_table
from cipm.io import atomic_path
from cipm.meta.objective import Objective, ObjectiveInput, Subject
from cipm.meta.ranks import strength_at

__all__ = ["FitSettings", "History", "check_weights", "fit", "objectives"]


@dataclass(frozen=True)
class FitSettings:
    """How a network is trained (all of it goes into the checkpoint, to resume only alike)."""

    objectives: Mapping[str, float]
    steps: int = 300
    batch: int = 4
    lr: float = 3e-3
    seed: int = 0
    strength: tuple[float, float] = (1.0, 0.05)  # soft-rank strength, annealed start -> end

    def to_json(self) -> str:
        data = asdict(self)
        data["objectives"] = dict(sorted(self.objectives.items()))
        data["strength"] = list(self.strength)
        return json.dumps(data, sort_keys=True)


@dataclass(frozen=True)
class History:
    """Loss per step: ``rows[i]`` maps each objective (and ``"total"``) to its mean over
    the step's subjects."""

    rows: tuple[Mapping[str, float], ...] = ()

    def curve(self, name: str = "total") -> list[float]:
        return [row[name] for row in self.rows]


Scorer = Callable[[torch.nn.Module, Any, float], tuple[dict, dict]]


def fit(
    network: torch.nn.Module,
    soft: Scorer,
    subjects: Sequence[Subject],
    settings: FitSettings,
    *,
    checkpoint: str | Path | None = None,
    every: int = 25,
    progress: bool = True,
    blocked: tuple[str, ...] = (),
) -> History:
    """Train `network` in place; `soft(model, stats, strength)` gives (scores, soft ranks)
    per group through it. Resumes from `checkpoint` if it exists, writes it every `every`
    steps and at the end."""
    from tqdm.auto import tqdm

    available = objectives(blocked)
    check_weights(settings.objectives, available)
    if not subjects:
        raise CipmError("fit needs a zoo of at least one model")
    chosen = {n: (available[n], float(w)) for n, w in settings.objectives.items() if w > 0}
    optimizer = torch.optim.Adam(network.parameters(), lr=settings.lr)
    start, rows = 0, list[dict[str, float]]()
    if checkpoint is not None and Path(checkpoint).exists():
        start, rows = _resume(Path(checkpoint), network, optimizer, settings)
    network.train()
    bar = tqdm(total=settings.steps, initial=start, disable=not progress, desc="meta fit")
    for step in range(start, settings.steps):
        strength = strength_at(step, settings.steps, *settings.strength)
        draw = torch.Generator().manual_seed(settings.seed * 1_000_003 + step)
        picks = torch.randint(len(subjects), (settings.batch,), generator=draw).tolist()
        optimizer.zero_grad()
        sums = dict.fromkeys([*chosen, "total"], 0.0)
        for pick in picks:
            s = subjects[pick]
            scores, ranks = soft(s.model, s.stats, strength)
            batch = ObjectiveInput(
                s, scores, ranks, strength, partial(_ranks, soft, strength=strength), draw
            )
            total = torch.zeros((), dtype=torch.float64)
            for name, (objective, weight) in chosen.items():
                loss = objective(batch)
                if not torch.isfinite(loss):
                    raise CipmError(f"objective '{name}' gave {float(loss)} on {s.name}")
                sums[name] += float(loss.detach()) / len(picks)
                total = total + weight * loss
            (total / len(picks)).backward()
            sums["total"] += float(total.detach()) / len(picks)
        optimizer.step()
        rows.append(sums)
        bar.update(1)
        bar.set_postfix(loss=f"{sums['total']:.4f}")
        done = step + 1
        if checkpoint is not None and (done % every == 0 or done == settings.steps):
            _save(Path(checkpoint), network, optimizer, settings, done, rows)
    bar.close()
    network.eval()
    return History(tuple(rows))


def _ranks(
    soft: Scorer, model: torch.nn.Module, stats: Any, *, strength: float
) -> dict[str, torch.Tensor]:
    return soft(model, stats, strength)[1]


def _save(
    path: Path,
    network: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    settings: FitSettings,
    step: int,
    rows: list[dict[str, float]],
) -> None:
    from safetensors.torch import save_file

    tensors = {f"network/{k}": v.detach().contiguous() for k, v in network.state_dict().items()}
    state = optimizer.state_dict()
    for i, s in state["state"].items():
        for k, v in s.items():
            tensors[f"adam/{i}/{k}"] = torch.as_tensor(v).contiguous()
    meta = {
        "format": "cipm-meta-checkpoint/1",
        "settings": settings.to_json(),
        "step": str(step),
        "history": json.dumps(rows),
        "param_groups": json.dumps(state["param_groups"]),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def _resume(
    path: Path,
    network: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    settings: FitSettings,
) -> tuple[int, list[dict[str, float]]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception as e:
        raise CipmError(f"cannot read checkpoint {path}: {e}") from None
    if meta.get("format") != "cipm-meta-checkpoint/1":
        raise CipmError(f"{path} is not a cipm meta-network checkpoint")
    if meta.get("settings") != settings.to_json():
        raise CipmError(
            f"checkpoint {path} was written with other settings ({meta.get('settings')}); "
            "resume with the same ones or give a new checkpoint path"
        )
    prefix = "network/"
    weights = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    try:
        network.load_state_dict(weights)
    except RuntimeError as e:
        raise CipmError(f"checkpoint {path} is of another network shape: {e}") from None
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("adam/"):
            _, i, name = k.split("/")
            state.setdefault(int(i), {})[name] = v
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    return int(meta["step"]), json.loads(meta["history"])


def objectives(blocked_plugins: Iterable[str] = ()) -> dict[str, Objective]:
    """The training objectives the plugins provide, by name."""
    return plugin_table("cipm_objectives", "objective", blocked_plugins)


def check_weights(weights: Mapping[str, float], available: Mapping[str, Objective]) -> None:
    """Raises CipmError for an unknown objective or a weight that is not a number >= 0 (at
    least one > 0)."""
    if not isinstance(weights, Mapping) or not weights:
        raise CipmError(
            f"objectives must map objective names to weights, e.g. {{'compression': 1.0}}; "
            f"got {weights!r}"
        )
    unknown = sorted(set(weights) - set(available))
    if unknown:
        raise CipmError(f"unknown objectives {unknown}; available: {sorted(available)}")
    for name, w in weights.items():
        if isinstance(w, bool) or not isinstance(w, int | float) or not w >= 0:
            raise CipmError(f"objective weight for '{name}' must be a number >= 0, got {w!r}")
    if not any(w > 0 for w in weights.values()):
        raise CipmError("at least one objective needs a weight > 0")

"""`MetaAnalyzer`: the meta-analysis network as users hold it: score, order, align, train,
save, load, and the pretrained default shipped in the package."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from cipm.alignment.methods import AlignConfig, AlignProblem
from cipm.alignment.windowed import windowed_matching
from cipm.errors import CipmError
from cipm.graph.symmetry import Permutation, SymmetryGraph
from cipm.io import atomic_path
from cipm.meta.config import FitConfig, MetaConfig
from cipm.meta.inputs import meta_input
from cipm.meta.network import MetaNetwork
from cipm.meta.ranks import soft_ranks
from cipm.meta.subjects import subjects_of
from cipm.meta.training import FitSettings, History, fit
from cipm.ordering.canonical import canonical_order
from cipm.ordering.problem import OrderProblem
from cipm.pruning.problem import PruneMethod, PruneProblem
from cipm.statistics.collection import CollectConfig, statistics_of
from cipm.statistics.group import Statistics

__all__ = ["DEFAULT_OBJECTIVES", "FORMAT", "MetaAnalyzer"]

FORMAT = "cipm-meta/1"
DEFAULT_OBJECTIVES: Mapping[str, float] = {"compression": 1.0, "correlation": 0.5, "stability": 0.1}
PRETRAINED = "pretrained.safetensors"


class MetaAnalyzer:
    """A trainable network that scores every unit of a model from its correlation graphs;
    sorting by the scores is a permutation policy (and, the network being equivariant, a
    canonical form).

    Example:
        >>> meta = cipm.MetaAnalyzer.pretrained()
        >>> quiet = cipm.CollectConfig(progress=False)
        >>> policy = meta.policy(model, cipm.collect(model, graph, data, config=quiet))
        >>> copy = cipm.permute(model, graph.random_permutation(seed=0))  # any order in ...
        >>> again = meta.policy(copy, cipm.collect(copy, graph, data, config=quiet))
        >>> torch.equal(cipm.permute(copy, again)[0].weight, cipm.permute(model, policy)[0].weight)
        True
    """

    def __init__(self, config: MetaConfig | None = None, *, seed: int = 0) -> None:
        """A new network of `config`'s shape, its weights initialized from `seed` (on a fork
        of torch's generator: the caller's random state is left as it was)."""
        if config is not None and not isinstance(config, MetaConfig):
            raise CipmError(f"expected a cipm.MetaConfig, got {type(config).__name__}")
        self.config = config or MetaConfig()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.network = MetaNetwork(self.config)
        self.history = History()

    def __repr__(self) -> str:
        return f"MetaAnalyzer({self.config}, trained for {len(self.history.rows)} steps)"

    # using it

    def scores(self, model: torch.nn.Module, stats: Statistics) -> dict[str, torch.Tensor]:
        """One score per unit of every group (float64; higher: earlier in the policy).

        Raises:
            CipmError: `stats` are not `cipm.collect` statistics of `model`.
        """
        return self.scores_of(_checked(model, stats), stats)

    def scores_of(
        self, tensors: Mapping[str, torch.Tensor], stats: Statistics
    ) -> dict[str, torch.Tensor]:
        """`scores` of a model whose tensors were read and checked already (a problem
        object's): nothing is read or checked again."""
        self.network.eval()
        with torch.no_grad():
            return self._scores(tensors, stats)

    def policy(self, model: torch.nn.Module, stats: Statistics) -> Permutation:
        """Every group's units sorted by score, highest first; exact ties of the rounded
        scores are broken by the analytic canonical keys (invariant too)."""
        return self.policy_of(_checked(model, stats), stats)

    def policy_of(self, tensors: Mapping[str, torch.Tensor], stats: Statistics) -> Permutation:
        """`policy` of a model whose tensors were read and checked already."""
        return canonical_order(tensors, stats.graph, scores=self.scores_of(tensors, stats))

    def order(self, problem: OrderProblem) -> Permutation:
        """`policy` of an ordering problem: a `cipm.canonicalize` method
        (``method=meta.order``; ``"learned"`` is the pretrained network's)."""
        return self.policy_of(problem.tensors, problem.statistics("learned"))

    def seriation(self, problem: OrderProblem) -> dict[str, torch.Tensor]:
        """The learned order of each group of an ordering problem: a `cipm.reorganize` /
        `cipm.partition` method (``method=meta.seriation``; trained with the correlation
        objective, it seriates)."""
        policy = self.order(problem)
        return {g: policy[g] for g in problem.groups}

    def align(
        self,
        model_a: torch.nn.Module,
        model_b: torch.nn.Module,
        graph: SymmetryGraph,
        data: Iterable[Any],
        *,
        window: int | None = None,
        config: AlignConfig | None = None,
    ) -> Permutation:
        """B's permutation onto A by co-canonicalization: each model's units are sorted by
        their own scores (each could do it where it lives) and the k-th unit of B goes
        where A's k-th is. O(n log n) per group after statistics; no model meets the other.

        With `window`, that alignment is refined by weight matching's exact assignment
        inside consecutive windows of `window` units of the score order (and windows
        shifted by half of one), with both models' weights in one place
        (`cipm.alignment.windowed.windowed_matching`).
        """
        problem = AlignProblem(model_a, model_b, graph, data, config or AlignConfig())
        return self.solve(problem, window=window)

    def solve(self, problem: AlignProblem, *, window: int | None = None) -> Permutation:
        """`align` for a problem checked already: a `cipm.align` method
        (``method=meta.solve``; ``"learned"`` is the pretrained network's)."""
        data, graph = problem.needs_data("learned"), problem.graph
        reading = CollectConfig(progress=problem.config.progress)
        a, b = (problem.model_a, problem.state_a), (problem.model_b, problem.state_b)
        pa, pb = (self.policy_of(t, statistics_of(m, t, graph, data, reading)) for m, t in (a, b))
        perm = Permutation(graph, {g.name: pb[g.name][torch.argsort(pa[g.name])] for g in graph})
        if window is None:
            return perm
        return windowed_matching(
            problem.state_a, problem.state_b, graph, perm, order=pa, window=window
        )

    def prune_method(self) -> PruneMethod:
        """A `cipm.prune` method that keeps the units this network ranks highest and folds
        the rest into them (``"learned"`` is the pretrained network's)."""
        return PruneMethod(
            self.unit_scores,
            needs_statistics=True,
            description="keep the units the meta-analysis network ranks highest; fold the rest",
        )

    def unit_scores(self, problem: PruneProblem) -> dict[str, torch.Tensor]:
        """The scores of a pruning problem's model (a `PruneMethod`'s ``scores``)."""
        return self.scores_of(problem.tensors, problem.statistics("learned"))

    # training

    def fit(
        self,
        zoo: Sequence[Any],
        objectives: Mapping[str, float] | None = None,
        *,
        checkpoint: str | Path | None = None,
        config: FitConfig | None = None,
    ) -> History:
        """Train on `zoo` (`cipm.meta.zoo.load_zoo` specimens, or `Subject`s) for the
        weighted objectives (names from `cipm.meta.objectives()`; default compression 1,
        correlation 0.5, stability 0.1), as `config` says (steps, batch, lr, seed, progress;
        `FitConfig`). With `checkpoint`, saved every ``config.every`` steps and resumed from
        it when it exists. Returns the loss history (also kept in ``self.history``)."""
        config = FitConfig() if config is None else config
        if not isinstance(config, FitConfig):
            raise CipmError(f"config must be a cipm.meta.FitConfig, got {type(config).__name__}")
        settings = FitSettings(
            dict(DEFAULT_OBJECTIVES if objectives is None else objectives),
            steps=config.steps,
            batch=config.batch,
            lr=config.lr,
            seed=config.seed,
        )
        with_partners = settings.objectives.get("alignment", 0) > 0
        subjects = subjects_of(zoo, partners=with_partners)
        self.history = fit(
            self.network,
            self._soft,
            subjects,
            settings,
            checkpoint=checkpoint,
            every=config.every,
            progress=config.progress,
        )
        return self.history

    def _soft(
        self, model: torch.nn.Module, stats: Statistics, strength: float
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        scores = self._scores(_checked(model, stats), stats)
        return scores, {g: soft_ranks(s, strength) for g, s in scores.items()}

    def _scores(
        self, tensors: Mapping[str, torch.Tensor], stats: Statistics
    ) -> dict[str, torch.Tensor]:
        g = meta_input(stats, tensors, self.config)
        return g.split(self.network(g))

    # files

    def save(self, path: str | Path) -> Path:
        """Write the network (config, weights, training history) as safetensors, atomically."""
        from safetensors.torch import save_file

        tensors = {k: v.detach().contiguous() for k, v in self.network.state_dict().items()}
        meta = {
            "format": FORMAT,
            "config": self.config.to_json(),
            "history": json.dumps([dict(r) for r in self.history.rows]),
        }
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> MetaAnalyzer:
        """Read a network `save` wrote.

        Raises:
            CipmError: a missing or unreadable file, or one that is not a meta-network.
        """
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        except (OSError, SafetensorError) as e:
            raise CipmError(f"cannot read a meta-network from {path}: {e}") from None
        if meta.get("format") != FORMAT:
            raise CipmError(f"{path} is not a cipm meta-network (format {meta.get('format')})")
        analyzer = cls(MetaConfig.from_json(meta.get("config", "")))
        try:
            analyzer.network.load_state_dict(tensors)
        except RuntimeError as e:
            raise CipmError(f"{path}: weights do not fit its config: {e}") from None
        broken = [k for k, t in tensors.items() if t.is_floating_point() and not t.isfinite().all()]
        if broken:
            raise CipmError(f"{path}: weights {broken[:3]} hold NaN or Inf; it cannot score units")
        try:
            rows = json.loads(meta.get("history", "[]"))
        except json.JSONDecodeError as e:
            raise CipmError(f"{path}: its training history is not JSON: {e}") from None
        analyzer.history = History(tuple(rows))
        return analyzer

    @classmethod
    def pretrained(cls) -> MetaAnalyzer:
        """The default network shipped in the package (trained by ``cipm meta train``; see
        docs/results.md for its zoo, objectives and training curve)."""
        with resources.as_file(resources.files("cipm.meta") / PRETRAINED) as path:
            if not path.exists():
                raise CipmError(f"the pretrained meta-network is missing from the package ({path})")
            return cls.load(path)


def _checked(model: torch.nn.Module, stats: Statistics) -> dict[str, torch.Tensor]:
    """`model`'s tensors, once `stats` are known to be `cipm.collect` statistics of it."""
    if not isinstance(stats, Statistics):
        raise CipmError(f"expected cipm.collect statistics, got {type(stats).__name__}")
    return stats.check_model(model)

"""The meta-analysis network: learned permutation policies from correlation graphs.

    config.py      MetaConfig: the network's shape and what it reads
    inputs.py      a model's units as a graph at three scales (group, weights, global)
    network.py     MetaNetwork: torch-geometric message passing, one score per unit
    ranks.py       soft ranks (torchsort) for training, annealed
    objective.py   what it trains for: Subject, ObjectiveInput, the cipm_objectives registry
    masking.py     a model run with soft unit masks (the compression objective's view)
    training.py    seeded, checkpointed, resumable training
    subjects.py    zoo specimens as training subjects, with alignment partners
    analyzer.py    MetaAnalyzer: scores, policy, align, fit, save, load, pretrained
    evaluate.py    learned against analytic on held-out zoo models (cipm meta eval)
    zoo/           the zoo of small trained models it learns from

Needs ``pip install 'cipm[meta]'`` (torch-geometric, torchsort), imported on first use.
"""

from cipm.errors import CipmError
from cipm.meta.config import FitConfig, MetaConfig
from cipm.meta.objective import Objective, ObjectiveInput, Partner, Subject
from cipm.meta.training import objectives

__all__ = [
    "FitConfig",
    "MetaAnalyzer",
    "MetaConfig",
    "Objective",
    "ObjectiveInput",
    "Partner",
    "Subject",
    "objectives",
]


def __getattr__(name: str) -> object:
    # the analyzer imports torch-geometric (~1.5 s): only when it is asked for
    if name == "MetaAnalyzer":
        try:
            from cipm.meta.analyzer import MetaAnalyzer
        except ImportError as e:
            raise CipmError(
                f"the meta-analysis network needs torch-geometric and torchsort ({e}): "
                "pip install 'cipm[meta]'"
            ) from e
        return MetaAnalyzer
    raise AttributeError(f"module 'cipm.meta' has no attribute {name!r}")

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

Example (building the zoo trains its models: minutes, so this is not run as a test)::

    build_zoo("out/zoo")
    train = load_zoo("out/zoo", split="train")
    a, b = pairs(train)[0]
    perm = pair_target("out/zoo", a, b)
    aligned = cipm.permute(b.model, perm)  # lines up with a.model
"""

from cipm.meta.zoo.families import FAMILY, family_data
from cipm.meta.zoo.families import _SequenceClassifier as _SequenceClassifier  # its home
from cipm.meta.zoo.reading import load_zoo, pair_target
from cipm.meta.zoo.specs import (
    FAMILIES,
    HELDOUT_FAMILY,
    HELDOUT_SEEDS,
    HELDOUT_WIDTHS,
    SPLITS,
    Specimen,
    ZooSpec,
    pairs,
    split_of,
    zoo_specs,
)
from cipm.meta.zoo.storage import build_zoo

__all__ = [
    "FAMILIES",
    "FAMILY",
    "HELDOUT_FAMILY",
    "HELDOUT_SEEDS",
    "HELDOUT_WIDTHS",
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

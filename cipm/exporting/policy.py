"""`Policy`: what cipm did to a model's units, stored with an exported file so it can be undone.

A permuted model carries its permutation (per group, ``perm[g][i] = j``: unit ``i`` of the
file's model is unit ``j`` of the original); a pruned one the units each pruned group kept, in
the original model's numbering. Both go into a file as one JSON object::

    {"cipm_policy": 1, "kind": "permutation", "cipm": "0.1.0", "model": "ResNet",
     "groups": {"layer1.0.conv1:channels": [3, 0, 2, 1], ...}, "sizes": {...}}

``sizes`` are the groups' sizes in the original model (always known for a permutation; for
pruned groups when the plan said so).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import torch

from cipm.errors import CipmError
from cipm.graph.symmetry import Permutation, SymmetryGraph
from cipm.pruning.result import PruneReport
from cipm.version import __version__

__all__ = ["FORMAT_VERSION", "METADATA_KEY", "Policy", "PolicyKind"]

PolicyKind = Literal["permutation", "pruned"]
FORMAT_VERSION = 1
METADATA_KEY = "cipm.policy"  # the key in ONNX metadata_props and the safetensors header


@dataclass(frozen=True)
class Policy:
    """The permutation, or the kept units per group, a model file was made with.

    Attributes:
        kind: ``"permutation"`` or ``"pruned"``.
        groups: per group name, the indices (a permutation of ``range(size)``, or the kept
            units in increasing order).
        version: the cipm version that wrote it.
        model: the class name of the model it was made for ("" if not recorded).
        sizes: per group name, its size in the original model (may be empty for pruned).

    Example:
        >>> perm = graph.random_permutation(seed=1)
        >>> permuted = cipm.permute(model, perm)
        >>> path = cipm.export(permuted, "permuted.safetensors", policy=perm)
        >>> policy = cipm.read_policy(path)
        >>> restored = cipm.permute(permuted, policy.inverse(graph))
        >>> torch.equal(restored[0].weight, model[0].weight)
        True
    """

    kind: PolicyKind
    groups: Mapping[str, Sequence[int]] = field(hash=False)  # tuples once made
    version: str
    model: str = ""
    sizes: Mapping[str, int] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or self.kind not in ("permutation", "pruned"):
            raise CipmError(f"a policy's kind is 'permutation' or 'pruned', not {self.kind!r}")
        for what in ("version", "model"):
            if not isinstance(getattr(self, what), str):
                raise CipmError(f"a policy's {what} must be a string, got {getattr(self, what)!r}")
        groups = {str(k): _whole_numbers(v, k) for k, v in _mapping(self.groups, "groups").items()}
        sizes = {str(k): _size(v, k) for k, v in _mapping(self.sizes, "sizes").items()}
        for name, idx in groups.items():
            if not idx:  # a group of no units: neither a permutation nor a pruning keeps none
                raise CipmError(f"policy group '{name}' holds no units")
            n = sizes.get(name, len(idx) if self.kind == "permutation" else None)
            if self.kind == "permutation" and sorted(idx) != list(range(len(idx))):
                raise CipmError(f"policy group '{name}' is not a permutation of 0..{len(idx) - 1}")
            if self.kind == "pruned" and list(idx) != sorted(set(idx)):
                raise CipmError(f"kept units of group '{name}' must be increasing and distinct")
            if min(idx) < 0 or (n is not None and (len(idx) > n or max(idx) >= n)):
                where = f"0..{n - 1}" if n is not None else "0 and up"
                raise CipmError(f"policy group '{name}' has units outside {where}")
        if self.kind == "permutation":
            sizes = {name: len(idx) for name, idx in groups.items()}
        object.__setattr__(self, "groups", MappingProxyType(groups))
        object.__setattr__(self, "sizes", MappingProxyType(sizes))

    # -- making one ------------------------------------------------------------------------
    @classmethod
    def of(cls, source: Any, model: str = "") -> Policy:
        """The policy of `source`: a `Policy`, a `cipm.Permutation`, or for a pruned model its
        `cipm.PruneReport` or a mapping of group name to kept units (a list of indices,
        or a `prune_plan` entry).

        Raises:
            CipmError: `source` is none of these.
        """
        if isinstance(source, Policy):
            return source
        if isinstance(source, Permutation):
            order = source.to_dict()
            return cls("permutation", order, __version__, model or source.graph.model)
        if isinstance(source, PruneReport):
            try:
                before = {g: n for g, (n, _) in _mapping(source.sizes, "sizes").items()}
            except (TypeError, ValueError):  # a report not made by prune: (before, after) pairs
                raise CipmError(
                    f"a PruneReport's sizes map groups to (before, after), got {source.sizes!r}"
                ) from None
            return cls("pruned", _mapping(source.kept, "kept units"), __version__, model, before)
        if isinstance(source, Mapping):
            groups: dict[str, Sequence[int]] = {}
            sizes: dict[str, int] = {}
            for name, value in source.items():
                keep = getattr(value, "keep", value)  # a GroupPlan, or the indices themselves
                groups[name] = _whole_numbers(keep, name)
                fold = getattr(value, "fold", None)  # a merge plan's (k, n) map
                if isinstance(fold, torch.Tensor) and fold.dim() == 2:
                    sizes[name] = int(fold.shape[1])
            return cls("pruned", groups, __version__, model, sizes)
        raise CipmError(
            "policy= takes a cipm.Permutation, a Policy, or for a pruned model a mapping of "
            f"group name to kept units (cipm.pruning.prune_plan); got {type(source).__name__}"
        )

    # -- using one -------------------------------------------------------------------------
    def permutation(self, graph: SymmetryGraph) -> Permutation:
        """The `cipm.Permutation` of `graph` this policy holds.

        Raises:
            CipmError: the policy is a pruning's, or does not fit `graph`.
        """
        if self.kind != "permutation":
            raise CipmError("this policy records a pruning (kept units), not a permutation")
        return Permutation(
            graph, {k: torch.tensor(v, dtype=torch.long) for k, v in self.groups.items()}
        )

    def inverse(self, graph: SymmetryGraph) -> Permutation:
        """The co-inverse permutation: ``cipm.permute(file_model, policy.inverse(graph))``
        puts the exported model's units back in the original order."""
        return self.permutation(graph).inverse()

    def removed(self, group: str) -> tuple[int, ...]:
        """The original units a pruned group lost.

        Raises:
            CipmError: not a pruning's policy, no such group, or its size was not recorded.
        """
        if self.kind != "pruned" or group not in self.groups or group not in self.sizes:
            raise CipmError(f"the policy records no pruned size for group '{group}'")
        kept = set(self.groups[group])
        return tuple(i for i in range(self.sizes[group]) if i not in kept)

    # -- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "cipm_policy": FORMAT_VERSION,
            "kind": self.kind,
            "cipm": self.version,
            "model": self.model,
            "groups": {k: list(v) for k, v in self.groups.items()},
            "sizes": dict(self.sizes),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str, where: str = "") -> Policy:
        """A policy from its JSON (as `to_json` writes it).

        Raises:
            CipmError: not JSON, not a cipm policy, or a newer format than this cipm reads.
        """
        source = f" in {where}" if where else ""
        try:
            data = json.loads(text)
        except (ValueError, TypeError, RecursionError) as e:  # not UTF-8, nested past reason
            raise CipmError(f"the cipm policy{source} is not JSON ({e})") from None
        if not isinstance(data, dict) or "cipm_policy" not in data:
            raise CipmError(f"the metadata{source} is not a cipm policy")
        form = data["cipm_policy"]
        if not isinstance(form, int) or isinstance(form, bool):
            raise CipmError(f"the cipm policy{source} has no format number: got {form!r}")
        if form != FORMAT_VERSION:
            raise CipmError(
                f"the cipm policy{source} has format {form!r}; this cipm reads "
                f"format {FORMAT_VERSION} (upgrade cipm)"
            )
        try:
            return cls(
                kind=data["kind"],
                groups=data["groups"],
                version=str(data["cipm"]),
                model=str(data.get("model", "")),
                sizes=data.get("sizes", {}),
            )
        except KeyError as e:
            raise CipmError(f"the cipm policy{source} lacks {e}") from None


def _mapping(value: Any, what: str) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise CipmError(f"a policy's {what} must map group names to values, got {value!r}")
    return value


def _whole_numbers(value: Any, group: str) -> tuple[int, ...]:
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() or value.dim() != 1:
            raise CipmError(f"units of group '{group}' must be a 1-D tensor of whole numbers")
        value = value.tolist()
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise CipmError(f"units of group '{group}' must be a list of indices, got {value!r}")
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in value):
        raise CipmError(f"units of group '{group}' must be whole numbers, got {list(value)!r}")
    return tuple(value)


_MAX_SIZE = 2**31  # units in one group: far past any model, and `removed` lists them


def _size(value: Any, group: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= _MAX_SIZE:
        raise CipmError(
            f"the size of group '{group}' must be a whole number in 1..{_MAX_SIZE}, got {value!r}"
        )
    return value

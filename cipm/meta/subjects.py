"""Zoo specimens as training `Subject`s, with partners for the alignment objective."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cipm.alignment.dispatch import align
from cipm.errors import CipmError
from cipm.meta.objective import Partner, Subject

__all__ = ["subjects_of"]


def subjects_of(zoo: Sequence[Any], *, partners: bool) -> list[Subject]:
    """`Subject`s as given, or made of `cipm.meta.zoo` specimens. With `partners`, each
    specimen is paired with another of the same family, width and depth (the next seed; the
    last seed with the one before), the target found by activation matching on the
    subject's calibration data."""
    if isinstance(zoo, str | bytes) or not isinstance(zoo, Sequence):
        raise CipmError(f"a zoo is a list of specimens (cipm.meta.zoo.load_zoo), got {zoo!r}")
    made = [_subject(item, i) for i, item in enumerate(zoo)]
    if not partners:
        return made
    kin: dict[tuple[Any, ...], list[int]] = {}
    for i, item in enumerate(zoo):
        spec = getattr(item, "spec", None)
        if spec is not None:
            kin.setdefault((spec.family, spec.width, spec.depth), []).append(i)
    result = list(made)
    for members in kin.values():
        members.sort(key=lambda i: zoo[i].spec.seed)
        for j, i in enumerate(members):
            if len(members) < 2 or made[i].partner is not None:
                continue
            other = members[j + 1] if j + 1 < len(members) else members[j - 1]
            result[i] = _with_partner(made[i], made[other])
    return result


def _subject(item: Any, i: int) -> Subject:
    if isinstance(item, Subject):
        return item
    try:
        return Subject(
            name=item.spec.name,
            model=item.model,
            stats=item.stats,
            views=tuple(item.views),
            calibration=list(item.calibration),
        )
    except AttributeError as e:
        raise CipmError(
            f"zoo item {i} is neither a cipm.meta.Subject nor a zoo specimen: {e}"
        ) from None


def _with_partner(subject: Subject, other: Subject) -> Subject:
    graph = subject.stats.graph
    target = align(subject.model, other.model, graph, method="activation", data=subject.calibration)
    return Subject(
        subject.name,
        subject.model,
        subject.stats,
        subject.views,
        subject.calibration,
        Partner(other.model, other.stats, target),
    )

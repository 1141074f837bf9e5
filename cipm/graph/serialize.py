"""Symmetry graphs as JSON-ready dicts, and back (with the checks a file from elsewhere needs)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cipm.errors import CipmError
from cipm.graph.layout import layout_from_dict, layout_to_dict
from cipm.graph.parts import GroupKind, Member, OutputAxis, PermGroup, Site, TensorAxis

__all__ = ["graph_fields", "graph_to_dict"]


def graph_to_dict(graph: Mapping[str, Any]) -> dict[str, Any]:
    """A `SymmetryGraph`'s fields (`graph_fields` reads them back) as JSON-ready data."""
    data: dict[str, Any] = {
        "model": graph["model"],
        "groups": [_group_to_dict(g) for g in graph["groups"]],
        "axes": [
            {"key": a.key, "dim": a.dim, "layout": layout_to_dict(a.layout)} for a in graph["axes"]
        ],
        "outputs": [
            {"index": o.index, "dim": o.dim, "layout": layout_to_dict(o.layout)}
            for o in graph["outputs"]
        ],
    }
    if graph["blocked_plugins"]:
        data["blocked_plugins"] = list(graph["blocked_plugins"])
    if graph["structure"]:
        data["structure"] = graph["structure"]
    return data


def graph_fields(data: dict[str, Any]) -> dict[str, Any]:
    """The fields of the `SymmetryGraph` that `graph_to_dict` wrote."""
    try:
        return dict(
            model=data["model"],
            groups=tuple(_group_from_dict(g) for g in data["groups"]),
            axes=tuple(
                TensorAxis(a["key"], a["dim"], layout_from_dict(a["layout"])) for a in data["axes"]
            ),
            outputs=tuple(
                OutputAxis(o["index"], o["dim"], layout_from_dict(o["layout"]))
                for o in data.get("outputs", [])
            ),
            blocked_plugins=tuple(str(n) for n in data.get("blocked_plugins", ())),
            structure=str(data.get("structure", "")),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise CipmError(f"not a cipm symmetry graph: {e!r}") from e


def _group_to_dict(g: PermGroup) -> dict[str, Any]:
    return {
        "name": g.name,
        "size": g.size,
        "kind": g.kind.value,
        "within": g.within,
        "members": [[m.key, m.dim, m.unit, m.consumes] for m in g.members],
        "sites": [
            [
                s.node,
                s.module,
                s.op,
                s.dim,
                layout_to_dict(s.layout) if s.layout else None,
                s.samples,
            ]
            for s in g.sites
        ],
    }


def _site_from_list(entry: list[Any]) -> Site:
    node, module, op, dim, layout, *rest = entry  # graphs written before `samples` lack it
    lay = layout_from_dict(layout) if layout else None
    return Site(node, module, op, int(dim), lay, int(rest[0]) if rest else 0)


def _group_from_dict(d: dict[str, Any]) -> PermGroup:
    return PermGroup(
        name=d["name"],
        size=int(d["size"]),
        kind=GroupKind(d["kind"]),
        members=tuple(Member(k, int(dim), int(u), bool(c)) for k, dim, u, c in d["members"]),
        sites=tuple(_site_from_list(entry) for entry in d["sites"]),
        within=d.get("within"),
    )

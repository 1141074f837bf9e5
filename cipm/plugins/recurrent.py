"""Recurrent layers: ``nn.LSTM``, ``nn.GRU``, ``nn.RNN`` (tanh, relu) and their cells.

torch.export leaves a recurrent module as one op over its flat weight list
(``aten.lstm.input(input, [h0, c0], params, ...)``, ``aten.gru.input``,
``aten.rnn_tanh.input``, ``aten.rnn_relu.input``) and a cell as one op per step
(``aten.lstm_cell``, ``aten.gru_cell``, ``aten.rnn_tanh_cell``, ``aten.rnn_relu_cell``). The
hidden units of each layer and direction are a permutation group: one permutation of the H
units moves every gate block of the ``weight_ih`` / ``weight_hh`` rows and of the biases
(rows are gates x H, a product whose gate factor is fixed: i, f, g, o for an LSTM, r, z, n for
a GRU, one block for an RNN), the columns of ``weight_hh`` (last step's state), the next
layer's ``weight_ih`` columns and the output's last dim. A bidirectional layer outputs
[forward | backward], a sum of its two directions' groups. With ``proj_size`` an LSTM's
projection units (``weight_hr`` rows, ``weight_hh`` columns, the output) are a group of their
own, and its cell units (``weight_hr`` columns) another.

``h0`` / ``c0`` and ``h_n`` / ``c_n`` hold every layer and direction in one tensor with one
last dim, which one permutation per layer cannot move. A state filled with a constant (the
zeros a module makes when given none) is the same under any permutation, and a final state
nothing reads needs none: then the groups stay apart. A given initial state, or a final state
that is read, ties every layer's and direction's units into one group (a smaller symmetry,
still exact). Which is which is read from the exported graph (the state's producer, the
result's readers); where it cannot be read the rule ties.

The tracer makes groups of units that some activation shows (the op's results, read through
``getitem`` nodes, are such sites): the units of every layer but the last (and an LSTM's cell
units under a projection) never leave the fused op, so today only the last layer's units are
groups. The rule states the rest; it becomes groups once the core admits such units
(tests/test_recurrent.py, the xfails).

Pruning leaves fewer rows and columns; `cipm_resized` reads ``hidden_size``, ``proj_size``
and ``input_size`` back from the weights and refreshes the module's flat weight list, so the
smaller module runs. The module has one ``hidden_size``: a pruning that leaves its layers or
directions different sizes is refused (the groups are then kept whole).
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from cipm import CipmError, RuleError
from cipm.plugin import OpCall, Rule, TensorRef, freeze, hookimpl

Atom = int

# gate blocks per op: the rows of weight_ih, weight_hh and the biases are gates x units
SEQUENCE = {"aten.lstm.input": 4, "aten.gru.input": 3}
SEQUENCE.update({"aten.rnn_tanh.input": 1, "aten.rnn_relu.input": 1})
CELLS = {"aten.lstm_cell.default": 4, "aten.gru_cell.default": 3}
CELLS.update({"aten.rnn_tanh_cell.default": 1, "aten.rnn_relu_cell.default": 1})

# ops whose result holds one value everywhere: the same under any permutation of any dim
FILLED = {
    f"aten.{op}"
    for op in "zeros ones full zeros_like ones_like full_like new_zeros new_ones new_full".split()
}


def sequence(call: OpCall) -> None:
    """lstm / gru / rnn_tanh / rnn_relu over a whole sequence, every layer and direction."""
    gates = SEQUENCE[call.op]
    x = call.tensor("input")
    hx = call.value("hx")
    states = list(hx) if isinstance(hx, list | tuple) else [hx]
    params = [call.maybe_tensor_value(p) for p in call.value("params") or ()]
    refs = [p for p in params if p is not None]
    layers, dirs = int(call.value("num_layers")), 2 if call.value("bidirectional") else 1
    base = 4 if call.value("has_biases") else 2  # weight_ih, weight_hh[, bias_ih, bias_hh]
    per = len(params) // (layers * dirs)  # and weight_hr with proj_size
    if x.ndim != 3 or len(refs) != per * layers * dirs or per not in (base, base + (gates == 4)):
        freeze(call)  # a layout this rule does not know: nothing claimed
        return
    batch_first = bool(call.value("batch_first"))
    batch, time = (x.axes[0], x.axes[1]) if batch_first else (x.axes[1], x.axes[0])
    call.fix(time)  # a recurrence reads its steps in order
    features = x.axes[2]
    cells: list[Atom] = []  # each layer's and direction's hidden (cell) units
    outs: list[Atom] = []  # the units each outputs (its projection's, with proj_size)
    for layer in range(layers):
        made = []
        for d in range(dirs):
            start = (layer * dirs + d) * per
            hidden, out = _layer(call, gates, refs[start : start + per], base, features)
            cells.append(hidden)
            made.append(out)
        outs.extend(made)
        features = call.join("sum", made)  # [forward | backward]: the next layer's input
    call.set_output([batch, time, features] if batch_first else [time, batch, features])
    held = [outs, cells]  # h0 and h_n hold the outputs' units, c0 and c_n the cells'
    for state, units in zip(states, held, strict=False):
        ref = call.maybe_tensor_value(state)
        if ref is not None and not _filled(state):
            _tie(call, units, batch, ref)
    for i in range(1, len(call.output_shapes)):
        units = held[i - 1]
        if len(units) == 1 or _used(call, i):
            _tie(call, units, batch)
            call.set_output([_fixed(call, layers * dirs), batch, units[0]], i)
        # else a final state nothing reads: left unset (fixed), it ties nothing


def _layer(
    call: OpCall, gates: int, block: list[TensorRef], base: int, features: Atom
) -> tuple[Atom, Atom]:
    """One layer and direction (its flat weights `block`, reading `features`): its hidden
    units and the units it outputs."""
    w_ih, w_hh = block[0], block[1]
    rows = w_ih.axes[0]
    for ref in block[1:base]:  # weight_hh and the biases: the same gates x units rows
        call.unify(ref.axes[0], rows)
    gate, hidden = call.split(rows, "product", [gates, w_ih.shape[0] // gates])
    call.fix(gate)  # which block is which gate is positional
    call.tag(hidden, "hidden")
    _reads(call, w_ih.axes[1], features)
    out = hidden
    if len(block) > base:  # weight_hr: the projection of the hidden units
        w_hr = block[base]
        _reads(call, w_hr.axes[1], hidden)
        out = w_hr.axes[0]
        call.tag(out, "hidden")
    _reads(call, w_hh.axes[1], out)  # the recurrent input: last step's output
    return hidden, out


def _reads(call: OpCall, axis: Atom, units: Atom) -> None:
    """A weight's `axis` sums over `units` (it consumes them). Through a fresh atom: `units`
    may be another weight's own axis in this call (the rows that make them), which would
    otherwise count as consuming too."""
    via = call.new(call.size(units))
    call.unify(via, units)
    call.contract(axis, via)


def _tie(call: OpCall, units: list[Atom], batch: Atom, state: TensorRef | None = None) -> None:
    """A state (layers x directions, batch, units) holds every layer's and direction's units
    along one dim: they become one axis, which is `state`'s last dim where one is given."""
    for atom in units[1:]:
        call.unify(units[0], atom)
    if state is not None:
        if state.ndim != 3:
            raise RuleError(f"{call.op}: a state of shape {state.shape}, not 3-D")
        call.fix(state.axes[0])
        call.unify(state.axes[1], batch)
        call.unify(state.axes[2], units[0])


def _fixed(call: OpCall, size: int) -> Atom:
    atom = call.new(size)
    call.fix(atom)
    return atom


def _filled(value: Any) -> bool:
    """Whether an argument is the result of a constant fill (torch.zeros, ...), which no
    permutation changes; anything else (a given state, a value we cannot see) is not."""
    target = getattr(value, "target", None)
    return isinstance(value, torch.fx.Node) and str(target).rsplit(".", 1)[0] in FILLED


def _used(call: OpCall, index: int) -> bool:
    """Whether output `index` of this call reaches the graph's output (what nothing that
    reaches it reads, such as the squeezed h_n of an unbatched input, no permutation can
    change); True where we cannot tell."""
    source = call.value("input")
    node = next((u for u in getattr(source, "users", ()) if u.name == call.node), None)
    if not isinstance(node, torch.fx.Node):
        return True
    if any(u.target is not operator.getitem for u in node.users):
        return True
    stack = [u for u in node.users if u.args[1] == index]
    seen = set(stack)
    while stack:
        for user in stack.pop().users:
            if user.op == "output":
                return True
            if user not in seen:
                seen.add(user)
                stack.append(user)
    return False


def cell(call: OpCall) -> None:
    """lstm_cell / gru_cell / rnn_tanh_cell / rnn_relu_cell: one step of one layer, whose
    state(s) in and out hold its hidden units."""
    gates = CELLS[call.op]
    x, w_ih, w_hh = call.tensor("input"), call.tensor("w_ih"), call.tensor("w_hh")
    hx = call.value("hx")
    states = [call.maybe_tensor_value(h) for h in (hx if isinstance(hx, list | tuple) else [hx])]
    rows = w_ih.axes[0]
    call.unify(w_hh.axes[0], rows)
    for name in ("b_ih", "b_hh"):
        bias = call.maybe_tensor(name)
        if bias is not None:
            call.unify(bias.axes[0], rows)
    gate, hidden = call.split(rows, "product", [gates, w_ih.shape[0] // gates])
    call.fix(gate)
    call.tag(hidden, "hidden")
    _reads(call, w_ih.axes[1], x.axes[-1])
    _reads(call, w_hh.axes[1], hidden)
    for ref in states:
        if ref is not None:
            call.unify_all(ref.axes[:-1], x.axes[:-1])
            call.unify(ref.axes[-1], hidden)
    for i in range(len(call.output_shapes)):
        call.set_output([*x.axes[:-1], hidden], i)


@hookimpl
def cipm_rules() -> Mapping[str, Rule]:
    rules: dict[str, Rule] = {op: sequence for op in SEQUENCE}
    rules.update({op: cell for op in CELLS})
    return rules


@hookimpl
def cipm_resized(module: nn.Module) -> None:
    """A resized LSTM / GRU / RNN (or cell): its sizes read back from its weights."""
    if isinstance(module, nn.RNNBase):
        _resize_sequence(module)
    elif isinstance(module, nn.RNNCellBase):
        module.hidden_size = module.get_parameter("weight_hh").shape[1]
        module.input_size = module.get_parameter("weight_ih").shape[1]


def _resize_sequence(module: nn.RNNBase) -> None:
    """One hidden_size (and proj_size) for every layer and direction, or a CipmError."""
    gates = {"LSTM": 4, "GRU": 3}.get(module.mode, 1)
    dirs = 2 if module.bidirectional else 1
    blocks = [f"_l{k}{'_reverse' * d}" for k in range(module.num_layers) for d in range(dirs)]
    hidden = {module.get_parameter(f"weight_ih{b}").shape[0] // gates for b in blocks}
    proj = {module.get_parameter(f"weight_hr{b}").shape[0] for b in blocks if module.proj_size}
    if len(hidden) != 1 or len(proj) > 1:
        sizes = f"hidden sizes {sorted(hidden)}" + (f", projections {sorted(proj)}" if proj else "")
        raise CipmError(
            f"{type(module).__name__} has one hidden_size (and proj_size) for every layer and "
            f"direction; pruning would leave {sizes}"
        )
    module.hidden_size = hidden.pop()
    if proj:
        module.proj_size = proj.pop()
    module.input_size = module.get_parameter("weight_ih_l0").shape[1]
    module._init_flat_weights()  # the list the forward reads: the resized tensors

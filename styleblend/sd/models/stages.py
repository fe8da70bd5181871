"""A forward pass as a list of stages over named tensors, and its gradients computed one stage at a time.

A :class:`Stage` reads some names of a state dict and writes others (``x`` → ``x``; a down-path state also under
a ``skip<k>`` name). :func:`run_stages` is the plain forward. :func:`staged_grads` is the memory-lean backward
(gradient checkpointing at stage boundaries): it runs the forward without a graph, keeping only each stage's
inputs, then walks the stages backwards, recomputing one stage with a graph, taking its gradients and finishing
them (``sync``) before the next. Jittor builds a whole backward graph before it runs any of it, so a checkpoint
inside one graph saves nothing (docs/notes/performance-history.md); finishing each stage's gradients and detaching them is
what bounds the memory by one stage's activations. It costs one more forward pass.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple

from ...backend import jt, nn


@dataclass(frozen=True)
class Stage:
    """``fn(*state[reads]) -> tuple of the values for writes``; ``modules`` own the parameters ``fn`` uses."""
    fn: Callable[..., Tuple[jt.Var, ...]]
    reads: Tuple[str, ...]
    writes: Tuple[str, ...]
    modules: Tuple[nn.Module, ...] = ()


@dataclass(frozen=True)
class StagedLoss:
    """A loss not yet computed: ``run_stages(stages, inputs)[output]``, for :func:`staged_grads`."""
    stages: List[Stage]
    inputs: Dict[str, jt.Var]
    output: str = "loss"


def _apply(stage: Stage, state: Dict[str, jt.Var], values: Sequence[jt.Var]) -> Sequence[jt.Var]:
    outs = stage.fn(*values)
    if len(outs) != len(stage.writes):
        raise ValueError(f"stage writing {stage.writes} returned {len(outs)} values")
    state.update(zip(stage.writes, outs))
    return outs


def _reads(stage: Stage, state: Dict[str, jt.Var]) -> List[jt.Var]:
    missing = [name for name in stage.reads if name not in state]
    if missing:
        raise KeyError(f"stage writing {stage.writes} reads {missing}, which no input or earlier stage provides")
    return [state[name] for name in stage.reads]


def run_stages(stages: Sequence[Stage], inputs: Dict[str, jt.Var]) -> Dict[str, jt.Var]:
    """The forward pass: ``inputs`` updated by every stage in turn."""
    state = dict(inputs)
    for stage in stages:
        _apply(stage, state, _reads(stage, state))
    return state


def staged_grads(stages: Sequence[Stage], inputs: Dict[str, jt.Var], output: str, params: Sequence[jt.Var],
                 scale: float = 1.0) -> Tuple[jt.Var, List[jt.Var]]:
    """``(state[output], gradients of scale · state[output] with respect to params)``, one stage at a time.

    ``output`` must be a scalar. A parameter no stage's modules own is reached through the inputs (e.g. a text
    encoder's parameters through ``context``): the inputs' gradients are carried back to it at the end.
    """
    wanted = {id(p): i for i, p in enumerate(params)}
    owned = [[p for m in stage.modules for p in m.parameters() if id(p) in wanted] for stage in stages]
    owned_ids = {id(p) for own in owned for p in own}
    upstream = [p for p in params if id(p) not in owned_ids]
    needs = {name: bool(upstream) and not value.is_stop_grad() for name, value in inputs.items()}
    state, saved = dict(inputs), []
    with jt.no_grad():
        for stage, own in zip(stages, owned):
            values = _reads(stage, state)
            saved.append(values)
            jt.sync(list(_apply(stage, state, values)))
            needing = bool(own) or any(needs[name] for name in stage.reads)
            needs.update((name, needing) for name in stage.writes)
    value = state[output]
    out_grads = {output: jt.full(value.shape, scale, value.dtype)}
    grads: Dict[int, jt.Var] = {}
    for stage, own in zip(reversed(stages), reversed(owned)):
        values = saved.pop()  # this stage's inputs, let go once used
        seeds = [(i, out_grads.pop(name)) for i, name in enumerate(stage.writes) if name in out_grads]
        through = [i for i, name in enumerate(stage.reads) if needs[name]]
        if not seeds or not (through or own):
            continue
        leaves = [v.detach() if i in through else v for i, v in enumerate(values)]
        outs = stage.fn(*leaves)
        proxy = inner([outs[i] for i, _ in seeds], [g for _, g in seeds])
        found = jt.grad(proxy, [leaves[i] for i in through] + own)
        _accumulate(out_grads, [stage.reads[i] for i in through], found[:len(through)])
        _accumulate(grads, [wanted[id(p)] for p in own], found[len(through):])
    reach = [name for name in out_grads if name in inputs]
    if upstream and reach:
        proxy = inner([inputs[name] for name in reach], [out_grads[name] for name in reach])
        _accumulate(grads, [wanted[id(p)] for p in upstream], jt.grad(proxy, upstream))
    return value, [grads[i] if i in grads else jt.zeros_like(p) for i, p in enumerate(params)]


def inner(outs: Sequence[jt.Var], seeds: Sequence[jt.Var]) -> jt.Var:
    """Σ ⟨out, seed⟩ in float32: its gradient with respect to each out is that out's seed (a backward pass's
    incoming gradient)."""
    total = 0
    for out, seed in zip(outs, seeds):
        total = total + (out * seed.cast(out.dtype)).float32().sum()
    return total


def _accumulate(table: dict, keys, grads: Sequence[jt.Var]) -> None:
    """``table[key] += grad`` for each pair, computed now and detached, so no stage's graph outlives it."""
    sums = [g if key not in table else table[key] + g for key, g in zip(keys, grads)]
    jt.sync(sums)
    table.update((key, g.detach()) for key, g in zip(keys, sums))

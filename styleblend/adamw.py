"""AdamW with one fused kernel a parameter, the optimiser of every training here (:func:`styleblend.training.fit`).

The update is PyTorch's and Jittor's AdamW (decoupled weight decay, bias-corrected moments, ``eps`` outside the
square root). Jittor's ``jt.optim.AdamW`` runs it as three kernels a parameter: it copies each gradient into a
buffer of its own, and the new moments, once shared by the weight update, split it from them. Written as three
expressions that share only their inputs, Jittor fuses moments and weight into one kernel. A toy pretraining step
(722 parameters) then launches 7992 kernels instead of 9437 (``bench/toy_cpu.py``); on a GPU that step's time is
set by how many kernels it launches, not by their work.
"""
from __future__ import annotations

from typing import List, Sequence

from .backend import jt


class AdamW:
    """AdamW over ``params``; :meth:`step` takes their gradients. ``lr`` may change between steps; ``m``, ``v``
    (the moments, in each parameter's dtype) and ``steps`` (taken so far) are what a saved run restores."""

    def __init__(self, params: Sequence[jt.Var], lr: float, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        self.params, self.lr, self.betas = list(params), lr, tuple(betas)
        self.eps, self.weight_decay = eps, weight_decay
        self.m: List[jt.Var] = [jt.zeros(p.shape, p.dtype).stop_grad() for p in self.params]
        self.v: List[jt.Var] = [jt.zeros(p.shape, p.dtype).stop_grad() for p in self.params]
        self.steps = 0

    def load(self, m: Sequence, v: Sequence, steps: int) -> None:
        """Continue a saved run: its moments (arrays, in :attr:`params`' order) and its step count. Everything is
        written now: a kernel that reads a just-made array compiles differently and rounds differently, and the
        next steps must be the ones an uninterrupted run takes, bit for bit."""
        for mine, saved in zip(self.m + self.v, [*m, *v]):
            mine.assign(jt.array(saved))
        self.steps = steps
        jt.sync(self.params + self.m + self.v)

    def step(self, grads: Sequence[jt.Var]) -> None:
        """One update of every parameter from its gradient, computed and written now."""
        self.steps += 1
        b1, b2 = self.betas
        step_size = self.lr / (1 - b1 ** self.steps)
        root_correction = (1 - b2 ** self.steps) ** -0.5
        decay = 1 - self.lr * self.weight_decay
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            g = g.stop_grad().cast(p.dtype)
            # the moments twice, once for their own update and once inside the weight's, so no kernel boundary
            # separates them (a shared intermediate would)
            new_m = lambda: m * b1 + g * (1 - b1)  # noqa: E731
            new_v = lambda: v * b2 + g * g * (1 - b2)  # noqa: E731
            weight = p * decay - new_m() * step_size / (new_v().sqrt() * root_correction + self.eps)
            m.update(new_m())
            v.update(new_v())
            p.update(weight.cast(p.dtype))
        jt.sync(self.params + self.m + self.v)

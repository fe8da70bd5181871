"""The package's AdamW takes PyTorch's AdamW steps (the rule every training here was written for)."""
import numpy as np
import torch

from styleblend.adamw import AdamW
from styleblend.backend import jt


def test_adamw_takes_torchs_steps_as_the_learning_rate_changes():
    rng = np.random.default_rng(0)
    shapes = [(3, 4), (5,), (2, 3, 2)]
    start = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(4)]
    lrs = [1e-2, 3e-2, 2e-2, 5e-3]
    ours = [jt.array(w) for w in start]
    theirs = [torch.tensor(w, requires_grad=True) for w in start]
    optimizer = AdamW(ours, lrs[0], (0.8, 0.95), 1e-6, 0.1)
    reference = torch.optim.AdamW(theirs, lr=lrs[0], betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)
    for lr, step in zip(lrs, grads):
        optimizer.lr = lr
        optimizer.step([jt.array(g) for g in step])
        for group in reference.param_groups:
            group["lr"] = lr
        for w, g in zip(theirs, step):
            w.grad = torch.tensor(g)
        reference.step()
    assert optimizer.steps == 4
    for w, t, s in zip(ours, theirs, start):
        assert np.abs(w.numpy() - s).max() > 1e-2  # it moved
        np.testing.assert_allclose(w.numpy(), t.detach().numpy(), rtol=0, atol=1e-6)
    for m, v, w in zip(optimizer.m, optimizer.v, theirs):
        state = reference.state[w]
        np.testing.assert_allclose(m.numpy(), state["exp_avg"].numpy(), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(v.numpy(), state["exp_avg_sq"].numpy(), rtol=1e-6, atol=1e-7)

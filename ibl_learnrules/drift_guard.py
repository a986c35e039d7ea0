"""Keep a network rule from pushing weights further out where the animals never went.

Teacher forcing fits a rule on the weights the animals' own choices carry it through; what
the network does beyond them is extrapolation that no trial constrains. A free-running twin
can get there (a run of one-sided choices), and a network whose correction there is a steady
drift then carries the twin's bias ever further out: it chooses one side, its choices no
longer carry a learning signal (``y - p`` near 0), and nothing pulls it back. On KS014, 9
of the default ``dnn``'s 20 twins never trained; in another draw of 20, 5 ended with a bias
of -17 to -25 (the mouse's stayed within -3.7 to 3.5).

:class:`DriftGuard` adds a penalty on the rule's *expected* update (the mean over the
policy's own choices, ``p dw(y=1) + (1 - p) dw(y=0)``, on stimuli drawn from the training
trials) at probe weights outside the box the training animals' weights span, widened by
:data:`MARGIN`: any part of it that points further out costs. Inside, the likelihood alone
decides, and the fit barely moves (KS014 in-sample, ``dnn``: -0.4818 without, -0.4819
with it). What it does and costs, measured on KS014 (``benchmarks/bench_twins.py``,
``benchmarks/select_defaults.py``; README): no runaway twins, and easy-trial RMS 0.18
against 0.29, but twins that still do not learn at the mouse's pace, and worse prediction
of later sessions. It is off by default.
"""

from __future__ import annotations

import numpy as np
import torch

from .rules.base import LearningRule, TrialStep

__all__ = ["DriftGuard", "DRIFT_UNIT", "MARGIN"]

#: The drift (per trial) whose square costs ``strength`` nats per trial: a network rule's
#: starting output scale, so the guard is about as firm for every rule.
DRIFT_UNIT = 1e-3
#: How far beyond the visited weights the guard starts, as a share of their range (at least
#: one unit of weight): without it the guard also stops a rule from carrying a mouse past the
#: range of its training sessions in later ones (KS014's sessions 7-9 fitted on 0-6,
#: ``dnn``: -0.5207 nats/trial with no margin, -0.5007 with 0.5, -0.4926 unguarded).
MARGIN = 0.5


def _numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=float)


def _parts(state) -> list:
    """Return the arrays in a state: itself, or those nested in a tuple; none for None."""
    if state is None:
        return []
    if isinstance(state, (tuple, list)):
        return [part for item in state for part in _parts(item)]
    return [state]


class DriftGuard:
    """Penalty on a rule's expected drift out of the box of weights the animals visit.

    The box is the per-weight range of the weights carried at the end of every training
    chunk in the previous epoch (the guard is idle in the first one), widened on each side
    by ``margin`` times that range (at least 1). Each call of :meth:`add_gradient` draws
    ``n_probes`` weight vectors around the box, keeps those outside it, pairs each with
    ``n_stimuli`` trials drawn from the training batch (and, for a rule with a state, a
    state it carried at a chunk's end), and adds to ``params``' gradient that of
    ``strength * mean(sum((relu(outward drift) / DRIFT_UNIT) ** 2))``.

    Parameters
    ----------
    rule : LearningRule
        The rule being fitted.
    params : list of Parameter
        The parameters the penalty trains (the network's correction).
    x, correct_side : Tensor (N, K), (N,)
        The training trials' covariates and rewarded sides to draw stimuli from.
    strength : float
        Weight of the penalty in the per-trial loss.
    margin : float
        How far out the box is widened, as a share of the visited range.
    n_probes, n_stimuli : int
        Probe weights drawn per call, and stimuli per probe.
    seed : int
        Seed of the probes.

    Examples
    --------
    >>> from ibl_learnrules.rules import DNNRule
    >>> rule = DNNRule(2)
    >>> guard = DriftGuard(rule, rule.correction_parameters(), torch.tensor([[1.0, 1.0]]),
    ...                    torch.tensor([1.0]), strength=1.0)
    >>> guard.observe(np.array([[0.0, -1.0], [2.0, 1.0]]), None)
    >>> guard.end_epoch()
    >>> [b.tolist() for b in guard.box]
    [[0.0, -1.0], [2.0, 1.0]]
    """

    def __init__(self, rule: LearningRule, params: list, x: torch.Tensor,
                 correct_side: torch.Tensor, strength: float, margin: float = MARGIN,
                 n_probes: int = 64, n_stimuli: int = 8, seed: int = 0):
        if not strength > 0:
            raise ValueError(f"strength must be positive, got {strength!r}")
        # the expected update: a noisy learner's noise has mean zero, and its state (a
        # reverting fluctuation) is not the rule's
        self.rule, self.params, self.strength = rule.mean_rule(), params, float(strength)
        self.margin = float(margin)
        dtype, self.device = params[0].dtype, params[0].device
        self.x = x.to(self.device, dtype)
        self.correct_side = correct_side.to(self.device, dtype)
        self.n_probes, self.n_stimuli = n_probes, n_stimuli
        self.generator = torch.Generator().manual_seed(seed)
        self.box: tuple[torch.Tensor, torch.Tensor] | None = None
        self._seen: list[np.ndarray] = []
        self._states: list[np.ndarray] = []
        self.states: torch.Tensor | None = None

    def observe(self, policy_weights, state) -> None:
        """Record the weights and state a chunk ended with.

        ``policy_weights`` is (B, K), or (B, m K) for a runner that carries m trajectories
        side by side (the free-running loss); ``state`` a rule state (B, H), None, or a
        tuple of those.
        """
        k = self.x.shape[1]
        self._seen.append(_numpy(policy_weights).reshape(-1, k))
        self._states += [_numpy(part) for part in _parts(state)]

    def end_epoch(self) -> None:
        """Make the weights seen this epoch the box of the next one."""
        if self._seen:
            seen = np.concatenate(self._seen)
            seen = seen[np.isfinite(seen).all(1)]
            if len(seen):
                self.box = (self._tensor(seen.min(0)), self._tensor(seen.max(0)))
        if self._states:
            self.states = self._tensor(np.concatenate(self._states))
        self._seen, self._states = [], []

    def _tensor(self, values) -> torch.Tensor:
        return torch.as_tensor(values).to(self.device, self.params[0].dtype)

    def penalty(self) -> torch.Tensor:
        """Return the penalty at fresh probes (0 before the first box)."""
        if self.box is None:
            return self._tensor(0.0)
        lo, hi = self.box
        if self.margin:
            room = torch.clamp(self.margin * (hi - lo), min=1.0)
            lo, hi = lo - room, hi + room
        g = self.generator
        reach = torch.clamp(hi - lo, min=2.0)  # how far out the probes go, per weight
        w = lo - reach + self._tensor(torch.rand(self.n_probes, lo.numel(), generator=g)) * (
            hi - lo + 2 * reach)
        outward = (w > hi).to(w.dtype) - (w < lo).to(w.dtype)  # +1 above, -1 below, 0 inside
        outside = outward.abs().sum(1) > 0
        w, outward = w[outside], outward[outside]
        n, k, s = w.shape[0], w.shape[1], self.n_stimuli
        pick = torch.randint(len(self.x), (n * s,), generator=g).to(self.device)
        x, side = self.x[pick], self.correct_side[pick]
        w = w.repeat_interleave(s, 0)
        offset = self.rule.policy_offset()
        carried = w if offset is None else w - offset.detach()
        state = None
        if self.states is not None:
            state = self.states[torch.randint(len(self.states), (n * s,),
                                              generator=g).to(self.device)]
        p = torch.sigmoid((w * x).sum(-1))
        zero = torch.zeros_like(p)
        drift = 0.0
        for choice, prob in ((1.0, p), (0.0, 1.0 - p)):
            y = torch.full_like(p, choice)
            trial = TrialStep(x, y, (y == side).to(p.dtype), side, zero, p)
            update, _ = self.rule(carried, trial, state)
            drift = drift + prob.unsqueeze(-1) * update
        drift = drift.reshape(n, s, k).mean(1)
        excess = torch.relu(outward * drift) / DRIFT_UNIT
        return self.strength * (excess ** 2).sum(1).mean()

    def add_gradient(self) -> None:
        """Add the penalty's gradient to ``params``' ``.grad``."""
        if self.box is None:
            return
        with torch.enable_grad():
            grads = torch.autograd.grad(self.penalty(), self.params, allow_unused=True)
        with torch.no_grad():
            for p, grad in zip(self.params, grads, strict=True):
                if grad is None:
                    continue
                if p.grad is None:
                    p.grad = grad.clone()
                else:
                    p.grad.add_(grad)

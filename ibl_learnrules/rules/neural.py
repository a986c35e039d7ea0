"""Learning rules parameterised by neural networks."""

from __future__ import annotations

import functools
import math
import numbers

import numpy as np
import torch
from torch import nn

from .base import (
    KernelResult,
    LearningRule,
    TrialStep,
    per_weight_log_parameter,
    per_weight_parameter,
)
from .classic import baseline_gain, leak_pull

__all__ = ["DNNRule", "RNNRule", "rule_inputs"]


def rule_inputs(w: torch.Tensor, trial: TrialStep) -> torch.Tensor:
    """Network input of a trial: ``[w, x, 2y-1, 2r-1, 2c-1, new_session]``, shape (B, 2K+4)."""
    signs = torch.stack([trial.y, trial.reward, trial.correct_side], dim=-1) * 2.0 - 1.0
    return torch.cat([w, trial.x, signs, trial.new_session.unsqueeze(-1)], dim=-1)


def _mlp(n_in: int, hidden: int, n_out: int, layers: int) -> nn.Sequential:
    modules: list[nn.Module] = []
    for i in range(layers):
        modules += [nn.Linear(n_in if i == 0 else hidden, hidden), nn.Tanh()]
    modules.append(nn.Linear(hidden, n_out))
    return nn.Sequential(*modules)


#: Classic rules a network rule can be nested around (its update is added to the network's).
BASES = (None, "reinforce_baseline", "reinforce_baseline_leak")
#: How a ``dnn``'s correction may be centred on the policy's own choice (see :class:`DNNRule`).
CENTRES = (None, "policy", "even")
#: The base whose weights also leak toward a resting point.
_LEAK_BASE = "reinforce_baseline_leak"
#: Names of the nested classic rule's parameters (those of REINFORCE with baseline, and of
#: the leak rule).
_CLASSIC_PARAMETERS = ("log_alpha", "beta", "log_leak", "rest")
#: A ``gate_on`` that reads weights 0 (the stimulus's) and 1 (the bias's): the policy's
#: p(correct) on a full-contrast trial on the side its bias works against.
AGAINST_BIAS = "against_bias"


class _ScaledOutput(LearningRule):
    """``dw = base + scale * network output``, the per-weight scale positive, started small.

    With ``base="reinforce_baseline"`` the rule nests REINFORCE with baseline: its update
    ``alpha (r - beta) (y - p) x`` (own fitted ``alpha``, ``beta``) plus the network's
    correction; with the correction at zero it is exactly that classic rule.
    ``base="reinforce_baseline_leak"`` adds that rule's leak ``-leak (w - rest)``.
    """

    def __init__(self, n_weights: int, scale: float, base: str | None = None,
                 alpha=0.01, beta=0.5, leak=1e-3, rest=0.0, gate: int = 0,
                 gate_on: int | str | None = None, gate_all: bool = True):
        super().__init__(n_weights)
        if base not in BASES:
            raise ValueError(f"base must be one of {list(BASES)}, got {base!r}")
        self.base = base
        if int(gate) != gate or gate < 0:
            raise ValueError(f"gate must be an order >= 0 (0: none), got {gate!r}")
        self.gate = int(gate)
        if gate_on == AGAINST_BIAS:
            if not (self.gate and n_weights >= 2 and gate_all):
                raise ValueError(f"gate_on={AGAINST_BIAS!r} reads weights 0 and 1 (stimulus, "
                                 f"bias) and gates every weight: it needs a gate, 2 weights "
                                 f"or more and gate_all=True; got gate={gate!r}, "
                                 f"{n_weights} weight(s), gate_all={gate_all!r}")
        elif gate_on is not None and not (self.gate and isinstance(gate_on, numbers.Integral)
                                          and 0 <= gate_on < n_weights):
            raise ValueError(f"gate_on must index one of the {n_weights} weights or be "
                             f"{AGAINST_BIAS!r}, with a gate; got gate_on={gate_on!r}, "
                             f"gate={gate!r}")
        self.gate_on = gate_on
        if not gate_all and gate_on is None:
            raise ValueError("gate_all=False gates weight gate_on's own share: it needs gate_on")
        self.gate_all = bool(gate_all)
        self.log_scale = nn.Parameter(torch.full((n_weights,), math.log(scale)))
        if base is not None:
            self.log_alpha = per_weight_log_parameter(n_weights, alpha, "alpha")
            self.beta = per_weight_parameter(n_weights, beta, "beta")
        if base == _LEAK_BASE:
            self.log_leak = per_weight_log_parameter(n_weights, leak, "leak")
            self.rest = per_weight_parameter(n_weights, rest, "rest")

    # chosen on validation data (benchmarks/select_defaults.py) and KS014's twins: gated
    # against the bias, the networks predict validation mice as well as ungated (inner
    # cross-validation, training and biased sessions) and their free KS014 twins lock into
    # a runaway bias less often (docs/findings.md: "The gate against the bias")
    default_gate = {"gate": 1, "gate_on": AGAINST_BIAS}

    def correction_parameters(self) -> list[nn.Parameter]:
        """Return the network's parameters: at zero, the update is the base rule's (or none)."""
        return [p for name, p in self.named_parameters()
                if name not in ("log_scale", *_CLASSIC_PARAMETERS)]

    def classic_parameters(self) -> list[nn.Parameter]:
        """Return the nested classic rule's parameters (none without a base)."""
        return [p for name, p in self.named_parameters() if name in _CLASSIC_PARAMETERS]

    def base_update(self, w: torch.Tensor, trial: TrialStep):
        """Return the classic part of the update at weights ``w`` (0 without a base)."""
        if self.base is None:
            return 0.0
        update = self.log_alpha.exp() * baseline_gain(self.beta, trial) * trial.x
        if self.base == _LEAK_BASE:
            update = update + leak_pull(self.log_leak.exp(), self.rest, w)
        return update

    @property
    def scale(self) -> torch.Tensor:
        """Per-weight output scale."""
        return self.log_scale.exp()

    def gated(self, correction: torch.Tensor, w: torch.Tensor, trial: TrialStep):
        """Multiply the network's correction by the gate ``1 - (1 - 2q)^(2 gate)`` (1 for 0).

        ``q`` is the trial's p(right), the sigmoid of weight ``gate_on``, or, for
        ``"against_bias"``, ``sigmoid(|w_0| - |w_1|)`` capped at 1/2; with ``gate_all=False``
        only weight ``gate_on``'s correction is gated.
        """
        if not self.gate:
            return correction
        if self.gate_on is None:
            q = trial.p
        elif self.gate_on == AGAINST_BIAS:
            q = torch.sigmoid(w[:, 0].abs() - w[:, 1].abs()).clamp(max=0.5)
        else:
            q = torch.sigmoid(w[:, self.gate_on])
        gate = (1 - (1 - 2 * q) ** (2 * self.gate)).unsqueeze(-1)
        if not self.gate_all:
            own = torch.zeros(self.n_weights, dtype=correction.dtype, device=correction.device)
            own[self.gate_on] = 1.0
            gate = 1 + (gate - 1) * own
        return correction * gate

    @property
    def _gate_args(self) -> dict:
        """The gate's keyword arguments for a compiled kernel."""
        return {"gate": self.gate, "gate_on": self.gate_on, "gate_all": self.gate_all}

    def _kernel_call(self, chunk, network: nn.Module, inputs, w, state, need_grad, loss_norm):
        """Run a network kernel: its parameters are the scale then ``network``'s, in order.

        The kernel computes in the dtype of the rule's parameters (the engine hands the inputs
        over in that dtype); its carried weights, state and gradients come back in it too.
        The kernels return the log-scale's gradient last; ``log_scale`` is this rule's first
        parameter.
        """
        dtype = self.log_scale.dtype
        np_dtype = np.float32 if dtype == torch.float32 else np.float64

        def arr(a):
            return np.ascontiguousarray(a, dtype=np_dtype)

        with torch.no_grad():
            zeros = (torch.zeros(self.n_weights),) * 2
            base = (self.log_alpha.exp(), self.beta) if self.base is not None else zeros
            leak = (self.log_leak.exp(), self.rest) if self.base == _LEAK_BASE else zeros
            params = [arr(p.detach().cpu().numpy())
                      for p in (self.scale, *network.parameters(), *base, *leak)]
        extra = () if state is None else (arr(state),)
        out = chunk(arr(inputs.x), arr(inputs.u), arr(inputs.y), arr(inputs.valid), arr(w),
                    *extra, params, need_grad, loss_norm)
        grads = None
        if need_grad:
            # the kernel's order: network..., log_scale, log_alpha, beta, log_leak, rest; the
            # rule's: log_scale, [log_alpha, beta, [log_leak, rest]], network...
            *network_grads, g_scale, g_alpha, g_beta, g_leak, g_rest = (
                g.astype(np_dtype) for g in out[-1])
            grads = [g_scale, *((g_alpha, g_beta) if self.base is not None else ()),
                     *((g_leak, g_rest) if self.base == _LEAK_BASE else ()), *network_grads]
        return KernelResult(out[0], out[1], out[2] if state is not None else None, grads)


class DNNRule(_ScaledOutput):
    """Markovian rule: ``dw = [base] + c * MLP(w, x, y, r, correct_side, new_session)``.

    Parameters
    ----------
    n_weights : int
        Number of GLM weights K.
    hidden_size : int
        Width of the hidden layers.
    n_layers : int
        Number of hidden layers.
    scale : float
        Initial per-weight output scale ``c`` (small, so training starts near the base rule,
        or near "no learning" without one).
    base : {"reinforce_baseline", "reinforce_baseline_leak", None}
        A classic rule the network corrects (see :data:`BASES`); ``None`` gives the published
        network alone. Nested by default: on validation mice (inner cross-validation over
        the 27 bundled mice) the nested rule beat the plain network in every outer fold.
    alpha, beta, leak, rest : float or sequence of float
        Initial parameters of the base rule (``leak``, ``rest``: of
        ``"reinforce_baseline_leak"`` only).
    centre : {None, "policy", "even"}
        Centre the correction on the policy's own choice. ``"policy"``: ``c * (MLP(choice
        made) - p MLP(right) - (1 - p) MLP(left))`` (each choice with the reward it would
        earn), which is ``c (y - p) (MLP(right) - MLP(left))``; its expectation under the
        policy is zero, so a free-running twin moves by the base rule's expected update and
        the network shapes only how updates follow the choices made. ``"even"``: ``c *
        (MLP(choice made) - (p - 1/2) (MLP(right) - MLP(left)))``, whose expectation is the
        plain average ``c (MLP(right) + MLP(left)) / 2``: it keeps drifts that do not depend
        on the choice (such as toward the side a trial revealed) and drops the part of the
        mean that the policy's own preference would add, which feeds a free twin's bias back
        on itself.
    gate : int
        Multiply the network's share of the update by ``1 - (1 - 2p)^(2 gate)`` (p: the
        policy's p(right) on the trial; ``4 p (1 - p)`` for ``gate=1`` (or ``True``), none
        for 0): 1 at p = 1/2, vanishing as the policy grows sure, as REINFORCE's own
        expected step does, so that a drift the network learned cannot go on alone in a
        twin whose bias has run away. A higher order keeps the gate near 1 over more of p's
        range (order 4: above 0.83 for p in [0.1, 0.9]).
    gate_on : int or "against_bias", optional
        Gate on the sigmoid of this weight instead of the trial's p: for the bias weight
        (index 1 with the default covariates ``("stimulus", "bias")``) the gate is that of p
        at zero contrast, so it stays open on a sure easy trial and closes only as the bias
        itself runs away. ``"against_bias"`` (weights 0 and 1 the stimulus's and the bias's,
        as with the default covariates) gates on ``q = sigmoid(|w_0| - |w_1|)``, capped at
        1/2: the policy's p(correct) on a full-contrast trial on the side its bias works
        against. The gate stays open while the stimulus outweighs the bias, however large
        both are (a trained mouse in a biased block), and closes as the bias overrides even
        the easiest trials (a twin locked into one side).
        :class:`~ibl_learnrules.LearningRuleGLM` fits ``dnn`` and ``rnn`` with ``gate=1,
        gate_on="against_bias"`` unless its ``rule_params`` set a gate (``default_gate``);
        the class itself is ungated unless told.
    gate_all : bool
        Gate every weight's correction (default) or, ``False``, weight ``gate_on``'s alone.
    """

    name = "dnn"
    formula = "dw = [alpha (r - beta) (y - p) x] + c * MLP(w, x, y, r, correct_side, new_session)"
    # chosen on validation data (benchmarks/select_defaults.py): the 27 mice's training
    # sessions by inner cross-validation (30 beat no prior in all five outer folds, and 10
    # and 100 on average) and KS014's sessions 7-9 fitted on 0-6 (--protocol ks014). With
    # the prior, teacher forcing at a constant rate tied the free-running term with the
    # cosine schedule on the mice, beat it on KS014 and gave twins that learn, where the
    # free-running term's twins (the default before the prior) locked into a bias
    default_correction_prior = 30.0

    def __init__(self, n_weights: int, hidden_size: int = 32, n_layers: int = 2,
                 scale: float = 1e-3, base: str | None = "reinforce_baseline", alpha=0.01,
                 beta=0.5, leak=1e-3, rest=0.0, centre: str | None = None, gate: int = 0,
                 gate_on: int | str | None = None, gate_all: bool = True):
        super().__init__(n_weights, scale, base, alpha, beta, leak, rest, gate, gate_on,
                         gate_all)
        if centre not in CENTRES:
            raise ValueError(f"centre must be one of {list(CENTRES)}, got {centre!r}")
        self.mlp = _mlp(2 * n_weights + 4, hidden_size, n_weights, n_layers)
        self.centre = centre

    def forward(self, w, trial: TrialStep, state=None):
        """One update from the trial's inputs."""
        correction = self.mlp(rule_inputs(w, trial))
        if self.centre is not None:
            right = self.mlp(rule_inputs(w, trial._replace(y=torch.ones_like(trial.y),
                                                           reward=trial.correct_side)))
            left = self.mlp(rule_inputs(w, trial._replace(y=torch.zeros_like(trial.y),
                                                          reward=1 - trial.correct_side)))
            p = trial.p.unsqueeze(-1)
            correction = correction - (p * right + (1 - p) * left)
            if self.centre == "even":
                correction = correction + 0.5 * (right + left)
        return self.base_update(w, trial) + self.scale * self.gated(correction, w, trial), state

    def chunk_kernel(self):
        """Compiled chunk of :mod:`ibl_learnrules.kernels.neural` (two hidden layers only)."""
        if len(self.mlp) != 5:
            return None
        if self.centre is not None or self.gate:
            from ..kernels.mean_field import dnn_centred_chunk

            chunk = functools.partial(dnn_centred_chunk, centre=self.centre, **self._gate_args)
        else:
            from ..kernels.neural import dnn_chunk as chunk

        def kernel(inputs, w, state, need_grad, loss_norm):
            return self._kernel_call(chunk, self.mlp, inputs, w, None, need_grad, loss_norm)

        return kernel

    def mean_field_kernel(self, free=None):
        """Compiled mean-field chunk of :mod:`ibl_learnrules.kernels.mean_field`."""
        if len(self.mlp) != 5:
            return None
        from ..kernels.mean_field import dnn_mean_field_chunk

        chunk = functools.partial(dnn_mean_field_chunk, free=free, centre=self.centre,
                                  **self._gate_args)

        def kernel(inputs, w, state, need_grad, loss_norm):
            return self._kernel_call(chunk, self.mlp, inputs, w, None, need_grad, loss_norm)

        return kernel


class RNNRule(_ScaledOutput):
    """Non-Markovian rule: ``h_t = GRU(h_{t-1}, inputs_t)``, ``dw = c * MLP(h_t)``.

    The hidden state can integrate the history of rewards and choices over many trials.

    Parameters
    ----------
    n_weights : int
        Number of GLM weights K.
    hidden_size : int
        Size of the GRU state and of the read-out MLP's hidden layer.
    scale : float
        Initial per-weight output scale ``c``.
    base : {"reinforce_baseline", "reinforce_baseline_leak", None}
        A classic rule the network corrects (see :data:`BASES`); ``None`` gives the published
        network alone. Nested by default: on validation mice (inner cross-validation over
        the 27 bundled mice) the nested rule beat the plain network in every outer fold.
    alpha, beta, leak, rest : float or sequence of float
        Initial parameters of the base rule (``leak``, ``rest``: of
        ``"reinforce_baseline_leak"`` only).
    gate, gate_on, gate_all
        Gate the network's share of the update as :class:`DNNRule`'s (``gate_on`` names a
        weight by index or is ``"against_bias"``; the estimator also takes a covariate's
        name, and gates against the bias by default).
    """

    name = "rnn"
    formula = ("h = GRU(h, w, x, y, r, correct_side, new_session); "
               "dw = [alpha (r - beta) (y - p) x] + c * MLP(h)")
    # chosen on validation data as dnn's: 10 beat no prior in all five outer folds of the
    # training sessions, and 30 and 100; 30 lost on the biased sessions
    default_correction_prior = 10.0

    def __init__(self, n_weights: int, hidden_size: int = 32, scale: float = 1e-3,
                 base: str | None = "reinforce_baseline", alpha=0.01, beta=0.5, leak=1e-3,
                 rest=0.0, gate: int = 0, gate_on: int | str | None = None,
                 gate_all: bool = True):
        super().__init__(n_weights, scale, base, alpha, beta, leak, rest, gate, gate_on,
                         gate_all)
        self.hidden_size = hidden_size
        self.gru = nn.GRUCell(2 * n_weights + 4, hidden_size)
        self.readout = _mlp(hidden_size, hidden_size, n_weights, 1)

    def initial_state(self, n_animals, device=None):
        """Zero hidden state (B, H)."""
        return torch.zeros(n_animals, self.hidden_size, device=device,
                           dtype=self.gru.weight_hh.dtype)

    def forward(self, w, trial: TrialStep, state=None):
        """Advance the GRU by one trial and read out the update."""
        h = self.gru(rule_inputs(w, trial), state)
        correction = self.gated(self.readout(h), w, trial)
        return self.base_update(w, trial) + self.scale * correction, h

    def chunk_kernel(self):
        """Compiled chunk of :mod:`ibl_learnrules.kernels.neural`."""
        from ..kernels.neural import rnn_chunk

        return self._rnn_kernel(functools.partial(rnn_chunk, **self._gate_args))

    def mean_field_kernel(self, free=None):
        """Compiled mean-field chunk of :mod:`ibl_learnrules.kernels.mean_field`."""
        from ..kernels.mean_field import rnn_mean_field_chunk

        return self._rnn_kernel(functools.partial(rnn_mean_field_chunk, free=free,
                                                  **self._gate_args))

    def _rnn_kernel(self, chunk):
        """Wrap a kernel with the parameters ``GRU, read-out`` (see :meth:`_kernel_call`)."""
        network = nn.ModuleList([self.gru, self.readout])

        def kernel(inputs, w, state, need_grad, loss_norm):
            return self._kernel_call(chunk, network, inputs, w, state, need_grad, loss_norm)

        return kernel

"""The scikit-learn estimator: a learning rule over a dynamic GLM policy.

A thin adapter: it checks parameters, turns trials tables into tensors and calls the engine
(training, the rollout) and the simulator. Saving and NWB live in :mod:`ibl_learnrules.io`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.utils import check_random_state

from . import engine, filtering, prior_selection, simulate
from .closed_loop import FREE_RUNNING_TRAINS, ClosedLoopRunner
from .rules import get_rule_class, make_rule
from .rules.neural import AGAINST_BIAS
from .trials import check_choices, check_covariates, featurize, validate_trials

__all__ = ["LearningRuleGLM"]

_INIT_WEIGHTS = ("zero", "fitted")


def mean_loglik(loglik: np.ndarray) -> float:
    """Mean of per-trial log-likelihoods, no-go trials (NaN) left out; ValueError if all are."""
    if np.isnan(loglik).all():
        raise ValueError("no trial with a choice to score: every trial is no-go (choice 0)")
    return float(np.nanmean(loglik))


def _check_learnable(arrays) -> None:
    """Refuse animals a rule cannot be fitted on: it acts between trials with a choice."""
    n_go = arrays.valid.sum(axis=1)
    none = [s for s, n in zip(arrays.subjects, n_go, strict=True) if n == 0]
    if none:
        raise ValueError(f"animal(s) {', '.join(none)} have no trial with a choice (every "
                         "trial is no-go, choice 0): leave them out of the fit")
    one = [s for s, n in zip(arrays.subjects, n_go, strict=True) if n == 1]
    if one:
        raise ValueError(f"animal(s) {', '.join(one)} have 1 trial with a choice; a learning "
                         "rule updates the weights between trials, so fitting needs at least 2 "
                         "per animal: leave them out of the fit")


def _check_correction_prior(value) -> None:
    """``"auto"``, a number >= 0, or a non-empty sequence of them (candidates)."""
    def number(v) -> bool:
        return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(
            v, bool) and v >= 0

    if value == "auto" or number(value):
        return
    if (isinstance(value, Sequence) and not isinstance(value, str) and len(value) > 0
            and all(number(v) for v in value)):
        return
    raise ValueError('correction_prior must be "auto", a number >= 0 or a non-empty sequence '
                     f"of them (candidates, chosen on held-out data), got {value!r}")


def _can_gate(gate: dict, covariates: Sequence[str]) -> bool:
    """Whether a gate's ``gate_on`` reads weights that the covariates have."""
    if gate.get("gate_on") == AGAINST_BIAS:
        return tuple(covariates[:2]) == ("stimulus", "bias")
    return gate.get("gate_on") in covariates


class LearningRuleGLM(BaseEstimator):
    """Infer a learning rule from animals' choices: GLM policy + learned weight updates.

    On trial t the policy is ``p(right) = sigmoid(w_t . x_t)``; after the trial the weights
    move by the rule's ``dw``. One rule is fitted, shared by all animals in ``X``, by
    maximising the mean per-trial log-likelihood of their choices with the rule rolled
    forward on each animal's own stimuli, choices and rewards.

    Parameters
    ----------
    rule : str
        Name of a rule from :func:`~ibl_learnrules.rules.available_rules`: ``"dnn"``,
        ``"rnn"``, ``"reinforce"``, ``"reinforce_baseline"``, ``"reinforce_baseline_leak"``,
        ``"reinforce_baseline_leak_side"``, ``"reward_max"``, ``"prediction_error"``,
        ``"q_learning"``, ``"reward_history"`` or ``"none"``.
    covariates : tuple of str
        GLM covariates (see :data:`ibl_learnrules.trials.COVARIATES`).
    hidden_size : int
        Hidden width of the ``dnn`` / ``rnn`` networks (ignored by other rules).
    max_epochs : int
        Number of passes over the data (exact, unless early stopping ends training sooner).
    lr : float
        Adam learning rate.
    lr_schedule : {"auto", "constant", "cosine"}
        Learning rate over the epochs: constant, or annealed from ``lr`` to 0 along a cosine
        over ``max_epochs``. Cosine lets network rules settle: with a constant rate their
        parameters keep moving between the early-learning and expert parts of the data.
        ``"auto"`` (default) takes the rule's own default (``default_lr_schedule``):
        constant for every built-in rule.
    tbptt : int
        Trials per chunk of truncated back-propagation through time (one Adam step each).
        100 was chosen on validation mice (inner cross-validation over the 27 bundled mice,
        ``benchmarks/select_defaults.py``): more steps per epoch let every rule converge
        further than 500 did, for the classic and the network rules alike.
    init_weights : {"zero", "fitted"}
        Starting weights of each animal: zero, or a ridge logistic regression on its first
        ``n_init_trials`` trials (also for animals scored or predicted later).
    n_init_trials : int
        Trials used by ``init_weights="fitted"``.
    early_stopping : bool
        Hold out ``validation_fraction`` of the training animals and stop when their loss
        has not improved for ``patience`` epochs; the best epoch's parameters are kept.
    validation_fraction : float
        Share of animals held out for early stopping (at least one), and for choosing among
        candidate ``correction_prior`` values (or of each animal's sessions, below 5 animals).
    patience : int
        Epochs without improvement before stopping.
    grad_clip : float or None
        Maximum gradient norm.
    weight_decay : float
        Decoupled weight decay of a network rule's correction (its network's parameters):
        it pulls the rule toward the classic rule it nests (``rule_params={"base": ...}``),
        or toward no update. Classic rules have nothing to decay.
    correction_prior : "auto", float or sequence of float
        Precision of a Gaussian prior, at zero, on the same parameters: ``correction_prior
        / 2 * |theta|^2`` is added to the training trials' *total* negative log-likelihood.
        Several values are candidates, chosen during ``fit`` on held-out data of the
        training set (:mod:`ibl_learnrules.prior_selection`): with 5 animals or more,
        ``validation_fraction`` of them held out; with fewer, each animal's last sessions.
        Each candidate is fitted on the rest and scored there, and the best is refitted on
        everything (``correction_prior_``, ``prior_scores_``); this costs one more fit per
        candidate, on less data. With nothing to hold out (fewer than 5 animals, one of them
        with a single session) the largest candidate is used, with a warning.
        Unlike ``weight_decay``, its pull falls as the data grow, as a prior's should: one
        mouse's sessions are held near the nested classic rule, a cohort's much less.
        ``"auto"`` (default) takes the rule's own default (``default_correction_prior``):
        30 for ``dnn``, 10 for ``rnn``, 0 for the classic rules (they have no correction).
        Chosen on validation data only (``benchmarks/select_defaults.py``): the 27 mice's
        training sessions by inner cross-validation, where each won in all five outer
        folds, and KS014's sessions 7-9 fitted on 0-6, where without it the networks
        trailed ``reinforce_baseline`` (mean of three seeds) and with it beat it for each.
    drift_guard : float
        Strength of a penalty on a network rule's expected update (under its own policy)
        wherever it would carry the weights further out of the range the training
        animals' weights span, widened by half of it (:mod:`ibl_learnrules.drift_guard`);
        inside, the likelihood alone decides. 0 (default) turns it off; classic rules have
        nothing it acts on. It stops the drift that runs a free twin's bias away (KS014,
        ``dnn``, 1.0: twins' biases end every session within +-3.8, where without it 5 of
        20 ran to -17 to -25; easy-trial RMS 0.18 against 0.29) but costs held-out
        prediction (KS014's sessions 7-9: -0.5007 against -0.4926 nats/trial) and does not
        give twins the mouse's pace (``benchmarks/bench_twins.py``).
    rule_params : dict, optional
        Extra keyword arguments of the rule's class (e.g. ``{"alpha": 0.01}``). A network
        rule's ``gate_on`` may name a covariate (``{"gate": 1, "gate_on": "bias"}``) or be
        ``"against_bias"`` (with covariates that begin ``("stimulus", "bias")``). Where it
        sets no ``gate``, the rule's ``default_gate`` applies: ``dnn`` and ``rnn`` gate their
        correction on ``"against_bias"`` whenever the covariates begin ``("stimulus",
        "bias")`` (``{"gate": 0}`` turns it off; see
        :class:`~ibl_learnrules.rules.DNNRule`).
    weight_noise : None, "learn", float or sequence of float
        Gaussian noise on the weights after every trial, on top of the rule's update
        (:mod:`ibl_learnrules.filtering`): ``None`` (default) none, the deterministic model;
        ``"learn"`` per-weight standard deviations fitted with the rule; a number or K
        numbers, fixed standard deviations. With noise, the likelihood (fitting, ``score``)
        comes from a filter over each animal's weights, whose starting spread around
        ``init_weights`` is learned too; ``rule="none"`` is then PsyTrack's random walk.
        The filter is a per-trial torch loop: slower than the compiled kernels. The noise's
        gradient flows through the belief's covariance, which truncated back-propagation
        cuts at each chunk; where that covariance remembers longer than a chunk (a weight
        the choices inform little, e.g. a trained mouse's bias) short chunks bias its
        noise low: on one simulated mouse, ``tbptt=100`` gave a bias sd of 0.013, 500 gave
        0.021 and the whole trajectory 0.019, for a truth of 0.03 (PsyTrack: 0.021). Prefer
        ``tbptt`` of 500 or more with noise.
    noise_reversion : None, "learn" or float
        With ``weight_noise``: ``None`` (default) makes the noise a random walk, which
        lets a weight wander without bound; a rate in [0, 1) per trial (or ``"learn"``,
        one rate for all weights, fitted from 0.001) makes it a fluctuation about the
        learned weights that falls back by that share every trial (an Ornstein-Uhlenbeck
        process; :mod:`ibl_learnrules.filtering`). On KS014, REINFORCE with baseline with
        a learned rate (0.0003 per trial) predicts as well as with the random walk, and its
        free twins start as the mouse did, but about half of them never train within 15
        sessions (README, "Noise that falls back"). Smoothed trajectories and
        :meth:`rule_share` need the random walk.
    free_running : "auto" or float
        Weight of the free-running likelihood in the training loss
        (:mod:`ibl_learnrules.closed_loop`): the animals' choices scored while the weights
        move by the rule's expected update under its own policy, not by the animal's
        choices. 0 trains on teacher forcing alone. A positive weight keeps a rule from
        predicting by following the animal's choices: without ``correction_prior``, ``dnn``
        trained with 1 and the cosine schedule made twins that learn more at the animal's
        pace (``benchmarks/bench_twins.py``); with the prior its twins locked into a bias.
        ``dnn``, ``rnn``, ``reinforce_baseline``, ``reinforce_baseline_leak`` and
        ``reinforce_baseline_leak_side`` run this part through a compiled kernel (a ``dnn``
        epoch costs about 1.5 plain ones); other rules through a per-trial torch loop, many
        times slower.
        ``"auto"`` (default) takes the rule's own default (``default_free_running``): 0
        for every built-in rule, and always 0 with ``weight_noise``. With ``weight_noise``
        and a positive weight, the teacher-forced part is the filter's likelihood and the
        free part runs the rule without its noise (zero-mean noise leaves the expected
        update unchanged, to first order).
    free_weights : sequence of str, optional
        Covariates whose weights run free in the free-running likelihood; the others move
        by the animal's own choices there, as under teacher forcing (default: all run free).
        ``("stimulus",)`` asks the rule to learn the stimulus at the animal's pace *given*
        the animal's bias: on KS014 the full mean field cannot, because the mouse's early
        sessions are ruled by a bias no mean-field twin has. ``reinforce_baseline`` fitted
        to KS014 with ``free_running=0.3, free_weights=("stimulus",)`` keeps its
        teacher-forced likelihood (-0.4828) with a third of the reward-driven stimulus gain
        (0.0028 against 0.0065), and its free twins reach ``trained_1a`` after a median of
        14-17 sessions (KS014: 14; 25 sessions, twin seeds 0-4; teacher forced alone: 7-8),
        easy-trial RMS 0.10-0.15 (the weight 0.3 was tried on KS014 itself, after 1.0).
        A rule's state (``rnn``'s GRU) runs free either way, mixed over both choices; the
        held weights take the update of the animal's choice from it. Compiled for ``dnn``,
        ``rnn`` and the REINFORCE-with-baseline family (KS014, the fit above: 13 s against
        338 s for the torch loop), a torch loop for other rules.
    free_running_trains : {"all", "base"}
        Which parameters the free-running likelihood trains: all (default), or, ``"base"``,
        only those of the classic rule the network nests (its ``alpha`` and ``beta``), so
        that the likelihood of the animal's choices alone shapes the network's correction
        while the free-running part sets the pace of the classic part. For a classic rule
        both are the same. ``dnn`` fitted to KS014 with ``free_running=0.3,
        free_weights=("stimulus",), free_running_trains="base"`` (in-sample -0.4822, the
        default -0.4818) makes free twins that no longer train at the protocol's fastest
        (none before session 6, where the default's train in 4-5) and rank KS014 as a
        typical twin (0.35-0.57), but 5-12 of 20 have not reached ``trained_1a`` by
        KS014's 15th session (easy-trial RMS 0.145-0.168, twin seeds 0-2;
        ``benchmarks/bench_twins.py --variants dnn_free_stimulus_base``). It predicts
        KS014's sessions 7-9 worse when fitted on 0-6 (-0.5046 against -0.4946, three
        seeds), so no default uses it.
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ...
    engine : {"auto", "torch", "fused"}
        Training loop: ``"auto"`` runs a rule through its compiled CPU kernel when it has one
        (every built-in rule does: same loss and gradients, many times faster) and the
        per-trial torch loop otherwise (and on a GPU); ``"torch"`` always uses the loop.
    random_state : int, optional
        Seed of the parameter initialisation and of the validation split.
    verbose : int
        0 silent, 1 a progress bar over epochs.

    Attributes
    ----------
    rule_ : LearningRule
        The fitted rule (a torch module).
    covariates_ : tuple of str
        Covariates the rule was fitted with.
    subjects_ : tuple of str
        Training animals.
    history_ : pandas.DataFrame
        Loss per epoch (``train_loss``, ``val_loss`` in nats per trial).
    n_iter_ : int
        Epochs run.
    correction_prior_ : float
        The prior's precision the rule was fitted with (the chosen one, among candidates).
    prior_scores_ : pandas.Series or None
        With candidate priors, each one's held-out log-likelihood (nats per trial, mean over
        held-out animals); None with a single value.
    classes_ : ndarray
        ``[0, 1]``: left, right (columns of :meth:`predict_proba`).

    Examples
    --------
    >>> from ibl_learnrules import LearningRuleGLM, simulate_cohort
    >>> trials = simulate_cohort(2, n_trials=300, random_state=0, alpha=0.05)
    >>> est = LearningRuleGLM(rule="reinforce", max_epochs=2, random_state=0).fit(trials)
    >>> est.predict_proba(trials).shape
    (600, 2)
    """

    def __init__(
        self,
        rule: str = "dnn",
        covariates: Sequence[str] = ("stimulus", "bias"),
        hidden_size: int = 32,
        max_epochs: int = 100,
        lr: float = 0.01,
        lr_schedule: str = "auto",
        tbptt: int = 100,
        init_weights: str = "zero",
        n_init_trials: int = 100,
        early_stopping: bool = False,
        validation_fraction: float = 0.2,
        patience: int = 10,
        grad_clip: float | None = 1.0,
        weight_decay: float = 0.0,
        correction_prior: float | str = "auto",
        drift_guard: float = 0.0,
        rule_params: Mapping | None = None,
        weight_noise=None,
        noise_reversion: float | str | None = None,
        free_running: float | str = "auto",
        free_weights: Sequence[str] | None = None,
        free_running_trains: str = "all",
        device: str = "auto",
        engine: str = "auto",
        random_state: int | None = None,
        verbose: int = 0,
    ):
        self.rule = rule
        self.covariates = covariates
        self.hidden_size = hidden_size
        self.max_epochs = max_epochs
        self.lr = lr
        self.lr_schedule = lr_schedule
        self.tbptt = tbptt
        self.init_weights = init_weights
        self.n_init_trials = n_init_trials
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.grad_clip = grad_clip
        self.weight_decay = weight_decay
        self.correction_prior = correction_prior
        self.drift_guard = drift_guard
        self.rule_params = rule_params
        self.weight_noise = weight_noise
        self.noise_reversion = noise_reversion
        self.free_running = free_running
        self.free_weights = free_weights
        self.free_running_trains = free_running_trains
        self.device = device
        self.engine = engine
        self.random_state = random_state
        self.verbose = verbose

    def _check_params(self) -> None:
        get_rule_class(self.rule)
        check_covariates(self.covariates)
        for name in ("hidden_size", "max_epochs", "tbptt", "n_init_trials", "patience"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if self.lr_schedule not in ("auto", *engine.LR_SCHEDULES):
            raise ValueError(f"lr_schedule must be one of {['auto', *engine.LR_SCHEDULES]}, "
                             f"got {self.lr_schedule!r}")
        if self.init_weights not in _INIT_WEIGHTS:
            raise ValueError(f"init_weights must be one of {list(_INIT_WEIGHTS)}, "
                             f"got {self.init_weights!r}")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a number >= 0, got {self.weight_decay!r}")
        self._noise_settings()
        value = self.free_running
        if value != "auto" and not (isinstance(value, (int, float)) and value >= 0):
            raise ValueError(f'free_running must be "auto" or a number >= 0, got {value!r}')
        if self.free_weights is not None:
            names = self._free_weight_names()
            if not names or set(names) - set(self.covariates) or len(set(names)) < len(names):
                raise ValueError(f"free_weights must name distinct covariates of "
                                 f"{tuple(self.covariates)}, got {self.free_weights!r}")
            if not self._free_running_weight():
                raise ValueError("free_weights chooses which weights run free in the "
                                 "free-running likelihood: it needs free_running > 0")
        if self.free_running_trains not in FREE_RUNNING_TRAINS:
            raise ValueError(f"free_running_trains must be one of {list(FREE_RUNNING_TRAINS)}, "
                             f"got {self.free_running_trains!r}")
        if self.free_running_trains != "all" and not self._free_running_weight():
            raise ValueError("free_running_trains chooses what the free-running likelihood "
                             "trains: it needs free_running > 0")
        _check_correction_prior(self.correction_prior)
        if not (isinstance(self.drift_guard, (int, float)) and self.drift_guard >= 0):
            raise ValueError(f"drift_guard must be a number >= 0, got {self.drift_guard!r}")
        if not 0 < self.validation_fraction < 1:
            raise ValueError("validation_fraction must lie in (0, 1), "
                             f"got {self.validation_fraction!r}")

    def _prior_candidates(self) -> tuple[float, ...] | None:
        """Candidate ``correction_prior`` values to choose among, or None for a single one."""
        value = self._setting("correction_prior")
        if isinstance(value, (int, float)):
            return None
        return tuple(float(v) for v in value)

    def _noise_settings(self) -> dict | None:
        """Keyword arguments of :class:`~ibl_learnrules.filtering.WeightNoise` (None: off)."""
        return filtering.noise_settings(self.weight_noise, self.noise_reversion)

    def _setting(self, name: str):
        """Training setting ``name`` with ``"auto"`` resolved to the rule class's default."""
        value = getattr(self, name)
        return getattr(get_rule_class(self.rule), f"default_{name}") if value == "auto" else value

    def _free_running_weight(self) -> float:
        """``free_running`` with ``"auto"`` resolved: the rule's default, 0 with noise."""
        if self.free_running == "auto" and self._noise_settings() is not None:
            return 0.0
        return float(self._setting("free_running"))

    def _free_weight_names(self) -> list[str]:
        """``free_weights`` as a list (one name may be given as a string)."""
        value = self.free_weights
        return [value] if isinstance(value, str) else list(value)

    def _runner_class(self):
        """How training runs a chunk: plus free running, through the filter, or plain."""
        weight = self._free_running_weight()
        if weight:
            mask = None
            if self.free_weights is not None:
                names = set(self._free_weight_names())
                mask = torch.tensor([float(c in names) for c in self.covariates])
                mask = None if bool((mask == 1).all()) else mask
            return ClosedLoopRunner.factory(weight, mask, self.free_running_trains)
        if self._noise_settings():
            return filtering.FilterRunner
        return None

    @property
    def noisy_(self) -> bool:
        """Whether the fitted rule carries weight noise (scored through the filter)."""
        return isinstance(getattr(self, "rule_", None), filtering.NoisyRule)

    def _build_rule(self, covariates: tuple[str, ...], default_gate: bool = True):
        """Build the rule to fit.

        ``default_gate=False`` leaves out the class's default gate (model files saved
        before it existed).
        """
        kwargs = dict(self.rule_params or {})
        if self.rule in ("dnn", "rnn"):
            kwargs.setdefault("hidden_size", self.hidden_size)
        gate = get_rule_class(self.rule).default_gate
        if default_gate and gate and "gate" not in kwargs and _can_gate(gate, covariates):
            kwargs = {**gate, **kwargs}
        if kwargs.get("gate_on") == AGAINST_BIAS:
            if not _can_gate(kwargs, covariates):
                raise ValueError(f"rule_params gate_on={AGAINST_BIAS!r} reads the stimulus and "
                                 "bias weights as the first two: covariates must begin with "
                                 f"('stimulus', 'bias'), got {list(covariates)}")
        elif isinstance(kwargs.get("gate_on"), str):  # a covariate's name: its weight's index
            if kwargs["gate_on"] not in covariates:
                raise ValueError(f"rule_params gate_on={kwargs['gate_on']!r} names no covariate "
                                 f"of {list(covariates)}")
            kwargs["gate_on"] = list(covariates).index(kwargs["gate_on"])
        rule = make_rule(self.rule, len(covariates), **kwargs)
        return filtering.with_noise(rule, self._noise_settings())

    def _check_fitted(self) -> None:
        if not hasattr(self, "rule_"):
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet: call fit(trials) "
                                 "before using it")
        covariates = check_covariates(self.covariates)
        if (self._noise_settings() is None) == self.noisy_:
            raise ValueError(f"the estimator was fitted with weight_noise="
                             f"{'on' if self.noisy_ else 'None'}, but now has weight_noise="
                             f"{self.weight_noise!r}: call fit again after changing it")
        if covariates != self.covariates_ or self.rule != self.rule_name_:
            raise ValueError(
                f"the estimator was fitted with rule={self.rule_name_!r} and covariates="
                f"{list(self.covariates_)}, but now has rule={self.rule!r} and covariates="
                f"{list(covariates)}: call fit again after changing them")

    def _prepare(self, X: pd.DataFrame, y=None, covariates=None):
        """Return the validated table (index = positions in X), arrays, tensors, start weights."""
        table = validate_trials(X.reset_index(drop=True) if isinstance(X, pd.DataFrame) else X)
        if y is not None:
            check_choices(table, y)
        arrays = featurize(table, covariates or self.covariates_)
        device = getattr(self, "device_", None) or engine.resolve_device(self.device)
        w0 = engine.initial_weights(arrays, self.init_weights, self.n_init_trials)
        return (table, arrays, engine.TensorBatch.from_arrays(arrays, device),
                torch.as_tensor(w0, dtype=torch.float32, device=device))

    def _per_trial(self, X, y=None, smoothed: bool = False):
        """Return the validated table, positions of its observed trials, their rollout values.

        With weight noise the values come from the filter: ``w`` the filtered (or smoothed)
        mean of the policy weights, ``sd`` their standard deviation, ``drift`` the rule's
        update.
        """
        self._check_fitted()
        table, arrays, batch, w0 = self._prepare(X, y)
        with torch.no_grad():
            if self.noisy_:
                values = filtering.beliefs(self.rule_.eval(), batch, w0, arrays.valid,
                                           smoothed)
            else:
                res = engine.rollout(self.rule_.eval(), batch, w0, record=True)
                values = {"p": res.p_right, "w": res.weights, "loglik": res.trial_loglik}
        observed = arrays.observed
        values = {k: np.asarray(v.cpu().double().numpy() if isinstance(v, torch.Tensor) else v,
                                dtype=float)[observed] for k, v in values.items()}
        values["loglik"][~arrays.valid[observed]] = np.nan
        return table, table.index.to_numpy()[arrays.row_position[observed]], values

    # ---------------------------------------------------------------------- API
    def fit(self, X: pd.DataFrame, y=None, *, checkpoint: str | Path | None = None,
            checkpoint_every: int = 1, resume: bool = True) -> LearningRuleGLM:
        """Fit the learning rule on the animals in ``X``.

        With ``checkpoint``, the training state (parameters, optimiser, schedule, epoch,
        history, early stopping, validation split) is written to that file, atomically, every
        ``checkpoint_every`` epochs, after the last one and on Ctrl-C (then the
        KeyboardInterrupt goes on). If the file exists and ``resume`` is true, training
        carries on from it and ends with exactly the parameters of an uninterrupted fit; a
        file written with other trials or parameters is refused (ValueError). With
        ``resume=False`` the fit starts afresh and overwrites the file. The file is kept after
        the fit: fitting again with it returns the same model without training.

        Numerical trouble (a non-finite loss or gradient, or exploding weights) undoes the
        epoch and retries it with a lower learning rate, with a
        :class:`~ibl_learnrules.numerics.NumericalWarning`; when that does not cure it a
        :class:`~ibl_learnrules.numerics.NumericalTroubleError` (a FloatingPointError) names
        the epoch and the animals. A fitted model never holds non-finite parameters.

        Parameters
        ----------
        X : pandas.DataFrame
            Trials table (see :func:`~ibl_learnrules.validate_trials`).
        y : array-like, optional
            Choices, 1 = right; derived from ``X["choice"]`` when left out.
        checkpoint : str or Path, optional
            Checkpoint file to write, and to resume from when it exists.
        checkpoint_every : int
            Epochs between checkpoints.
        resume : bool
            Carry on from an existing checkpoint file (else start afresh and overwrite it).

        Returns
        -------
        self

        Examples
        --------
        >>> import pathlib, tempfile
        >>> from ibl_learnrules import simulate_cohort
        >>> trials = simulate_cohort(2, n_trials=200, random_state=0)
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "fit.ckpt"
        >>> est = LearningRuleGLM(rule="reinforce", max_epochs=2, random_state=0)
        >>> a = est.fit(trials, checkpoint=path).rule_.log_alpha.detach().clone()
        >>> bool((est.fit(trials, checkpoint=path).rule_.log_alpha == a).all())  # resumed
        True
        """
        self._check_params()
        covariates = check_covariates(self.covariates)
        self.device_ = device = engine.resolve_device(self.device)
        table, arrays, batch, w0 = self._prepare(X, y, covariates)
        _check_learnable(arrays)
        candidates = self._prior_candidates()
        self.prior_scores_ = None
        if candidates is None:
            self.correction_prior_ = float(self._setting("correction_prior"))
        else:
            try:
                # a generator of its own, so that the fit with the winner is the very fit
                # that correction_prior=winner gives
                self.prior_scores_ = prior_selection.score_candidates(
                    self, table, candidates, check_random_state(self.random_state))
                self.correction_prior_ = float(self.prior_scores_.idxmax())
            except prior_selection.NothingToHoldOut as err:
                # with so little data, the firmest prior is the safe one
                self.correction_prior_ = max(candidates)
                warnings.warn(f"{err}: fitted with the strongest candidate, "
                              f"{self.correction_prior_:g}", UserWarning, stacklevel=2)
        from .checkpoint import fit_checkpoint  # imports io, which imports this module

        ckpt, resume_state = fit_checkpoint(checkpoint, checkpoint_every, resume, arrays,
                                            self.get_params())
        rng = check_random_state(self.random_state)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(rng.randint(2**31 - 1)))
            rule = self._build_rule(covariates).to(device)
        val_batch = val_w0 = val_names = None
        train = np.arange(arrays.n_animals)
        if self.early_stopping:
            train, val = engine.split_animals(arrays.n_animals, self.validation_fraction, rng)
            if ckpt is not None:  # a resumed fit keeps its split, even unseeded
                train, val = (np.asarray(ckpt.meta.setdefault(k, v.tolist()), dtype=int)
                              for k, v in (("train", train), ("validation", val)))
            val_batch = engine.TensorBatch.from_arrays(arrays.take(val), device)
            batch = engine.TensorBatch.from_arrays(arrays.take(train), device)
            val_w0, w0 = w0[torch.as_tensor(val)], w0[torch.as_tensor(train)]
            val_names = [arrays.subjects[i] for i in val]
        history = engine.train_rule(
            rule.train(), batch, w0, max_epochs=self.max_epochs, lr=self.lr,
            lr_schedule=self._setting("lr_schedule"), tbptt=self.tbptt, grad_clip=self.grad_clip,
            val_batch=val_batch, val_w0=val_w0, patience=self.patience, engine=self.engine,
            weight_decay=self.weight_decay,
            correction_prior=self.correction_prior_,
            drift_guard=float(self.drift_guard),
            checkpoint=ckpt, resume=resume_state,
            names=[arrays.subjects[i] for i in train],
            val_names=val_names,
            runner_class=self._runner_class(),
            progress=engine.progress_bar(self.max_epochs, f"fit {self.rule}", self.verbose))
        self.rule_, self.rule_name_, self.covariates_ = rule.eval(), self.rule, covariates
        self.subjects_ = arrays.subjects
        self.n_iter_, self.best_epoch_ = len(history.train_loss), history.best_epoch
        self.history_ = pd.DataFrame({"epoch": np.arange(self.n_iter_),
                                      "train_loss": history.train_loss,
                                      "val_loss": history.val_loss or np.nan})
        self.classes_ = np.array([0, 1])
        return self

    def score(self, X: pd.DataFrame, y=None) -> float:
        """Mean per-trial log-likelihood (nats) of the choices in ``X``; higher is better.

        Each animal is rolled forward from its starting weights with the fitted rule on its
        own trials (teacher forcing); no-go trials are left out.
        """
        return mean_loglik(self.score_samples(X, y))

    def score_samples(self, X: pd.DataFrame, y=None) -> np.ndarray:
        """Log-likelihood (nats) of each trial's choice, in the row order of ``X``.

        Teacher forced, as :meth:`score`; NaN on no-go trials, which carry no choice.
        """
        table, positions, values = self._per_trial(X, y)
        out = np.full(len(table), np.nan)
        out[positions] = values["loglik"]
        return out

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Teacher-forced p(left), p(right) of every trial, in the row order of ``X``.

        Returns
        -------
        ndarray (n_trials, 2)
            Columns follow ``classes_``: left (0), right (1).
        """
        table, positions, values = self._per_trial(X)
        out = np.empty((len(table), 2))
        out[positions, 1] = values["p"]
        out[positions, 0] = 1.0 - values["p"]
        return out

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Most likely choice of every trial (1 = right, 0 = left), in the row order of ``X``."""
        return (self.predict_proba(X)[:, 1] > 0.5).astype(int)

    def predict_trajectory(self, X: pd.DataFrame, smoothed: bool = False) -> pd.DataFrame:
        """GLM weights of every trial, rolled forward (or filtered) with the fitted rule.

        Without weight noise, the weights before each trial. With it, the belief over the
        weights of each trial from the filter: its mean and standard deviation given the
        choices up to and including that trial (filtered), or given all of the animal's
        choices (``smoothed=True``: a Rauch-Tung-Striebel backward pass).

        Parameters
        ----------
        X : pandas.DataFrame
            Trials table.
        smoothed : bool
            Smoothed rather than filtered beliefs (weight noise only).

        Returns
        -------
        pandas.DataFrame
            In contract order (subject, session, trial), indexed like ``X``: ``subject``,
            ``session``, ``trial``, ``w_<covariate>`` per weight, with weight noise
            ``w_<covariate>_sd`` after them, and ``p_right`` (the one-step-ahead prediction
            from earlier trials, as :meth:`predict_proba`).
        """
        self._check_fitted()
        if smoothed and not self.noisy_:
            raise ValueError("smoothed=True needs weight noise: a deterministic rule's "
                             "weights are known, there is nothing to smooth")
        table, positions, values = self._per_trial(X, smoothed=smoothed)
        out = table.loc[positions, ["subject", "session", "trial"]]
        for k, name in enumerate(self.covariates_):
            out[f"w_{name}"] = values["w"][:, k]
        if "sd" in values:
            for k, name in enumerate(self.covariates_):
                out[f"w_{name}_sd"] = values["sd"][:, k]
        out["p_right"] = values["p"]
        out.index = X.index[positions]
        return out

    def rule_share(self, X: pd.DataFrame, window: int | None = None) -> pd.DataFrame:
        """Per animal, the share of its weight change that the fitted rule explains.

        Under the noisy model the weights of an animal move over ``n`` valid trials by
        ``D + E``: ``D`` the sum of the rule's updates (along the filtered weights), ``E``
        the noise, mean 0 and variance ``n sd**2``. The share is
        ``D**2 / (D**2 + n sd**2)``, summed over windows of ``window`` trials (default: the
        whole of training, i.e. the animal's net learning); see
        :func:`ibl_learnrules.filtering.rule_share`. 1 means the rule accounts for all of
        the expected squared change, 0 that the noise does.

        Returns
        -------
        pandas.DataFrame
            One row per animal: ``subject``, ``n_trials`` (valid trials), ``share_<covariate>``
            per weight and ``share`` for all weights together.

        Examples
        --------
        >>> from ibl_learnrules import LearningRuleGLM, simulate_cohort
        >>> trials = simulate_cohort(2, n_trials=200, random_state=0, weight_noise=0.02)
        >>> est = LearningRuleGLM(rule="reinforce", weight_noise=0.02, max_epochs=1)
        >>> est.fit(trials).rule_share(trials).columns.tolist()
        ['subject', 'n_trials', 'share_stimulus', 'share_bias', 'share']
        """
        self._check_fitted()
        if not self.noisy_:
            raise ValueError("rule_share needs weight noise (weight_noise='learn' or fixed): "
                             "without it the rule explains every change by construction")
        if self.rule_.reverts:
            raise ValueError("rule_share assumes random-walk noise; this model's noise "
                             "reverts (noise_reversion), so its sum over a window is bounded")
        _, arrays, batch, w0 = self._prepare(X)
        with torch.no_grad():
            res = filtering.filter_rollout(self.rule_.eval(), batch, w0, record=True)
        var = self.rule_.noise.var.detach().cpu().double().numpy()
        return filtering.share_table(arrays.subjects, res.drift.cpu().double().numpy(), var,
                                     arrays.valid, self.covariates_, window)

    def simulate(self, X_or_protocol, random_state=None) -> pd.DataFrame:
        """Free-running choices from the fitted rule.

        Parameters
        ----------
        X_or_protocol : pandas.DataFrame or dict
            A trials table whose stimuli, sessions and priors are replayed (the choices and
            rewards in it are ignored), or keyword arguments of
            :func:`~ibl_learnrules.simulate.twins` (``n_subjects``, ``n_trials``,
            ``n_sessions``, ``protocol``) to run the IBL training protocol from zero weights,
            whose repeat trials and blocks then follow the model's own choices.
        random_state : int, optional
            Seed of the sampled choices (and of the weight noise, with ``weight_noise``:
            the simulated animals' weights then wander around the rule's updates; they start
            at their ``init_weights`` exactly).

        Returns
        -------
        pandas.DataFrame
            A trials table with the model's choices and rewards and ``w_<covariate>``, the
            policy weights before each trial.
        """
        self._check_fitted()
        rule = self.rule_
        if self.noisy_:
            rule = rule.sampling(int(np.random.default_rng(random_state).integers(2**62)))
        if isinstance(X_or_protocol, pd.DataFrame):
            table, arrays, _, w0 = self._prepare(X_or_protocol)
            out = simulate.replay(rule, table, arrays, w0, random_state)
        elif isinstance(X_or_protocol, Mapping):
            if self.init_weights == "fitted":
                raise ValueError("protocol simulation starts from zero weights; it is not "
                                 "defined for init_weights='fitted' (replay a trials table)")
            out = simulate.twins(rule, self.covariates_, random_state=random_state,
                                 **X_or_protocol)
        else:
            raise TypeError("simulate needs a trials DataFrame or a dict of protocol "
                            f"arguments, got {type(X_or_protocol).__name__}")
        return out.rename(columns={f"true_w_{c}": f"w_{c}" for c in self.covariates_})

"""The scikit-learn estimator: a learning rule over a dynamic GLM policy."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.utils import check_random_state
from tqdm.auto import tqdm

from . import engine
from .rules import TrialStep, get_rule_class
from .trials import check_covariates, featurize, validate_trials

__all__ = ["LearningRuleGLM"]

_INIT_WEIGHTS = ("zero", "fitted")
_SAVE_FORMAT = "ibl_learnrules.LearningRuleGLM/1"


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
        ``"rnn"``, ``"reinforce"``, ``"reinforce_baseline"``, ``"reward_max"``,
        ``"prediction_error"``, ``"q_learning"`` or ``"none"`` (fixed GLM).
    covariates : tuple of str
        GLM covariates (see :data:`ibl_learnrules.trials.COVARIATES`).
    hidden_size : int
        Hidden width of the ``dnn`` / ``rnn`` networks (ignored by other rules).
    max_epochs : int
        Number of passes over the data (exact, unless early stopping ends training sooner).
    lr : float
        Adam learning rate.
    lr_schedule : {"constant", "cosine"}
        Learning rate over the epochs: constant, or annealed from ``lr`` to 0 along a cosine
        over ``max_epochs``. Cosine lets network rules settle: with a constant rate their
        parameters keep moving between the early-learning and expert parts of the data.
    tbptt : int
        Trials per chunk of truncated back-propagation through time.
    init_weights : {"zero", "fitted"}
        Starting weights of each animal: zero, or a ridge logistic regression on its first
        ``n_init_trials`` trials (also for animals scored or predicted later).
    n_init_trials : int
        Trials used by ``init_weights="fitted"``.
    early_stopping : bool
        Hold out ``validation_fraction`` of the training animals and stop when their loss
        has not improved for ``patience`` epochs; the best epoch's parameters are kept.
    validation_fraction : float
        Share of animals held out for early stopping (at least one).
    patience : int
        Epochs without improvement before stopping.
    grad_clip : float or None
        Maximum gradient norm.
    rule_params : dict, optional
        Extra keyword arguments of the rule's class (e.g. ``{"alpha": 0.01}``).
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ...
    engine : {"auto", "torch", "fused"}
        Training loop: ``"auto"`` runs the ``dnn`` and ``rnn`` rules through compiled CPU
        kernels (same loss and gradients, many times faster) and everything else through the
        per-trial torch loop; ``"torch"`` always uses the torch loop.
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
        lr_schedule: str = "constant",
        tbptt: int = 500,
        init_weights: str = "zero",
        n_init_trials: int = 100,
        early_stopping: bool = False,
        validation_fraction: float = 0.2,
        patience: int = 10,
        grad_clip: float | None = 1.0,
        rule_params: Mapping | None = None,
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
        self.rule_params = rule_params
        self.device = device
        self.engine = engine
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ helpers
    def _check_params(self) -> None:
        get_rule_class(self.rule)
        check_covariates(self.covariates)
        for name in ("hidden_size", "max_epochs", "tbptt", "n_init_trials", "patience"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        engine.check_lr_schedule(self.lr_schedule)
        if self.init_weights not in _INIT_WEIGHTS:
            raise ValueError(f"init_weights must be one of {list(_INIT_WEIGHTS)}, "
                             f"got {self.init_weights!r}")
        if not 0 < self.validation_fraction < 1:
            raise ValueError("validation_fraction must lie in (0, 1), "
                             f"got {self.validation_fraction!r}")

    def _build_rule(self, n_weights: int):
        cls = get_rule_class(self.rule)
        kwargs = dict(self.rule_params or {})
        if self.rule in ("dnn", "rnn"):
            kwargs.setdefault("hidden_size", self.hidden_size)
        try:
            return cls(n_weights, **kwargs)
        except TypeError as err:
            raise TypeError(f"bad rule_params for rule {self.rule!r}: {err}") from None

    def _check_fitted(self) -> None:
        if not hasattr(self, "rule_"):
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet: call fit(trials) "
                                 "before using it")
        covariates = check_covariates(self.covariates)
        if covariates != self.covariates_ or self.rule != self.rule_name_:
            raise ValueError(
                f"the estimator was fitted with rule={self.rule_name_!r} and covariates="
                f"{list(self.covariates_)}, but now has rule={self.rule!r} and covariates="
                f"{list(covariates)}: call fit again after changing them"
            )

    def _prepare(self, X: pd.DataFrame, y=None, covariates=None):
        """Return the validated table (index = positions in X), its arrays and tensors."""
        table = validate_trials(X.reset_index(drop=True) if isinstance(X, pd.DataFrame) else X)
        if y is not None:
            self._check_y(table, y, len(X))
        arrays = featurize(table, covariates or self.covariates_, validated=True)
        if self.init_weights == "fitted":
            w0 = engine.fit_initial_weights(arrays, self.n_init_trials)
        else:
            w0 = np.zeros(arrays.x.shape[::2])
        device = getattr(self, "device_", None) or engine.resolve_device(self.device)
        batch = engine.TensorBatch.from_arrays(arrays, device)
        return table, arrays, batch, torch.as_tensor(w0, dtype=torch.float32, device=device)

    @staticmethod
    def _check_y(table: pd.DataFrame, y, n: int) -> None:
        y = np.asarray(y, dtype=float).ravel()
        if len(y) != n:
            raise ValueError(f"y has {len(y)} values for {n} trials")
        derived = (table["choice"].to_numpy() == -1).astype(float)
        go = table["choice"].to_numpy() != 0
        if not np.array_equal(y[table.index.to_numpy()][go], derived[go]):
            raise ValueError("y disagrees with the choices in X (y = 1 means right, i.e. ALF "
                             "choice -1); leave y out to derive it from X")

    def _rollout(self, batch, w0, generator=None) -> engine.RolloutResult:
        self.rule_.eval()
        with torch.no_grad():
            return engine.rollout(self.rule_, batch, w0,
                                  self.rule_.initial_state(batch.n_animals, w0.device),
                                  record=True, generator=generator)

    # ---------------------------------------------------------------------- API
    def fit(self, X: pd.DataFrame, y=None) -> LearningRuleGLM:
        """Fit the learning rule on the animals in ``X``.

        Parameters
        ----------
        X : pandas.DataFrame
            Trials table (see :func:`~ibl_learnrules.validate_trials`).
        y : array-like, optional
            Choices, 1 = right; derived from ``X["choice"]`` when left out.

        Returns
        -------
        self
        """
        self._check_params()
        covariates = check_covariates(self.covariates)
        device = engine.resolve_device(self.device)
        self.device_ = device
        _, arrays, batch, w0 = self._prepare(X, y, covariates)
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(2**31 - 1))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            rule = self._build_rule(len(covariates)).to(device)

        val_batch = val_w0 = None
        if self.early_stopping:
            n = arrays.n_animals
            if n < 2:
                raise ValueError("early_stopping needs at least 2 animals: one to validate on")
            n_val = min(max(1, round(self.validation_fraction * n)), n - 1)
            order = rng.permutation(n)
            val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
            val_batch = engine.TensorBatch.from_arrays(arrays.take(val), device)
            val_w0 = w0[torch.as_tensor(val, device=device)]
            batch = engine.TensorBatch.from_arrays(arrays.take(train), device)
            w0 = w0[torch.as_tensor(train, device=device)]

        bar = tqdm(total=self.max_epochs, disable=not self.verbose, desc=f"fit {self.rule}",
                   unit="epoch")

        def progress(epoch, train_loss, val_loss):
            bar.update(1)
            bar.set_postfix(loss=f"{train_loss:.4f}",
                            **({} if np.isnan(val_loss) else {"val": f"{val_loss:.4f}"}))

        rule.train()
        try:
            history = engine.train_rule(
                rule, batch, w0, max_epochs=self.max_epochs, lr=self.lr,
                lr_schedule=self.lr_schedule, tbptt=self.tbptt, grad_clip=self.grad_clip,
                val_batch=val_batch, val_w0=val_w0, patience=self.patience, progress=progress,
                engine=self.engine)
        finally:
            bar.close()
        self.rule_ = rule.eval()
        self.rule_name_ = self.rule
        self.covariates_ = covariates
        self.subjects_ = arrays.subjects
        self.n_iter_ = len(history.train_loss)
        self.best_epoch_ = history.best_epoch
        self.history_ = pd.DataFrame({
            "epoch": np.arange(self.n_iter_),
            "train_loss": history.train_loss,
            "val_loss": history.val_loss if history.val_loss else np.nan,
        })
        self.classes_ = np.array([0, 1])
        return self

    def score(self, X: pd.DataFrame, y=None) -> float:
        """Mean per-trial log-likelihood (nats) of the choices in ``X``; higher is better.

        Each animal is rolled forward from its starting weights with the fitted rule on its
        own trials (teacher forcing); no-go trials are left out.
        """
        self._check_fitted()
        _, _, batch, w0 = self._prepare(X, y)
        res = self._rollout(batch, w0)
        return float(res.loglik.sum() / batch.valid.sum().clamp(min=1))

    def _per_trial(self, X):
        table, arrays, batch, w0 = self._prepare(X)
        res = self._rollout(batch, w0)
        observed = arrays.observed
        rows = arrays.row_position[observed]  # positions in the sorted table
        return table, rows, res.p_right.cpu().numpy()[observed], \
            res.weights.cpu().numpy()[observed]

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Teacher-forced p(left), p(right) of every trial, in the row order of ``X``.

        Returns
        -------
        ndarray (n_trials, 2)
            Columns follow ``classes_``: left (0), right (1).
        """
        self._check_fitted()
        table, rows, p, _ = self._per_trial(X)
        out = np.empty((len(table), 2))
        positions = table.index.to_numpy()[rows]
        out[positions, 1] = p
        out[positions, 0] = 1.0 - p
        return out

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Most likely choice of every trial (1 = right, 0 = left), in the row order of ``X``."""
        return (self.predict_proba(X)[:, 1] > 0.5).astype(int)

    def predict_trajectory(self, X: pd.DataFrame) -> pd.DataFrame:
        """GLM weights before every trial, rolled forward with the fitted rule.

        Returns
        -------
        pandas.DataFrame
            In contract order (subject, session, trial), indexed like ``X``: ``subject``,
            ``session``, ``trial``, ``w_<covariate>`` per weight and ``p_right``.
        """
        self._check_fitted()
        table, rows, p, w = self._per_trial(X)
        out = table.iloc[rows][["subject", "session", "trial"]].copy()
        for k, name in enumerate(self.covariates_):
            out[f"w_{name}"] = w[:, k]
        out["p_right"] = p
        out.index = X.index[out.index.to_numpy()]
        return out

    def simulate(self, X_or_protocol, random_state=None) -> pd.DataFrame:
        """Free-running choices from the fitted rule.

        Parameters
        ----------
        X_or_protocol : pandas.DataFrame or dict
            A trials table whose stimuli, sessions and priors are replayed (the choices and
            rewards in it are ignored), or keyword arguments of
            :func:`~ibl_learnrules.simulate_cohort` (``n_subjects``, ``n_trials``,
            ``n_sessions``, ``protocol``) to run the IBL training protocol, whose repeat
            trials then follow the model's own errors.
        random_state : int, optional
            Seed of the sampled choices.

        Returns
        -------
        pandas.DataFrame
            A trials table with the model's choices and rewards and ``w_<covariate>``, the
            policy weights before each trial.
        """
        self._check_fitted()
        if isinstance(X_or_protocol, pd.DataFrame):
            return self._replay(X_or_protocol, random_state)
        if isinstance(X_or_protocol, Mapping):
            return self._run_protocol(dict(X_or_protocol), random_state)
        raise TypeError("simulate needs a trials DataFrame or a dict of protocol arguments, "
                        f"got {type(X_or_protocol).__name__}")

    def _config(self) -> dict:
        """JSON-able description of the fitted estimator (everything but the parameters)."""
        from . import __version__

        self._check_fitted()
        params = self.get_params()
        params["covariates"] = list(params["covariates"])
        return {
            "format": _SAVE_FORMAT,
            "package_version": __version__,
            "params": params,
            "fitted": {
                "rule": self.rule_name_,
                "covariates": list(self.covariates_),
                "subjects": list(self.subjects_),
                "n_iter": self.n_iter_,
                "best_epoch": self.best_epoch_,
                "history": self.history_.to_dict(orient="list"),
            },
        }

    @classmethod
    def _from_config(cls, config: dict, state_dict: Mapping, device: str,
                     allow_version_mismatch: bool, source: str) -> LearningRuleGLM:
        """Rebuild a fitted estimator from :meth:`_config` output and the rule's state dict."""
        from . import __version__

        saved = config["package_version"]
        if saved != __version__ and not allow_version_mismatch:
            raise ValueError(f"{source} was saved by ibl_learnrules {saved}, this is "
                             f"{__version__}; refit, or pass allow_version_mismatch=True to "
                             "load it anyway")
        params = dict(config["params"], device=device)
        params["covariates"] = tuple(params["covariates"])
        est = cls(**params)
        fitted = config["fitted"]
        est.device_ = engine.resolve_device(device)
        est.covariates_ = tuple(fitted["covariates"])
        rule = est._build_rule(len(est.covariates_))
        rule.load_state_dict(state_dict)
        est.rule_ = rule.to(est.device_).eval()
        est.rule_name_ = fitted["rule"]
        est.subjects_ = tuple(fitted["subjects"])
        est.n_iter_ = fitted["n_iter"]
        est.best_epoch_ = fitted["best_epoch"]
        est.history_ = pd.DataFrame(fitted["history"])
        est.classes_ = np.array([0, 1])
        return est

    # --------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> Path:
        """Save the fitted estimator to one file: JSON configuration + torch state dict.

        The file loads with ``torch.load(weights_only=True)``: no pickled code is executed.

        Examples
        --------
        >>> import pathlib, tempfile
        >>> from ibl_learnrules import simulate_cohort
        >>> trials = simulate_cohort(2, n_trials=200, random_state=0)
        >>> est = LearningRuleGLM(rule="reinforce", max_epochs=1).fit(trials)
        >>> path = est.save(pathlib.Path(tempfile.mkdtemp()) / "reinforce.pt")
        >>> same = LearningRuleGLM.load(path)
        >>> bool((same.predict_proba(trials) == est.predict_proba(trials)).all())
        True
        """
        config = self._config()
        state = {k: v.detach().cpu() for k, v in self.rule_.state_dict().items()}
        path = Path(path)
        torch.save({"config": json.dumps(config), "state_dict": state}, path)
        return path

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu",
             allow_version_mismatch: bool = False) -> LearningRuleGLM:
        """Load an estimator written by :meth:`save`.

        Parameters
        ----------
        path : str or Path
            File written by :meth:`save`.
        device : str
            Where the loaded rule lives (``"cpu"``, ``"cuda"``, ``"auto"``).
        allow_version_mismatch : bool
            Load a file saved by another version of the package (else ValueError).
        """
        try:
            blob = torch.load(Path(path), map_location="cpu", weights_only=True)
            config = json.loads(blob["config"])
        except (OSError, RuntimeError, KeyError, TypeError, ValueError,
                __import__("pickle").UnpicklingError) as err:
            raise ValueError(f"{path} is not a model saved by LearningRuleGLM.save: "
                             f"{type(err).__name__}: {err}") from None
        if config.get("format") != _SAVE_FORMAT:
            raise ValueError(f"{path} has format {config.get('format')!r}, expected "
                             f"{_SAVE_FORMAT!r}")
        return cls._from_config(config, blob["state_dict"], device, allow_version_mismatch,
                                str(path))

    @classmethod
    def from_nwb(cls, path: str | Path, name: str | None = None, device: str = "cpu",
                 allow_version_mismatch: bool = False) -> LearningRuleGLM:
        """Rebuild a fitted estimator from an NWB file.

        The file holds what :func:`ibl_learnrules.io.nwb.write_results` wrote.

        Parameters
        ----------
        path : str or Path
            NWB file holding a ``LearningRuleModel`` in its ``behavior`` module.
        name : str, optional
            The container's name (``learning_rule_<rule>``); needed when the file holds more
            than one fitted rule.
        device, allow_version_mismatch
            As in :meth:`load`.

        Returns
        -------
        LearningRuleGLM
            Fitted, with predictions equal to the estimator that was written.
        """
        from .io.nwb import read_model

        return read_model(path, name=name, device=device,
                          allow_version_mismatch=allow_version_mismatch)

    def _replay(self, X, random_state) -> pd.DataFrame:
        table, arrays, batch, w0 = self._prepare(X)
        generator = torch.Generator(device=batch.x.device)
        generator.manual_seed(int(check_random_state(random_state).randint(2**31 - 1)))
        res = self._rollout(batch, w0, generator=generator)
        observed = arrays.observed
        rows = arrays.row_position[observed]
        y = res.y.cpu().numpy()[observed]
        out = table.iloc[rows].copy()
        go = out["choice"].to_numpy() != 0
        out["choice"] = np.where(go, np.where(y == 1, -1, 1), 0)
        right = out["contrastRight"].notna().to_numpy()
        out["feedbackType"] = np.where(go & ((y == 1) == right), 1, -1)
        w = res.weights.cpu().numpy()[observed]
        for k, name in enumerate(self.covariates_):
            out[f"w_{name}"] = w[:, k]
        return out

    def _run_protocol(self, protocol: dict, random_state) -> pd.DataFrame:
        from .simulate import simulate_cohort

        unknown = set(protocol) - {"n_subjects", "n_trials", "n_sessions", "protocol"}
        if unknown:
            raise ValueError(f"unknown protocol argument(s) {sorted(unknown)}; use n_subjects, "
                             "n_trials, n_sessions, protocol")
        if self.init_weights == "fitted":
            raise ValueError("protocol simulation starts from zero weights; it is not defined "
                             "for init_weights='fitted' (replay a trials table instead)")
        learner = _RuleLearner(self.rule_)
        table = simulate_cohort(protocol.pop("n_subjects", 1), rule=learner,
                                random_state=random_state, covariates=self.covariates_,
                                w0=learner.start_weights(), **protocol)
        return table.rename(columns={f"true_w_{c}": f"w_{c}" for c in self.covariates_})


class _RuleLearner:
    """A fitted torch rule seen as a :class:`~ibl_learnrules.simulate.Learner` (one animal).

    The simulator tracks the policy's weights; the rule's own weights are those minus its
    constant policy offset.
    """

    def __init__(self, rule):
        self.rule = rule
        param = next(rule.parameters(), None)
        self.device = param.device if param is not None else torch.device("cpu")
        offset = rule.policy_offset()
        self.offset = (np.zeros(rule.n_weights) if offset is None
                       else offset.detach().cpu().numpy().astype(float))

    def start_weights(self) -> np.ndarray:
        return self.offset.copy()

    def initial_state(self):
        return self.rule.initial_state(1, self.device)

    def delta_w(self, w, x, y, reward, correct_side=None, new_session=None, state=None):
        def t(v):
            return torch.tensor(np.atleast_1d(np.asarray(v, dtype=np.float32)),
                                device=self.device)
        w_rule = t(w - self.offset)[None]
        logit = float(np.dot(w, x))
        step = TrialStep(t(x)[None], t(y), t(reward), t(correct_side), t(new_session),
                                t(1.0 / (1.0 + np.exp(-logit))))
        with torch.no_grad():
            dw, state = self.rule(w_rule, step, state)
        return dw[0].cpu().numpy().astype(float), state

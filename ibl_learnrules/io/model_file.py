"""Fitted estimators to and from files: JSON configuration + tensors, no pickled code."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..engine import resolve_device
from ..estimator import LearningRuleGLM
from ..prior_selection import as_scores
from .files import atomic_write

__all__ = ["save_model", "load_model", "estimator_config", "estimator_from_config",
           "SAVE_FORMAT"]

#: Written into every model file; files of another format are refused.
SAVE_FORMAT = "ibl_learnrules.LearningRuleGLM/1"


def estimator_config(estimator: LearningRuleGLM) -> dict:
    """JSON-able description of a fitted estimator (everything but the rule's tensors)."""
    from .. import __version__

    estimator._check_fitted()
    params = estimator.get_params()
    params["covariates"] = list(params["covariates"])
    noise = params.get("weight_noise")
    if noise is not None and not isinstance(noise, str):  # fixed sds: JSON numbers
        params["weight_noise"] = np.asarray(noise, dtype=float).tolist()
    return {
        "format": SAVE_FORMAT,
        "package_version": __version__,
        "params": params,
        "fitted": {
            "rule": estimator.rule_name_,
            "covariates": list(estimator.covariates_),
            "subjects": list(estimator.subjects_),
            "n_iter": estimator.n_iter_,
            "best_epoch": estimator.best_epoch_,
            "history": estimator.history_.to_dict(orient="list"),
            "correction_prior": estimator.correction_prior_,
            "prior_scores": (None if estimator.prior_scores_ is None
                             else [[float(k), float(v)]
                                   for k, v in estimator.prior_scores_.items()]),
        },
    }


def estimator_from_config(config: dict, state_dict: Mapping, device: str = "cpu",
                          allow_version_mismatch: bool = False,
                          source: str = "the model") -> LearningRuleGLM:
    """Rebuild a fitted estimator from :func:`estimator_config` and the rule's state dict."""
    from .. import __version__

    saved = config.get("package_version")
    if saved != __version__ and not allow_version_mismatch:
        raise ValueError(f"{source} was saved by ibl_learnrules {saved}, this is "
                         f"{__version__}; refit, or pass allow_version_mismatch=True to "
                         "load it anyway")
    try:
        params = dict(config["params"], device=device)
        params["covariates"] = tuple(params["covariates"])
        if isinstance(params.get("correction_prior"), list):  # candidates: JSON wrote a list
            params["correction_prior"] = tuple(params["correction_prior"])
        est = LearningRuleGLM(**params)
        fitted = config["fitted"]
        est.covariates_ = tuple(fitted["covariates"])
        est.rule_name_ = fitted["rule"]
        est.subjects_ = tuple(fitted["subjects"])
        est.n_iter_ = fitted["n_iter"]
        est.best_epoch_ = fitted["best_epoch"]
        est.history_ = pd.DataFrame(fitted["history"])
        # files saved before the prior could be chosen per fit lack both
        est.correction_prior_ = fitted.get("correction_prior")
        scores = fitted.get("prior_scores")
        est.prior_scores_ = None if scores is None else as_scores(scores)
        rule = est._build_rule(len(est.covariates_))
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{source} is not a model saved by save_model: its configuration "
                         f"is incomplete or inconsistent ({type(err).__name__}: {err})") from None
    try:
        rule.load_state_dict(state_dict)
    except RuntimeError as err:  # torch lists missing/unexpected keys and shapes, over lines
        detail = " ".join(str(err).split())
        raise ValueError(f"{source}: its parameters do not fit rule {est.rule!r} "
                         f"({detail})") from None
    est.device_ = resolve_device(device)
    est.rule_ = rule.to(est.device_).eval()
    est.classes_ = np.array([0, 1])
    return est


def save_model(estimator: LearningRuleGLM, path: str | Path) -> Path:
    """Save a fitted estimator to one file: JSON configuration + torch state dict.

    The file loads with ``torch.load(weights_only=True)``: no pickled code is executed. It is
    written to a temporary file first, so an existing file is replaced only when complete.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> from ibl_learnrules import LearningRuleGLM, simulate_cohort
    >>> trials = simulate_cohort(2, n_trials=200, random_state=0)
    >>> est = LearningRuleGLM(rule="reinforce", max_epochs=1).fit(trials)
    >>> path = save_model(est, pathlib.Path(tempfile.mkdtemp()) / "reinforce.pt")
    >>> same = load_model(path)
    >>> bool((same.predict_proba(trials) == est.predict_proba(trials)).all())
    True
    """
    config = estimator_config(estimator)
    state = {k: v.detach().cpu() for k, v in estimator.rule_.state_dict().items()}
    blob = {"config": json.dumps(config), "state_dict": state}
    return atomic_write(path, lambda tmp: torch.save(blob, tmp))


def load_model(path: str | Path, device: str = "cpu",
               allow_version_mismatch: bool = False) -> LearningRuleGLM:
    """Load an estimator written by :func:`save_model`.

    Parameters
    ----------
    path : str or Path
        File written by :func:`save_model`.
    device : str
        Where the loaded rule lives (``"cpu"``, ``"cuda"``, ``"auto"``).
    allow_version_mismatch : bool
        Load a file saved by another version of the package (else ValueError).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such model file: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty: not a model saved by save_model")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        config = json.loads(blob["config"])
        state_dict = blob["state_dict"]
        if not isinstance(config, dict):
            raise TypeError(f"configuration is a {type(config).__name__}, not a mapping")
    # torch.load of a file that is not a torch zip archive (truncated, text, another pickle)
    # fails with whatever its unpickler trips on: EOFError, IndexError, UnpicklingError, ...
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        detail = " ".join(f"{type(err).__name__}: {err}".split())
        detail = detail if len(detail) <= 160 else detail[:157] + "..."  # torch's run long
        raise ValueError(f"{path} is not a model saved by save_model (truncated, or another "
                         f"format): {detail}") from None
    if config.get("format") != SAVE_FORMAT:
        raise ValueError(f"{path} has format {config.get('format')!r}, expected "
                         f"{SAVE_FORMAT!r}")
    return estimator_from_config(config, state_dict, device, allow_version_mismatch, str(path))

"""Fitted estimators to and from files: JSON configuration + tensors, no pickled code."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..engine import resolve_device
from ..ensemble import SeedEnsemble
from ..estimator import LearningRuleGLM
from ..prior_selection import as_scores
from .files import atomic_write

__all__ = ["save_model", "load_model", "estimator_config", "estimator_from_config",
           "SAVE_FORMAT", "ENSEMBLE_FORMAT"]

#: Written into every model file of one estimator; files of another format are refused.
SAVE_FORMAT = "ibl_learnrules.LearningRuleGLM/1"
#: Written into the model file of a :class:`~ibl_learnrules.SeedEnsemble`.
ENSEMBLE_FORMAT = "ibl_learnrules.SeedEnsemble/1"


def _json_params(estimator: LearningRuleGLM) -> dict:
    """Return an estimator's ``get_params()`` as JSON values (tuples, arrays as lists)."""
    params = estimator.get_params()
    params["covariates"] = list(params["covariates"])
    noise = params.get("weight_noise")
    if noise is not None and not isinstance(noise, str):  # fixed sds: JSON numbers
        params["weight_noise"] = np.asarray(noise, dtype=float).tolist()
    return params


def _estimator_from_json(params: dict, device: str) -> LearningRuleGLM:
    """Undo :func:`_json_params`: the (unfitted) estimator, on ``device``."""
    params = dict(params, device=device)
    params["covariates"] = tuple(params["covariates"])
    if isinstance(params.get("free_weights"), list):
        params["free_weights"] = tuple(params["free_weights"])
    if isinstance(params.get("correction_prior"), list):  # candidates: JSON wrote a list
        params["correction_prior"] = tuple(params["correction_prior"])
    return LearningRuleGLM(**params)


def estimator_config(estimator: LearningRuleGLM) -> dict:
    """JSON-able description of a fitted estimator (everything but the rule's tensors)."""
    from .. import __version__

    estimator._check_fitted()
    return {
        "format": SAVE_FORMAT,
        "package_version": __version__,
        "params": _json_params(estimator),
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


def _has_default_gate(version: str | None) -> bool:
    """Whether a file saved by this package version was fitted with the rules' default gate.

    The networks' default gate (``LearningRule.default_gate``) came with version 0.2; a model
    saved before it (loaded with ``allow_version_mismatch=True``) is rebuilt without it.
    """
    release = []
    for part in str(version).split("+")[0].split("."):
        if not part.isdigit():
            break
        release.append(int(part))
    return not release or tuple(release) >= (0, 2)  # "0+unknown": a source checkout


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
        est = _estimator_from_json(config["params"], device)
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
        rule = est._build_rule(est.covariates_, _has_default_gate(saved))
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


def _state_dict(estimator: LearningRuleGLM) -> dict:
    return {k: v.detach().cpu() for k, v in estimator.rule_.state_dict().items()}


def save_model(estimator: LearningRuleGLM | SeedEnsemble, path: str | Path) -> Path:
    """Save a fitted estimator to one file: JSON configuration + torch state dict.

    The file loads with ``torch.load(weights_only=True)``: no pickled code is executed. It is
    written to a temporary file first, so an existing file is replaced only when complete.
    A fitted :class:`~ibl_learnrules.SeedEnsemble` is saved whole (its template and every
    member), and :func:`load_model` returns it as one.

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
    if isinstance(estimator, SeedEnsemble):
        blob = _ensemble_blob(estimator)
    elif isinstance(estimator, LearningRuleGLM):
        blob = {"config": json.dumps(estimator_config(estimator)),
                "state_dict": _state_dict(estimator)}
    else:
        raise TypeError("save_model saves a LearningRuleGLM or a SeedEnsemble, got "
                        f"{type(estimator).__name__}")
    return atomic_write(path, lambda tmp: torch.save(blob, tmp))


def _ensemble_blob(ensemble: SeedEnsemble) -> dict:
    """Return what :func:`save_model` writes for an ensemble: each member as one estimator."""
    from .. import __version__

    members = ensemble._members()
    template = ensemble.estimator
    config = {
        "format": ENSEMBLE_FORMAT,
        "package_version": __version__,
        "n_members": int(ensemble.n_members),
        "random_state": None if ensemble.random_state is None else int(ensemble.random_state),
        "estimator": None if template is None else _json_params(template),
        "members": [estimator_config(m) for m in members],
    }
    return {"config": json.dumps(config), "state_dicts": [_state_dict(m) for m in members]}


def _ensemble_from_blob(config: dict, blob: dict, device: str, allow_version_mismatch: bool,
                        source: str) -> SeedEnsemble:
    try:
        members, states = config["members"], blob["state_dicts"]
        if not isinstance(members, list) or len(members) != len(states) or not members:
            raise ValueError(f"{len(members)} member configurations, {len(states)} "
                             "parameter sets")
        template = config["estimator"]
        ensemble = SeedEnsemble(
            None if template is None else _estimator_from_json(template, device),
            n_members=config["n_members"], random_state=config["random_state"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{source} is not an ensemble saved by save_model: its configuration "
                         f"is incomplete or inconsistent ({type(err).__name__}: {err})") from None
    ensemble.estimators_ = [
        estimator_from_config(member, state, device, allow_version_mismatch,
                              f"{source} (member {i})")
        for i, (member, state) in enumerate(zip(members, states, strict=True))]
    return ensemble


def load_model(path: str | Path, device: str = "cpu",
               allow_version_mismatch: bool = False) -> LearningRuleGLM | SeedEnsemble:
    """Load an estimator (or a seed ensemble) written by :func:`save_model`.

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
        if not isinstance(config, dict):
            raise TypeError(f"configuration is a {type(config).__name__}, not a mapping")
    # torch.load of a file that is not a torch zip archive (truncated, text, another pickle)
    # fails with whatever its unpickler trips on: EOFError, IndexError, UnpicklingError, ...
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        detail = " ".join(f"{type(err).__name__}: {err}".split())
        detail = detail if len(detail) <= 160 else detail[:157] + "..."  # torch's run long
        raise ValueError(f"{path} is not a model saved by save_model (truncated, or another "
                         f"format): {detail}") from None
    if config.get("format") == ENSEMBLE_FORMAT:
        return _ensemble_from_blob(config, blob, device, allow_version_mismatch, str(path))
    if config.get("format") != SAVE_FORMAT:
        raise ValueError(f"{path} has format {config.get('format')!r}, expected "
                         f"{SAVE_FORMAT!r} or {ENSEMBLE_FORMAT!r}")
    if "state_dict" not in blob:
        raise ValueError(f"{path} is not a model saved by save_model: it holds no parameters")
    return estimator_from_config(config, blob["state_dict"], device, allow_version_mismatch,
                                 str(path))

"""IBL training stages (trained_1a, trained_1b) from a trials table, with brainbox's criteria.

IBL calls a mouse trained when its last three consecutive training sessions pass
``brainbox.behavior.training``'s criteria (psychometric bias, threshold and lapses, trials
per session, performance on easy contrasts; 1b also needs median zero-contrast reaction
times under 2 s, so it cannot be reached without ``response_times`` / ``stimOn_times``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from .trials import validate_trials

__all__ = ["STAGES", "training_status", "cut_at_stage"]

#: Stages that can end a learning sequence, in order.
STAGES = ("trained_1a", "trained_1b")
_RANK = {"in training": 0, "trained 1a": 1, "trained 1b": 2}
_TIMING = ("response_times", "stimOn_times")


def _as_alf(session: pd.DataFrame):
    from iblutil.util import Bunch

    alf = Bunch()
    for key in ("contrastLeft", "contrastRight", "feedbackType", "probabilityLeft", "choice"):
        alf[key] = session[key].to_numpy(dtype=float)
    for key in _TIMING:
        alf[key] = (session[key].to_numpy(dtype=float) if key in session
                    else np.full(len(session), np.nan))
    return alf


def training_status(trials: pd.DataFrame) -> pd.DataFrame:
    """Judge each session's training status with brainbox, on it and the two before it.

    Parameters
    ----------
    trials : pandas.DataFrame
        Trials table of one or more animals (trainingChoiceWorld sessions).

    Returns
    -------
    pandas.DataFrame
        One row per session in order: ``subject``, ``session``, ``status`` (``"in training"``,
        ``"trained 1a"``, ``"trained 1b"``; the first two sessions of an animal are
        ``"in training"``: three are needed).

    Examples
    --------
    >>> from ibl_learnrules import load_ks014
    >>> status = training_status(load_ks014())
    >>> status["status"].iloc[-1]
    'trained 1a'
    """
    return _status(validate_trials(trials))


def _may_pass(alf) -> bool:
    """Whether a session meets the per-session criteria every trained stage asks for.

    Both ``trained_1a`` and ``trained_1b`` need each of the three sessions above 80 % correct
    on easy contrasts and above 200 trials (1b: 90 %, 400), measured by brainbox's own
    functions. A window with a session that fails them is "in training" whatever its
    psychometric fit, so that fit (most of the time of a judgement) is skipped.
    """
    from brainbox.behavior.training import compute_n_trials, compute_performance_easy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no easy trials: NaN, which fails
        return bool(compute_performance_easy(alf) > 0.8 and compute_n_trials(alf) > 200)


def _status(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`training_status` of an already validated table."""
    from brainbox.behavior.training import get_training_status

    rows = []
    for subject, animal in table.groupby("subject", sort=False):
        sessions = [(sid, _as_alf(s)) for sid, s in animal.groupby("session", sort=False)]
        may_pass = [_may_pass(alf) for _, alf in sessions]
        for i, (sid, _) in enumerate(sessions):
            status = "in training"
            if i >= 2 and all(may_pass[i - 2:i + 1]):
                window = {str(k): alf for k, (_, alf) in enumerate(sessions[i - 2:i + 1])}
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # NaN reaction times
                    status = get_training_status(window, ["training"] * 3, [], 0)[0]
            rows.append({"subject": subject, "session": sid, "status": status})
    return pd.DataFrame(rows)


def cut_at_stage(trials: pd.DataFrame, stage: str) -> pd.DataFrame:
    """Keep each animal's sessions up to the one at which it first reached ``stage``.

    Animals that never reach it keep all their sessions, with a warning.

    Parameters
    ----------
    trials : pandas.DataFrame
        Trials table.
    stage : {"trained_1a", "trained_1b"}
        Training stage that ends the sequence (reaching a later stage counts).

    Returns
    -------
    pandas.DataFrame
        The validated table, cut.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown training stage {stage!r}; choose from {list(STAGES)}")
    needed = STAGES.index(stage) + 1
    table = validate_trials(trials)
    status = _status(table)
    status["reached"] = status["status"].map(_RANK) >= needed
    keep = set()
    for subject, rows in status.groupby("subject", sort=False):
        reached = np.flatnonzero(rows["reached"].to_numpy())
        if len(reached) == 0:
            warnings.warn(f"{subject} never reached {stage}: all its sessions are kept",
                          stacklevel=2)
            sessions = rows["session"]
        else:
            sessions = rows["session"].iloc[:reached[0] + 1]
        keep.update((subject, s) for s in sessions)
    mask = [key in keep for key in zip(table["subject"], table["session"], strict=True)]
    return table[np.asarray(mask, dtype=bool)]

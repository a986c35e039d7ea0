"""Real behavioural data shipped with the package."""

from __future__ import annotations

from importlib import resources

import pandas as pd

from .trials import validate_trials

__all__ = ["load_ks014", "KS014_ATTRIBUTION", "load_ibl_mice", "IBL_MICE_ATTRIBUTION",
           "tutorial_size", "TUTORIAL_SCALE_VARIABLE"]

KS014_ATTRIBUTION = (
    "International Brain Laboratory public behavioural data (CC BY 4.0); trial tables as "
    "published in SebastianBruijns/diHMM (MIT licence, copyright notice in "
    "ibl_learnrules/data/LICENSE-diHMM.txt)."
)


def load_ks014() -> pd.DataFrame:
    """Load IBL mouse KS014's de novo training: 15 sessions, 10,310 trials.

    Real behaviour from the IBL public data release (trainingChoiceWorld sessions 0-14,
    from 2019-08-06), as redistributed in the diHMM repository. No-go trials were removed
    upstream; ``probabilityLeft`` values other than 0.5 mark debiasing trials of the legacy
    protocol. Attribution: :data:`KS014_ATTRIBUTION`.

    Returns
    -------
    pandas.DataFrame
        A validated trials table with ``subject="KS014"``, ``session`` (the IBL eid),
        ``session_idx``, ``date``, ``trial`` and the ALF columns.

    Examples
    --------
    >>> trials = load_ks014()
    >>> len(trials), trials["session"].nunique()
    (10310, 15)
    """
    source = resources.files("ibl_learnrules") / "data" / "KS014_training_trials.csv"
    with resources.as_file(source) as path:
        raw = pd.read_csv(path)
    raw.insert(0, "subject", "KS014")
    raw = raw.rename(columns={"eid": "session"})
    raw.insert(2, "trial", raw.groupby("session_idx").cumcount())
    raw["date"] = pd.to_datetime(raw["date"])
    return validate_trials(raw).reset_index(drop=True)


IBL_MICE_ATTRIBUTION = (
    "International Brain Laboratory public behavioural data (CC BY 4.0; IBL, 'Standardized "
    "and reproducible measurement of decision-making in mice', eLife 2021, doi "
    "10.7554/eLife.63711), rebuilt from the per-mouse exports in int-brain-lab/ann-rnns "
    "(data/ibl-data-may2020); provenance in ibl_learnrules/data/IBL_MICE_README.md."
)
_IBL_MICE_PROTOCOLS = ("training", "biased")


def load_ibl_mice(protocol: str | None = None, max_sessions: int | None = None) -> pd.DataFrame:
    """Load 27 real IBL mice: the end of basic training, then biased-block sessions.

    755,188 trials: the last three training sessions of each mouse (62,457 trials) and up to
    83 biased sessions (692,731). These mice have already learned the basic task: rules
    fitted here describe the trial-by-trial adaptation of trained mice (history effects, the
    bias tracking the block prior). Attribution: :data:`IBL_MICE_ATTRIBUTION`.

    Parameters
    ----------
    protocol : {"training", "biased"}, optional
        Keep only that protocol's sessions (default: both, training first).
    max_sessions : int, optional
        Keep each mouse's first ``max_sessions`` sessions (of that protocol).

    Returns
    -------
    pandas.DataFrame
        A validated trials table with ``subject``, ``session``, ``session_index``,
        ``protocol``, ``session_number``, ``trial`` and the ALF columns.

    Examples
    --------
    >>> trials = load_ibl_mice("training")
    >>> len(trials), trials["subject"].nunique()
    (62457, 27)
    """
    if protocol is not None and protocol not in _IBL_MICE_PROTOCOLS:
        raise ValueError(f"protocol must be one of {list(_IBL_MICE_PROTOCOLS)} or None, "
                         f"got {protocol!r}")
    source = resources.files("ibl_learnrules") / "data" / "ibl_mice_27.parquet"
    with resources.as_file(source) as path:
        raw = pd.read_parquet(path)
    if protocol is not None:
        raw = raw[raw["protocol"] == protocol]
    if max_sessions is not None:
        rank = raw.groupby("subject")["session_index"].rank(method="dense")
        raw = raw[(rank <= max_sessions).to_numpy()]
    for column in ("choice", "feedbackType"):
        raw[column] = raw[column].astype("int64")
    return validate_trials(raw).reset_index(drop=True)


#: Environment variable that shrinks the tutorials' work (the test suite sets it).
TUTORIAL_SCALE_VARIABLE = "IBL_LEARNRULES_TUTORIAL_SCALE"


def tutorial_size(n: int) -> int:
    """Scale a tutorial's amount of work (epochs, animals, trials) by the environment.

    The tutorials run in full by hand and, with ``IBL_LEARNRULES_TUTORIAL_SCALE`` set to a
    number in (0, 1], smaller in the test suite.

    Examples
    --------
    >>> 1 <= tutorial_size(60) <= 60
    True
    """
    import os

    text = os.environ.get(TUTORIAL_SCALE_VARIABLE, "1")
    try:
        scale = float(text)
    except ValueError:
        raise ValueError(f"{TUTORIAL_SCALE_VARIABLE} must be a number in (0, 1], got "
                         f"{text!r}") from None
    if not 0 < scale <= 1:
        raise ValueError(f"{TUTORIAL_SCALE_VARIABLE} must be a number in (0, 1], got {text!r}")
    return max(1, round(n * scale))

"""Load mice's behaviour through ONE, as trials tables in the contract.

The same calls read a local ONE cache (``ONE(cache_dir=..., mode="local")``) and the IBL
public database::

    from one.api import ONE
    one = ONE(base_url="https://openalyx.internationalbrainlab.org",
              password="international", silent=True)
    trials = load_subject_trials(one, "KS014", protocols=["training"], max_sessions=15)

Nothing is written to the ONE cache by this module (ONE itself downloads missing files
into it when it talks to a database).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from ..stages import cut_at_stage
from ..trials import REQUIRED_COLUMNS, validate_trials

__all__ = ["load_subject_trials", "load_cohort", "write_one_cache"]

_ALF_COLUMNS = [c for c in REQUIRED_COLUMNS if c not in ("subject", "session", "trial")]
_TIMING_COLUMNS = ["stimOn_times", "goCue_times", "response_times", "feedback_times"]


class _NothingReadable(ValueError):
    """Every session of a subject was skipped: a cohort goes on without it."""


def _sessions(one, subject: str) -> pd.DataFrame:
    eids, details = one.search(subject=subject, details=True)
    rows = []
    for eid, info in zip(eids or [], details or [], strict=True):
        # one.search matches subject names partially ("KS014" also finds "KS0140")
        if info.get("subject") != subject:
            continue
        rows.append({"eid": str(eid), "date": pd.Timestamp(info.get("date")),
                     "number": int(info.get("number") or 0),
                     "task_protocol": info.get("task_protocol") or ""})
    table = pd.DataFrame(rows, columns=["eid", "date", "number", "task_protocol"])
    return table.sort_values(["date", "number"], kind="stable").reset_index(drop=True)


def _load_trials(one, eid: str) -> pd.DataFrame:
    trials = one.load_object(eid, "trials", collection="alf")
    missing = [c for c in _ALF_COLUMNS if c not in trials]
    if missing:
        raise KeyError(f"trials object lacks {missing}")
    n = len(trials["choice"])
    # timing columns, when the session has them, let brainbox judge training stage 1b
    columns = _ALF_COLUMNS + [c for c in _TIMING_COLUMNS if c in trials]
    return pd.DataFrame({c: np.asarray(trials[c], dtype=float).reshape(n) for c in columns})


def load_subject_trials(
    one,
    subject: str,
    protocols: Sequence[str] | None = None,
    until: str | None = None,
    max_sessions: int | None = None,
    max_trials: int | None = None,
) -> pd.DataFrame:
    """Load one mouse's sessions through ONE as a trials table, in date order.

    Parameters
    ----------
    one : one.api.One
        A ONE instance: a local cache or a database connection.
    subject : str
        Exact subject name (partial matches of ``one.search`` are dropped).
    protocols : sequence of str, optional
        Keep sessions whose ``task_protocol`` contains one of these strings (e.g.
        ``["training"]``). Sessions whose protocol the cache does not record are kept, with
        one warning.
    until : {"trained_1a", "trained_1b"}, optional
        End the sequence at the session where the mouse reached this training stage, judged
        by brainbox's criteria on the loaded trials (:func:`ibl_learnrules.stages.cut_at_stage`).
    max_sessions : int, optional
        Keep the first sessions only.
    max_trials : int, optional
        Cut the sequence after this many trials.

    Returns
    -------
    pandas.DataFrame
        Validated trials table: ``subject``, ``session`` (eid), ``date``, ``session_number``,
        ``task_protocol``, ``trial`` and the ALF columns. ALF conventions are kept as they are
        (choice -1 = right); no-go trials are kept.

    Raises
    ------
    ValueError
        If no session of ``subject`` has a readable trials object.

    Examples
    --------
    >>> import tempfile
    >>> from one.api import ONE
    >>> from ibl_learnrules import simulate_cohort
    >>> cohort = simulate_cohort(2, n_sessions=3, random_state=0)
    >>> one = ONE(cache_dir=write_one_cache(cohort, tempfile.mkdtemp()), mode="local")
    >>> trials = load_subject_trials(one, "sim001", max_sessions=2)
    >>> trials["session"].nunique(), len(load_cohort(one, ["sim000", "sim001"])) == len(cohort)
    (2, True)
    """
    sessions = _sessions(one, subject)
    if sessions.empty:
        raise ValueError(f"ONE found no session of subject {subject!r}")
    if protocols is not None:
        unknown = sessions["task_protocol"] == ""
        if unknown.any():
            warnings.warn(f"{int(unknown.sum())} session(s) of {subject} have no task_protocol in "
                          "this ONE cache: kept whatever their protocol", stacklevel=2)
        wanted = sessions["task_protocol"].apply(lambda p: any(s in p for s in protocols))
        sessions = sessions[wanted | unknown]
    tables, skipped = [], []
    for row in sessions.itertuples():
        if max_sessions is not None and len(tables) >= max_sessions:
            break
        try:
            table = _load_trials(one, row.eid)
        except Exception as err:  # noqa: BLE001 - any unreadable session is skipped, not fatal
            detail = " ".join(f"{type(err).__name__}: {err}".split())
            skipped.append(f"{row.eid} of {row.date.date()} #{row.number} ({detail})")
            continue
        table.insert(0, "subject", subject)
        table.insert(1, "session", row.eid)
        table.insert(2, "date", row.date)
        table.insert(3, "session_number", row.number)
        table.insert(4, "task_protocol", row.task_protocol)
        table.insert(5, "trial", np.arange(len(table)))
        tables.append(table)
    if skipped:
        warnings.warn(f"skipped {len(skipped)} session(s) of {subject} without a readable trials "
                      f"object: {'; '.join(skipped)}", stacklevel=2)
    if not tables:
        raise _NothingReadable(f"no session of {subject!r} has a readable trials object")
    trials = pd.concat(tables, ignore_index=True)
    if until is not None:
        trials = cut_at_stage(trials, until)
    if max_trials is not None:
        trials = trials.iloc[:max_trials]
    # validation orders sessions by date, and sessions of one date as they come here: by number
    return validate_trials(trials).reset_index(drop=True)


def load_cohort(one, subjects: Iterable[str], **kwargs) -> pd.DataFrame:
    """Load several mice with :func:`load_subject_trials` into one trials table.

    A mouse none of whose sessions is readable is left out with a warning naming it; a
    ValueError if that leaves no mouse, or if ONE knows no session of a name (a typo should
    not shrink a cohort quietly). See :func:`load_subject_trials` for the keyword arguments
    and an example.
    """
    tables, unreadable = [], []
    subjects = list(subjects)
    for subject in subjects:
        try:
            tables.append(load_subject_trials(one, subject, **kwargs))
        except _NothingReadable:
            unreadable.append(subject)
    if unreadable:
        warnings.warn(f"left out {len(unreadable)} subject(s) without a readable session: "
                      f"{', '.join(unreadable)}", stacklevel=2)
    if not tables:
        raise ValueError(f"no session of {', '.join(map(repr, subjects)) or 'no subject'} has "
                         "a readable trials object")
    return pd.concat(tables, ignore_index=True)


def write_one_cache(trials: pd.DataFrame, root, lab: str = "simlab"):
    """Write a trials table as ALF sessions and index them as a local ONE cache.

    Each session becomes ``root/lab/Subjects/<subject>/<date>/<number>/alf/
    _ibl_trials.table.pqt``; ONE's own cache builder then writes the cache tables, so that
    ``ONE(cache_dir=root, mode="local")`` and :func:`load_subject_trials` read it back.
    Sessions need a ``date`` column (one session per date, or a ``session_number``).

    Returns
    -------
    pathlib.Path
        ``root``.
    """
    import tempfile
    from pathlib import Path

    from one.alf.cache import make_parquet_db

    from .files import atomic_write, copy_file

    table = validate_trials(trials)
    if "date" not in table:
        raise ValueError("write_one_cache needs a 'date' column to place the sessions")
    root = Path(root)
    for (subject, _), session in table.groupby(["subject", "session"], sort=False):
        date = pd.Timestamp(session["date"].iloc[0]).date()
        number = int(session["session_number"].iloc[0]) if "session_number" in session else 1
        folder = root / lab / "Subjects" / subject / str(date) / f"{number:03d}" / "alf"
        if folder.exists():
            raise ValueError(f"two sessions of {subject} would share {folder}")
        folder.mkdir(parents=True)
        rows = session[_ALF_COLUMNS].reset_index(drop=True)
        atomic_write(folder / "_ibl_trials.table.pqt", lambda tmp, t=rows: t.to_parquet(tmp))
    # ONE's builder writes its cache tables into a scratch folder, copied over atomically
    # (they may replace the tables of an existing cache)
    with tempfile.TemporaryDirectory() as tmp:
        make_parquet_db(root, out_dir=tmp, hash_ids=True, hash_files=True)
        for table in sorted(Path(tmp).iterdir()):
            copy_file(table, root / table.name)
    return root

"""NWB in and out: trials tables from IBL NWB files, learning results through ndx-learning-rules.

IBL sessions on DANDI come in two column vocabularies (see ``DESIGN.md``):

* ``"legacy"``: ``choice`` (ALF sign: -1 right, +1 left, 0 no-go), ``feedback_type`` (+1/-1),
  ``contrast_left`` / ``contrast_right`` (NaN on the side without a stimulus) and
  ``probability_left``;
* ``"tidy"``: ``gabor_stimulus_contrast`` (percent) with ``gabor_stimulus_side``
  (``"left"``/``"right"``), ``mouse_wheel_choice`` (``"clockwise"`` is a leftward choice, ALF
  +1; ``"counter_clockwise"`` rightward, ALF -1; ``"none"`` no-go), ``is_mouse_rewarded`` and
  ``probability_left``.

Both read into the same trials table (:mod:`ibl_learnrules.trials`). An NWB file holds one
session; a learning trajectory spans many, so :func:`write_results` writes each session file
its own slice of the animal's trajectory, with the session id and trial rows alongside.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pynwb import NWBHDF5IO, NWBFile
from pynwb.file import Subject

from ..estimator import LearningRuleGLM
from ..nwb import LearningRuleModel, LearningTrajectory, ModelComparisonTable, RuleParameters
from ..trials import validate_trials
from .files import atomic_write as _atomic_write
from .model_file import estimator_config, estimator_from_config

__all__ = ["read_trials", "trials_to_nwb", "write_results", "read_trajectory", "read_model",
           "read_comparison", "VOCABULARIES"]

#: NWB column -> trials-table column, per vocabulary (contrast, choice, reward need decoding).
VOCABULARIES: dict[str, dict[str, str]] = {
    "legacy": {"choice": "choice", "feedback_type": "feedbackType",
               "contrast_left": "contrastLeft", "contrast_right": "contrastRight",
               "probability_left": "probabilityLeft"},
    "tidy": {"mouse_wheel_choice": "choice", "is_mouse_rewarded": "feedbackType",
             "gabor_stimulus_contrast": "contrastLeft/contrastRight",
             "gabor_stimulus_side": "contrastLeft/contrastRight",
             "probability_left": "probabilityLeft"},
}

#: Timing columns: NWB name in each vocabulary -> ALF name.
_TIMES = {
    "legacy": {"stim_on_time": "stimOn_times", "go_cue_time": "goCue_times",
               "response_time": "response_times", "feedback_time": "feedback_times",
               "first_movement_time": "firstMovement_times"},
    "tidy": {"gabor_stimulus_onset_time": "stimOn_times", "auditory_cue_time": "goCue_times",
             "choice_registration_time": "response_times", "feedback_time": "feedback_times",
             "wheel_movement_onset_time": "firstMovement_times"},
}
_WHEEL = {"clockwise": 1, "counter_clockwise": -1}
_NO_GO = {"none", "no_go", "nogo", "no_response", ""}
_BEHAVIOR = "behavior"
_CONTRACT = ("contrastLeft", "contrastRight", "choice", "feedbackType", "probabilityLeft")


# ----------------------------------------------------------------------------- reading
def _vocabulary(columns: Iterable[str], source: str = "the trials table") -> str:
    columns = set(columns)
    for name, mapping in VOCABULARIES.items():
        if set(mapping) <= columns:
            return name
    # a table with a column only one vocabulary has is that vocabulary, short of some columns
    shared = set.intersection(*(set(m) for m in VOCABULARIES.values()))
    for name, mapping in VOCABULARIES.items():
        if (set(mapping) - shared) & columns:
            missing = sorted(set(mapping) - columns)
            raise ValueError(f"{source}: the trials table is in the {name!r} vocabulary but is "
                             f"missing column(s) {missing}; found columns {sorted(columns)}")
    wanted = "; ".join(f"{name}: {sorted(m)}" for name, m in VOCABULARIES.items())
    raise ValueError(f"{source}: the trials table has neither IBL vocabulary. Found columns "
                     f"{sorted(columns)}; expected all of one of: {wanted}")


@contextmanager
def _open_nwb(path: str | Path, mode: str = "r", source: str | None = None, **kwargs):
    """Open an NWB file and read it; yield ``(io, nwbfile)``.

    A file that is empty, truncated, not HDF5 or HDF5 but not NWB is a ValueError naming it
    (``source``, default ``path``), instead of h5py's or hdmf's error from deep inside.
    """
    source = source or str(path)
    if Path(path).stat().st_size == 0:
        raise ValueError(f"{source} is empty: not an NWB file")
    io = None
    try:
        io = NWBHDF5IO(str(path), mode, **kwargs)
        nwbfile = io.read()
    except (OSError, TypeError, ValueError, KeyError) as err:
        if io is not None:
            io.close()
        raise ValueError(f"{source} is not a readable NWB (HDF5) file (truncated, or another "
                         f"format): {type(err).__name__}: {err}") from None
    try:
        yield io, nwbfile
    finally:
        io.close()


def _text(values) -> np.ndarray:
    return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in values])


def _decode(df: pd.DataFrame, vocabulary: str) -> pd.DataFrame:
    """Map an NWB trials DataFrame in ``vocabulary`` to contract columns and ALF timing."""
    out = pd.DataFrame(index=df.index)
    if vocabulary == "legacy":
        for nwb_name, name in VOCABULARIES["legacy"].items():
            out[name] = df[nwb_name].to_numpy()
    else:
        side = _text(df["gabor_stimulus_side"])
        bad = sorted(set(side) - {"left", "right"})
        if bad:
            raise ValueError(f"gabor_stimulus_side has values {bad}; expected 'left'/'right'")
        contrast = df["gabor_stimulus_contrast"].to_numpy(dtype=float)
        if np.nanmax(contrast, initial=0.0) > 1.0:  # this vocabulary stores percent
            contrast = contrast / 100.0
        out["contrastLeft"] = np.where(side == "left", contrast, np.nan)
        out["contrastRight"] = np.where(side == "right", contrast, np.nan)
        wheel = np.char.lower(_text(df["mouse_wheel_choice"]))
        unknown = sorted(set(wheel) - set(_WHEEL) - _NO_GO)
        if unknown:
            raise ValueError(
                f"mouse_wheel_choice has values {unknown}; expected 'clockwise' (a leftward "
                f"choice), 'counter_clockwise' (rightward) or one of {sorted(_NO_GO - {''})} "
                "(no-go). Values such as 'left'/'right' are ambiguous (the reported side or "
                "the wheel?): convert them to the ALF choice column yourself")
        out["choice"] = np.array([_WHEEL.get(w, 0) for w in wheel], dtype=int)
        out["feedbackType"] = np.where(df["is_mouse_rewarded"].to_numpy(dtype=bool), 1, -1)
        out["probabilityLeft"] = df["probability_left"].to_numpy(dtype=float)
    out = out[list(_CONTRACT)].astype({"choice": int, "feedbackType": int})
    for nwb_name, alf in (("start_time", "intervals_0"), ("stop_time", "intervals_1"),
                          *_TIMES[vocabulary].items()):
        for candidate in (nwb_name, nwb_name + "s"):
            if candidate in df:
                out[alf] = df[candidate].to_numpy(dtype=float)
                break
    return out


def _read_one(nwbfile, subject: str | None, source: str) -> pd.DataFrame:
    trials = nwbfile.trials
    if trials is None:
        found = sorted(nwbfile.intervals) if nwbfile.intervals else []
        raise ValueError(f"{source} has no trials table (intervals found: {found or 'none'})")
    df = trials.to_dataframe()
    table = _decode(df, _vocabulary(df.columns, source))
    file_subject = getattr(nwbfile.subject, "subject_id", None)
    if file_subject is None and subject is None:
        raise ValueError(f"{source} names no subject (nwbfile.subject.subject_id); pass "
                         "subject=...")
    if file_subject is not None and subject is not None and file_subject != subject:
        raise ValueError(f"{source} is a session of {file_subject!r}, not {subject!r}")
    table.insert(0, "subject", file_subject or subject)
    table.insert(1, "session", nwbfile.identifier)
    table.insert(2, "session_start_time", pd.Timestamp(nwbfile.session_start_time))
    table.insert(3, "trial", np.arange(len(table)))
    return table.reset_index(drop=True)


def read_trials(source, subject: str | None = None) -> pd.DataFrame:
    """Read the trials of one or many IBL NWB session files into a trials table.

    Parameters
    ----------
    source : str, Path, pynwb.NWBFile, or an iterable of these
        Session files (or open files). Sessions are ordered by ``session_start_time``.
    subject : str, optional
        Subject id for files whose ``nwbfile.subject`` names none; a file naming another
        animal is an error.

    Returns
    -------
    pandas.DataFrame
        The trials table: ``subject``, ``session`` (the file's identifier),
        ``session_start_time``, ``trial`` (row of the file's trials table), ``contrastLeft``,
        ``contrastRight``, ``choice`` (ALF sign), ``feedbackType``, ``probabilityLeft``, and
        ``intervals_0`` / ``intervals_1`` / ALF timing columns when present.

    Examples
    --------
    >>> import tempfile
    >>> from ibl_learnrules import simulate_cohort
    >>> paths = trials_to_nwb(simulate_cohort(1, n_sessions=2, random_state=0),
    ...                       tempfile.mkdtemp())
    >>> table = read_trials(paths)
    >>> len(paths), table["session"].nunique(), bool(table["choice"].isin([-1, 0, 1]).all())
    (2, 2, True)
    """
    if isinstance(source, (str, os.PathLike, NWBFile)):
        source = [source]
    tables = []
    for item in source:
        if isinstance(item, NWBFile):
            tables.append(_read_one(item, subject, f"NWB file {item.identifier!r}"))
            continue
        path = Path(item)
        if not path.is_file():
            raise FileNotFoundError(f"no such NWB file: {path}")
        with _open_nwb(path) as (_, nwbfile):
            tables.append(_read_one(nwbfile, subject, str(path)))
    if not tables:
        raise ValueError("no NWB files given")
    table = pd.concat(tables, ignore_index=True)
    order = table.groupby("session", sort=False)["session_start_time"].transform("first")
    table = table.assign(_order=order).sort_values(["subject", "_order", "trial"], kind="stable")
    return table.drop(columns="_order").reset_index(drop=True)


# --------------------------------------------------------------- writing session files
def _encode(session: pd.DataFrame, vocabulary: str) -> dict[str, tuple[np.ndarray, str]]:
    """Trials-table rows of one session -> NWB columns (values, description)."""
    right = session["contrastRight"].notna().to_numpy()
    contrast = np.where(right, session["contrastRight"], session["contrastLeft"]).astype(float)
    choice = session["choice"].to_numpy(dtype=int)
    if vocabulary == "legacy":
        columns = {
            "choice": (choice, "ALF choice: -1 rightward (CCW), +1 leftward (CW), 0 no-go."),
            "feedback_type": (session["feedbackType"].to_numpy(dtype=int),
                              "+1 rewarded, -1 error."),
            "contrast_left": (session["contrastLeft"].to_numpy(dtype=float),
                              "Contrast on the left (0-1); NaN when the stimulus is right."),
            "contrast_right": (session["contrastRight"].to_numpy(dtype=float),
                               "Contrast on the right (0-1); NaN when the stimulus is left."),
        }
    else:
        wheel = np.where(choice == 1, "clockwise",
                         np.where(choice == -1, "counter_clockwise", "none"))
        columns = {
            "gabor_stimulus_contrast": (contrast * 100.0, "Stimulus contrast (percent)."),
            "gabor_stimulus_side": (np.where(right, "right", "left"), "Side of the stimulus."),
            "mouse_wheel_choice": (wheel, "Wheel turn: clockwise (leftward choice), "
                                          "counter_clockwise (rightward) or none (no-go)."),
            "is_mouse_rewarded": (session["feedbackType"].to_numpy() == 1,
                                  "Whether the trial was rewarded."),
        }
    columns["probability_left"] = (session["probabilityLeft"].to_numpy(dtype=float),
                                   "Prior probability of a left stimulus.")
    for nwb_name, alf in _TIMES[vocabulary].items():
        if alf in session:
            columns[nwb_name] = (session[alf].to_numpy(dtype=float), f"ALF {alf} (s).")
    return columns


def trials_to_nwb(trials: pd.DataFrame, directory: str | Path, vocabulary: str = "tidy",
                  subject_metadata: Mapping | None = None,
                  overwrite: bool = False) -> list[Path]:
    """Write a trials table as NWB session files, one per session (``<session>.nwb``).

    Useful to run NWB pipelines on simulated animals or on ONE data.

    Parameters
    ----------
    trials : pandas.DataFrame
        Trials table with a ``date`` or ``session_start_time`` column.
    directory : str or Path
        Output folder (created).
    vocabulary : {"tidy", "legacy"}
        Column vocabulary of the IBL NWB files to imitate.
    subject_metadata : dict, optional
        :class:`pynwb.file.Subject` fields. The defaults, species *Mus musculus*, sex ``U``
        (unknown) and age ``P0D/`` (an open range: unknown), say only what is known of a
        simulated animal; pass the real values for real mice.
    overwrite : bool
        Replace existing files.

    Returns
    -------
    list of Path
        The files, in table order. Trials without ``intervals_0`` / ``intervals_1`` get
        consecutive 1-second intervals (the NWB trials table requires times).
    """
    if vocabulary not in VOCABULARIES:
        raise ValueError(f"vocabulary must be one of {list(VOCABULARIES)}, got {vocabulary!r}")
    table = validate_trials(trials)
    when = next((c for c in ("session_start_time", "date") if c in table), None)
    if when is None:
        raise ValueError("trials_to_nwb needs a 'date' or 'session_start_time' column for "
                         "each session's start time")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for (subject, session), rows in table.groupby(["subject", "session"], sort=False):
        path = directory / f"{session}.nwb"
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        start = pd.Timestamp(rows[when].iloc[0])
        start = start.tz_localize("UTC") if start.tzinfo is None else start
        meta = {"species": "Mus musculus", "sex": "U", "age": "P0D/",
                **dict(subject_metadata or {})}
        nwbfile = NWBFile(
            session_description=f"IBL training session of {subject}",
            identifier=str(session), session_start_time=start.to_pydatetime(),
            subject=Subject(subject_id=str(subject), **meta))
        columns = _encode(rows, vocabulary)
        for name, (_, description) in columns.items():
            nwbfile.add_trial_column(name, description)
        n = len(rows)
        starts = (rows["intervals_0"].to_numpy(float) if "intervals_0" in rows
                  else np.arange(n, dtype=float))
        stops = rows["intervals_1"].to_numpy(float) if "intervals_1" in rows else starts + 1.0
        for i in range(n):
            nwbfile.add_trial(start_time=starts[i], stop_time=stops[i],
                              **{name: values[i] for name, (values, _) in columns.items()})
        _atomic_write(path, lambda tmp, f=nwbfile: _write_new(tmp, f))
        paths.append(path)
    return paths


# ---------------------------------------------------------------------- results
def _write_new(tmp: Path, nwbfile, manager=None) -> None:
    """Write ``nwbfile`` to ``tmp``, the temporary file of an :func:`atomic_write`."""
    with NWBHDF5IO(str(tmp), "w", **({"manager": manager} if manager else {})) as io:
        io.write(nwbfile)


def _behavior_module(nwbfile):
    if _BEHAVIOR in nwbfile.processing:
        return nwbfile.processing[_BEHAVIOR]
    return nwbfile.create_processing_module(_BEHAVIOR, "Behavioural data and learning-rule "
                                                       "results.")


def _model_container(estimator, name: str):
    config = estimator_config(estimator)
    parameters = RuleParameters(name="parameters",
                                description=f"Parameters of the fitted {estimator.rule_name_} "
                                            "rule.")
    for key, tensor in estimator.rule_.state_dict().items():
        values = tensor.detach().cpu().numpy()
        parameters.add_row(parameter=key, shape=list(values.shape),
                           values=values.astype(np.float32).ravel().tolist())
    history = estimator.history_
    val = history["val_loss"].to_numpy(dtype=float)
    return LearningRuleModel(
        name=name, rule=estimator.rule_name_,
        hyperparameters=json.dumps(config["params"], sort_keys=True),
        package_version=config["package_version"], n_epochs=int(estimator.n_iter_),
        best_epoch=int(estimator.best_epoch_), parameters=parameters,
        covariates=list(estimator.covariates_), training_subjects=list(estimator.subjects_),
        train_loss=history["train_loss"].to_numpy(dtype=float),
        validation_loss=None if np.isnan(val).all() else val)


def _comparison_container(results: pd.DataFrame, name: str):
    table = ModelComparisonTable(name=name, description="Held-out performance of learning "
                                                        "rules (ibl_learnrules).")
    seeds = results["seed"] if "seed" in results else pd.Series(0, index=results.index)
    for (_, row), seed in zip(results.iterrows(), seeds, strict=True):
        table.add_row(rule=str(row["rule"]), subject=str(row["subject"]), seed=int(seed),
                      n_trials=int(row["n_trials"]), log_likelihood=float(row["loglik"]),
                      bits_per_trial=float(row["bits"]), accuracy=float(row["accuracy"]))
    return table


def _trajectory_container(estimator, nwbfile, trials: pd.DataFrame | None, name: str,
                          source: str):
    session = nwbfile.identifier
    subject = getattr(nwbfile.subject, "subject_id", None)
    if nwbfile.trials is None:
        raise ValueError(f"{source} has no trials table to attach a trajectory to")
    if trials is None:
        trials = _read_one(nwbfile, None, source)
    trials = trials[trials["subject"].astype(str) == str(subject)] if subject else trials
    if not (trials["session"].astype(str) == str(session)).any():
        raise ValueError(f"the trials given hold no trials of session {session!r} (the file's "
                         f"identifier){f' of subject {subject!r}' if subject else ''}")
    trajectory = estimator.predict_trajectory(trials)
    rows = trajectory[trajectory["session"].astype(str) == str(session)]
    n_rows = len(nwbfile.trials)
    indices = rows["trial"].to_numpy(dtype=np.int64)
    if indices.min() < 0 or indices.max() >= n_rows:
        raise ValueError(f"trial indices {indices.min()}..{indices.max()} do not fit the "
                         f"{n_rows} rows of the trials table in {source}")
    names = [f"w_{c}" for c in estimator.covariates_]
    sds = [f"{n}_sd" for n in names]
    extra = ({"weight_sds": rows[sds].to_numpy(dtype=np.float32)}
             if all(c in rows for c in sds) else {})
    return LearningTrajectory(
        name=name, rule=estimator.rule_name_, session_id=str(session),
        subject_id=str(rows["subject"].iloc[0]),
        weights=rows[names].to_numpy(dtype=np.float32), **extra,
        weight_names=list(estimator.covariates_),
        p_right=rows["p_right"].to_numpy(dtype=np.float32), trial_indices=indices,
        trials=nwbfile.trials)


def _add_results(nwbfile, source_file, estimator, trials, comparison, suffix: str,
                 source: str) -> None:
    module = _behavior_module(nwbfile)
    containers = [_trajectory_container(estimator, source_file, trials,
                                        f"learning_trajectory_{suffix}", source),
                  _model_container(estimator, f"learning_rule_{suffix}")]
    if comparison is not None:
        containers.append(_comparison_container(comparison, f"model_comparison_{suffix}"))
    for container in containers:
        if container.name in module.data_interfaces:
            raise ValueError(f"{source} already holds {_BEHAVIOR}/{container.name}; pass "
                             "another name=")
        module.add(container)


def write_results(path: str | Path, estimator, trials: pd.DataFrame | None = None, *,
                  output: str | Path | None = None, comparison: pd.DataFrame | None = None,
                  name: str | None = None) -> Path:
    """Write a fitted rule's results for one NWB session file.

    Adds to the ``behavior`` processing module: ``learning_trajectory_<name>`` (this
    session's weights and p(right), linked to its trials table), ``learning_rule_<name>``
    (the fitted rule) and, when given, ``model_comparison_<name>``.

    Parameters
    ----------
    path : str or Path
        The session's NWB file.
    estimator : LearningRuleGLM
        A fitted estimator.
    trials : pandas.DataFrame, optional
        The animal's trials across sessions (e.g. :func:`read_trials` of all its files): the
        trajectory is rolled forward through all of them and this session's slice is
        written. By default only this file's trials are used, starting from the estimator's
        initial weights.
    output : str or Path, optional
        Write a separate results file that links to ``path`` (which stays untouched),
        instead of appending to ``path``.
    comparison : pandas.DataFrame, optional
        A table from :func:`~ibl_learnrules.evaluation.compare_rules` or
        :func:`~ibl_learnrules.evaluation.held_out_future`.
    name : str, optional
        Suffix of the containers' names (default: the rule's name).

    Returns
    -------
    Path
        The file written. Either way the write goes to a temporary file that replaces the
        target only when complete: a failure leaves ``path`` byte-identical.
    """
    if not isinstance(estimator, LearningRuleGLM):
        members = " (write each of its estimators_ under its own name)" if hasattr(
            estimator, "estimators_") else ""
        raise TypeError("write_results writes one fitted LearningRuleGLM, got "
                        f"{type(estimator).__name__}{members}")
    estimator._check_fitted()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such NWB file: {path}")
    suffix = name or estimator.rule_name_
    if output is None:
        def append(tmp: Path) -> None:
            with _open_nwb(tmp, "a", source=str(path)) as (io, nwbfile):
                _add_results(nwbfile, nwbfile, estimator, trials, comparison, suffix, str(path))
                io.write(nwbfile)

        _atomic_write(path, append, copy_from=path)
        return path

    output = Path(output)
    if output.resolve() == path.resolve():
        raise ValueError("output must differ from path; leave output out to append to path")
    output.parent.mkdir(parents=True, exist_ok=True)
    with _open_nwb(path) as (source_io, source):
        subject = source.subject
        fields = ("age", "description", "genotype", "sex", "species", "strain",
                  "date_of_birth", "weight")
        results = NWBFile(
            session_description=f"Learning-rule results for session {source.identifier}",
            identifier=str(uuid.uuid4()), session_start_time=source.session_start_time,
            subject=None if subject is None else Subject(
                subject_id=subject.subject_id,
                **{f: getattr(subject, f) for f in fields if getattr(subject, f) is not None}),
            source_script="ibl_learnrules.io.nwb.write_results",
            source_script_file_name="ibl_learnrules/io/nwb.py")
        _add_results(results, source, estimator, trials, comparison, suffix, str(path))
        # One build manager for both files: the trajectory's link to the source's trials
        # table becomes an HDF5 external link instead of a copy.
        _atomic_write(output, lambda tmp: _write_new(tmp, results, source_io.manager))
    return output


# ---------------------------------------------------------------- reading results
def _find(module, neurodata_type: str, name: str | None, source: str):
    found = {k: v for k, v in module.data_interfaces.items()
             if type(v).__name__ == neurodata_type}
    if name is not None:
        if name not in found:
            raise KeyError(f"{source} has no {neurodata_type} named {name!r}; found "
                           f"{sorted(found) or 'none'}")
        return found[name]
    if len(found) != 1:
        raise KeyError(f"{source} holds {len(found)} {neurodata_type} containers "
                       f"({sorted(found)}); pass name=")
    return next(iter(found.values()))


def _open_behavior(nwbfile, source: str):
    if _BEHAVIOR not in nwbfile.processing:
        raise KeyError(f"{source} has no '{_BEHAVIOR}' processing module with results")
    return nwbfile.processing[_BEHAVIOR]


def read_trajectory(path: str | Path, name: str | None = None) -> pd.DataFrame:
    """Read a ``LearningTrajectory`` back as a DataFrame like ``predict_trajectory``'s.

    Returns ``subject``, ``session``, ``trial``, ``w_<covariate>``, for a rule with weight
    noise ``w_<covariate>_sd``, and ``p_right``.
    """
    with _open_nwb(path) as (_, nwbfile):
        found = _find(_open_behavior(nwbfile, str(path)), "LearningTrajectory", name, str(path))
        weights = np.asarray(found.weights[:])
        frame = pd.DataFrame({"subject": found.subject_id, "session": found.session_id,
                              "trial": np.asarray(found.trial_indices[:])})
        covariates = list(_text(found.weight_names[:]))
        for k, cov in enumerate(covariates):
            frame[f"w_{cov}"] = weights[:, k]
        if found.weight_sds is not None:
            sds = np.asarray(found.weight_sds[:])
            for k, cov in enumerate(covariates):
                frame[f"w_{cov}_sd"] = sds[:, k]
        frame["p_right"] = np.asarray(found.p_right[:])
    return frame


def read_comparison(path: str | Path, name: str | None = None) -> pd.DataFrame:
    """Read a ``ModelComparisonTable`` back with the column names of ``compare_rules``."""
    with _open_nwb(path) as (_, nwbfile):
        found = _find(_open_behavior(nwbfile, str(path)), "ModelComparisonTable", name, str(path))
        frame = found.to_dataframe().reset_index(drop=True)
    return frame.rename(columns={"log_likelihood": "loglik", "bits_per_trial": "bits"})


def read_model(path: str | Path, name: str | None = None, device: str = "cpu",
               allow_version_mismatch: bool = False) -> LearningRuleGLM:
    """Rebuild the fitted :class:`~ibl_learnrules.LearningRuleGLM` stored in an NWB file.

    Parameters
    ----------
    path : str or Path
        NWB file holding a ``LearningRuleModel`` in its ``behavior`` module (written by
        :func:`write_results`).
    name : str, optional
        The container's name (``learning_rule_<rule>``); needed when the file holds more
        than one fitted rule.
    device, allow_version_mismatch
        As in :func:`ibl_learnrules.io.load_model`.

    Returns
    -------
    LearningRuleGLM
        Fitted, with predictions equal to the estimator that was written.
    """
    with _open_nwb(path) as (_, nwbfile):
        model = _find(_open_behavior(nwbfile, str(path)), "LearningRuleModel", name, str(path))
        params = model.parameters.to_dataframe()
        state = {str(row["parameter"]): torch.as_tensor(
                     np.asarray(row["values"], dtype=np.float32).reshape(
                         [int(s) for s in row["shape"]]))
                 for _, row in params.iterrows()}
        train_loss = np.asarray(model.train_loss[:], dtype=float)
        val = (np.asarray(model.validation_loss[:], dtype=float)
               if model.validation_loss is not None else np.full(len(train_loss), np.nan))
        config = {
            "package_version": model.package_version,
            "params": json.loads(model.hyperparameters),
            "fitted": {"rule": model.rule, "covariates": list(_text(model.covariates[:])),
                       "subjects": list(_text(model.training_subjects[:])),
                       "n_iter": int(model.n_epochs), "best_epoch": int(model.best_epoch),
                       "history": {"epoch": list(range(len(train_loss))),
                                   "train_loss": train_loss, "val_loss": val}},
        }
    return estimator_from_config(config, state, device, allow_version_mismatch, str(path))

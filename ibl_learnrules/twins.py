"""Closed-loop checks of a fitted rule: its twins, left alone, beside the animals.

A fitted learning rule is a model of how a mouse learns, so, left alone, it should learn the
task as the mouse did. Teacher-forced likelihood cannot see this: a rule can predict the next
choice well and still, choosing and learning on its own, drive the weights where no mouse
goes. :func:`check_twins` runs ``n_twins`` twins of a fitted estimator in two modes,

* ``"free"``: under the IBL protocol from zero weights (:func:`ibl_learnrules.simulate.twins`),
  its repeat trials, stages and blocks following the twin's own choices;
* ``"replay"``: on each animal's own sessions and stimuli
  (:func:`ibl_learnrules.simulate.replay`), with the twin's own choices and rewards, once per seed;

and compares them with the animals on what IBL users look at: easy-trial performance per
session (contrast >= 0.5), sessions to ``trained_1a`` (brainbox's criteria, via
:func:`ibl_learnrules.stages.training_status`), psychometric parameters per session
(psychofit, via :func:`ibl_learnrules.interpret.psychometric_curves`), the fraction of
debiasing trials, and, in biased sessions, p(left choice) on 0 % contrast trials around
block switches.

A trial is counted as debiasing when its ``probabilityLeft`` is not one of 0.2, 0.5, 0.8: the
simulator writes 0 or 1 on repeat trials (the side is certain); older IBL training sessions
(KS014's) also wrote other values on bias-corrected trials, which count too. In replay mode
the stimuli, hence the debiasing trials, are the animal's, so the repeat fraction is only
compared in free mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from .interpret import psychometric_curves
from .stages import training_status
from .trials import session_index, validate_trials

__all__ = [
    "TwinCheck",
    "session_metrics",
    "block_switch_curve",
    "switch_half_trials",
    "percentile_among_twins",
    "check_twins",
]

EASY_CONTRAST = 0.5
#: ``probabilityLeft`` of ordinary trials; any other value marks a debiasing trial.
BLOCK_PRIORS = (0.2, 0.5, 0.8)
#: Shortest run of trials at p(left) 0.2 or 0.8 that counts as a biased block (IBL's: 20).
MIN_BLOCK = 10
#: Most trials replayed in one call of ``simulate`` by :func:`check_twins` (copies of the
#: animals, one per replay twin, run side by side).
REPLAY_ROWS = 2_000_000
#: Joins an animal's name and a replay twin's number in those copies.
_COPY = "#replay"
PSYCHOMETRIC = ("bias", "threshold", "lapse_left", "lapse_right")
#: Per-session metrics compared in the summary (repeat fraction in free mode only).
SESSION_METRICS = ("easy_correct", "repeat_fraction") + PSYCHOMETRIC
MODES = ("free", "replay")
_TRAINED = ("trained 1a", "trained 1b")


@dataclass
class TwinCheck:
    """Result of :func:`check_twins`: tidy tables of the animals and their twins.

    Attributes
    ----------
    sessions : pandas.DataFrame
        One row per session of each animal and twin: ``mode`` (``"animal"``, ``"free"``,
        ``"replay"``), ``subject`` (the animal a replay twin replays; ``simNNN`` for free
        twins), ``twin`` (-1 for animals), ``session_idx``, ``n_trials``, ``easy_correct``,
        ``repeat_fraction``, ``bias``, ``threshold``, ``lapse_left``, ``lapse_right`` (NaN
        without psychometrics), ``status`` (brainbox's training status).
    subjects : pandas.DataFrame
        One row per animal and twin: ``mode``, ``subject``, ``twin``, ``n_sessions``,
        ``sessions_to_trained`` (sessions up to and including the first at ``trained_1a``
        or later; NaN when not reached) and ``switch_half_trials`` (see
        :func:`switch_half_trials`; NaN without biased sessions).
    bands : pandas.DataFrame
        Per ``mode``, ``metric`` and ``session_idx``: ``animal`` (mean over animals),
        ``twins_mean``, ``twins_median``, ``twins_low``, ``twins_high`` (the interval),
        ``n_twins``.
    block_switch : pandas.DataFrame
        :func:`block_switch_curve` of the animals (``mode`` ``"animal"``) and of each mode's
        twins pooled (one curve per mode).
    summary : pandas.DataFrame
        Per ``metric`` and ``mode``: ``animal`` (the animals' median of their per-animal
        value: mean over sessions, or a count), ``twins_median``, ``twins_low``,
        ``twins_high`` (over twins), ``rms`` (root mean square over sessions of twins' mean
        minus animals' mean, per-session metrics only), ``coverage`` (fraction of sessions
        at which the animals' mean lies in the twins' interval), ``percentile`` (where each
        animal's value ranks among its twins', mean over animals: see
        :func:`percentile_among_twins`), ``n_twins``, ``not_reached`` (twins that never
        reach trained_1a).
    interval : float
        Central probability of the twins' interval.
    """

    sessions: pd.DataFrame
    subjects: pd.DataFrame
    bands: pd.DataFrame
    block_switch: pd.DataFrame
    summary: pd.DataFrame
    interval: float = 0.9

    def report(self) -> str:
        """Return the summary as a plain-text table ("not reached" for a missing value)."""
        def show(value):
            return "-" if pd.isna(value) else f"{value:.3g}"

        lo, hi = f"q{50 - 50 * self.interval:g}", f"q{50 + 50 * self.interval:g}"
        header = (f"{'metric':<20} {'mode':<7} {'animal':>8} {'twins':>8} {lo:>8} {hi:>8} "
                  f"{'rms':>7} {'cover':>6} {'pct':>5} {'n':>4}")
        lines = [header]
        for row in self.summary.itertuples(index=False):
            twins = show(row.twins_median)
            if row.metric == "sessions_to_trained" and pd.isna(row.twins_median):
                twins = "never"
            line = (f"{row.metric:<20} {row.mode:<7} {show(row.animal):>8} {twins:>8} "
                    f"{show(row.twins_low):>8} {show(row.twins_high):>8} {show(row.rms):>7} "
                    f"{show(row.coverage):>6} {show(row.percentile):>5} {row.n_twins:>4}")
            if row.metric == "sessions_to_trained":
                line += f"  ({row.not_reached} of {row.n_twins} twins never trained)"
            lines.append(line)
        return "\n".join(lines)


def _with_session_idx(trials: pd.DataFrame) -> pd.DataFrame:
    table = pd.DataFrame(validate_trials(trials)).reset_index(drop=True)  # sorted, plain
    table["session_idx"] = session_index(table)
    return table


def session_metrics(trials: pd.DataFrame, psychometrics: bool = True) -> pd.DataFrame:
    """Per-session behaviour of each animal in a trials table: what IBL users look at.

    Parameters
    ----------
    trials : pandas.DataFrame
        Trials table of one or more animals (e.g. a simulated cohort or a twin's table).
    psychometrics : bool
        Fit psychofit's ``erf_psycho_2gammas`` per session (the slow part; NaN without).

    Returns
    -------
    pandas.DataFrame
        One row per session: ``subject``, ``session_idx``, ``n_trials``, ``easy_correct``
        (fraction correct on trials with contrast >= 0.5, no-go trials as errors, as
        brainbox counts), ``repeat_fraction`` (``probabilityLeft`` not in 0.2/0.5/0.8),
        ``bias``, ``threshold``, ``lapse_left``, ``lapse_right`` and ``status``.

    Examples
    --------
    >>> from ibl_learnrules import simulate_cohort
    >>> trials = simulate_cohort(1, n_sessions=3, random_state=0, alpha=0.05)
    >>> m = session_metrics(trials, psychometrics=False)
    >>> m[["session_idx", "status"]].values.tolist()
    [[0, 'in training'], [1, 'in training'], [2, 'in training']]
    >>> bool(m["easy_correct"].between(0, 1).all())
    True
    """
    table = _with_session_idx(trials)
    contrast = np.fmax(table["contrastLeft"].fillna(0.0), table["contrastRight"].fillna(0.0))
    table["easy_hit"] = np.where(contrast >= EASY_CONTRAST,
                                 (table["feedbackType"] == 1).astype(float), np.nan)
    table["repeat"] = (~table["probabilityLeft"].round(6).isin(BLOCK_PRIORS)).astype(float)
    keys = ["subject", "session_idx"]
    out = (table.groupby(keys, sort=False)
           .agg(session=("session", "first"), n_trials=("trial", "size"),
                easy_correct=("easy_hit", "mean"), repeat_fraction=("repeat", "mean"))
           .reset_index())
    if psychometrics:
        fits = psychometric_curves(table).fits
        out = out.merge(fits[["subject", "session", *PSYCHOMETRIC]], on=["subject", "session"],
                        how="left")
    else:
        out[list(PSYCHOMETRIC)] = np.nan
    status = training_status(table)
    out = out.merge(status, on=["subject", "session"], how="left")
    return out.drop(columns="session")


def block_switch_curve(trials: pd.DataFrame, before: int = 10, after: int = 40,
                       max_contrast: float = 0.0) -> pd.DataFrame:
    """p(left choice) around the switches between biased blocks (p(left) 0.2 <-> 0.8).

    A block is a run of at least ``MIN_BLOCK`` trials at p(left) 0.2 or 0.8 (shorter runs are
    debiasing draws of older training sessions); a switch joins two blocks. Trials are
    counted from the first trial of the new block (0) back into the end of the previous one
    (-1, -2, ...); the first block of a session (after the unbiased start) is not a switch.
    Only trials with a contrast up to ``max_contrast`` count (by default 0 %, where the
    choice shows the animal's prior alone: on visible stimuli, drawn from the new block's
    prior, choices jump at the switch whatever the animal expects). No-go trials are left out.

    Parameters
    ----------
    trials : pandas.DataFrame
        Trials table (sessions without biased blocks contribute nothing).
    before, after : int
        Trials shown before and after each switch.
    max_contrast : float
        Highest contrast of the trials counted.

    Returns
    -------
    pandas.DataFrame
        ``subject``, ``to_block`` (p(left) of the new block: 0.2 or 0.8),
        ``trials_since_switch``, ``p_left`` (fraction of left choices, ALF ``choice`` +1)
        and ``n``. Empty without switches.

    Examples
    --------
    >>> from ibl_learnrules import simulate_cohort
    >>> block_switch_curve(simulate_cohort(1, n_sessions=1, random_state=0)).empty
    True
    """
    table = _with_session_idx(trials)
    columns = ["subject", "to_block", "trials_since_switch", "p_left", "n"]
    session = table["subject"] + "/" + table["session"]
    prior = table["probabilityLeft"].round(6)
    table["run"] = (prior != prior.groupby(session).shift()).groupby(session).cumsum()
    by_run = table.groupby([session, table["run"]])
    table["k"] = by_run.cumcount()
    table["k_back"] = table["k"] - by_run["k"].transform("size")
    table["block"] = prior.isin((0.2, 0.8)) & (table["k_back"].groupby(
        [session, table["run"]]).transform("min") <= -MIN_BLOCK)
    # a switch joins two adjacent blocks (runs differ in prior, so their priors are opposite)
    runs = table.assign(session_key=session).drop_duplicates(["session_key", "run"])
    after_block = runs.groupby("session_key")["block"].shift(1, fill_value=False)
    before_block = runs.groupby("session_key")["block"].shift(-1, fill_value=False)
    switch_in = pd.Series((runs["block"] & after_block).to_numpy(),
                          index=pd.MultiIndex.from_frame(runs[["session_key", "run"]]))
    switch_out = pd.Series((runs["block"] & before_block).to_numpy(), index=switch_in.index)
    keys = pd.MultiIndex.from_arrays([session, table["run"]])
    table["switch_in"] = switch_in.reindex(keys).to_numpy()
    table["switch_out"] = switch_out.reindex(keys).to_numpy()
    post = table[table["switch_in"] & (table["k"] < after)].assign(
        to_block=prior, trials_since_switch=table["k"])
    pre = table[table["switch_out"] & (table["k_back"] >= -before)].assign(
        to_block=prior.map({0.2: 0.8, 0.8: 0.2}), trials_since_switch=table["k_back"])
    if post.empty:
        return pd.DataFrame(columns=columns)
    both = pd.concat([pre, post])
    contrast = np.fmax(both["contrastLeft"].fillna(0.0), both["contrastRight"].fillna(0.0))
    both = both[(both["choice"] != 0) & (contrast <= max_contrast)]
    both["left"] = (both["choice"] == 1).astype(float)
    return (both.groupby(["subject", "to_block", "trials_since_switch"])
            .agg(p_left=("left", "mean"), n=("left", "size")).reset_index()[columns])


def switch_half_trials(curve: pd.DataFrame) -> float:
    """Trials after a block switch to reach half of the change in choices it brings.

    The curve is folded onto p(choice toward the new block's likely side), pooled over
    directions (and animals), and ``pre + (post - pre) (1 - exp(-k / tau))`` is fitted to
    its post-switch part by weighted least squares, with ``pre`` the mean before the switch;
    the answer is ``tau * ln 2``.

    Parameters
    ----------
    curve : pandas.DataFrame
        Output of :func:`block_switch_curve`.

    Returns
    -------
    float
        Trials to half of the post-switch change; NaN without switches, or when the choices
        do not move toward the new block.

    Examples
    --------
    >>> k = np.arange(-10, 40)
    >>> p = np.where(k < 0, 0.3, 0.3 + 0.4 * (1 - np.exp(-np.maximum(k, 0) / 5.0)))
    >>> curve = pd.DataFrame({"to_block": 0.8, "trials_since_switch": k, "p_left": p, "n": 50})
    >>> round(switch_half_trials(curve), 2)  # 5 ln 2
    3.47
    """
    from scipy.optimize import curve_fit

    if curve.empty:
        return float("nan")
    toward = np.where(curve["to_block"] == 0.8, curve["p_left"], 1.0 - curve["p_left"])
    folded = (pd.DataFrame({"k": curve["trials_since_switch"], "hits": toward * curve["n"],
                            "n": curve["n"]}).groupby("k").sum())
    p = folded["hits"] / folded["n"]
    k = folded.index.to_numpy(dtype=float)
    if not (k < 0).any() or (k >= 0).sum() < 3:
        return float("nan")
    pre = float(np.average(p[k < 0], weights=folded["n"][k < 0]))
    after = k >= 0

    def model(x, post, tau):
        return pre + (post - pre) * (1.0 - np.exp(-x / tau))

    try:
        (post, tau), _ = curve_fit(model, k[after], p[after], p0=(p[after].iloc[-5:].mean(), 5.0),
                                   sigma=1.0 / np.sqrt(folded["n"][after]),
                                   bounds=([0.0, 0.1], [1.0, 1e3]))
    except (RuntimeError, ValueError):
        return float("nan")
    if post - pre < 0.02:  # no adaptation to speak of
        return float("nan")
    return float(tau * np.log(2.0))


def _quantiles(values: np.ndarray, interval: float) -> tuple[float, float, float]:
    """Median and interval of values in which NaN means "never" (ranked last)."""
    if len(values) == 0:
        return (np.nan,) * 3
    never = 1e12  # any quantile that reaches into the "never"s is "never"
    q = np.quantile(np.where(np.isnan(values), never, values),
                    [0.5, 0.5 - interval / 2, 0.5 + interval / 2])
    return tuple(float(v) if v <= np.nanmax(values, initial=-np.inf) else np.nan for v in q)


def percentile_among_twins(animals: ArrayLike, twins: ArrayLike) -> float:
    """Where the animals' values rank among their twins': 0 below all, 1 above all.

    Each animal's share of twins with a lower value (ties count half), averaged over
    animals. NaN means "never" (``trained_1a`` not reached; no adaptation to a block
    switch) and ranks above every number. :func:`check_twins` ranks replay twins against
    their own animal. A twin model that draws animals like the real ones puts each animal
    at a uniform percentile, so the mean over animals is near 0.5; near 0 or 1 the twins
    miss the animals on that side. Unlike the twins' mean curve, this stays meaningful
    when the twins are a mixture (say, half of them never train).

    Parameters
    ----------
    animals, twins : array-like of float
        One value per animal, and per twin.

    Returns
    -------
    float
        The mean percentile; NaN without animals or twins.

    Examples
    --------
    >>> percentile_among_twins([14.0], [7.0, 9.0, 14.0, np.nan])  # 2 below, 1 tie
    0.625
    >>> percentile_among_twins([np.nan], [7.0, np.nan])  # never trained, as one twin
    0.75
    """
    from scipy.stats import percentileofscore

    animals = np.asarray(animals, dtype=float)
    twins = np.asarray(twins, dtype=float)
    if animals.size == 0 or twins.size == 0:
        return float("nan")
    never = np.inf  # ranks above every number, ties with itself
    ranks = percentileofscore(np.nan_to_num(twins, nan=never),
                              np.nan_to_num(animals, nan=never), kind="mean")
    return float(np.mean(ranks) / 100.0)


def _percentile(mode: str, animals: pd.Series, twins: pd.Series) -> float:
    """:func:`percentile_among_twins` by ``subject``: a replay twin against its own animal."""
    if mode != "replay":
        return percentile_among_twins(animals.to_numpy(), twins.to_numpy())
    ranks = [percentile_among_twins([value], twins[twins.index == subject].to_numpy())
             for subject, value in animals.items()]
    return float(np.nanmean(ranks)) if ranks else float("nan")


def _per_subject(sessions: pd.DataFrame, switches: pd.DataFrame) -> pd.DataFrame:
    keys = ["mode", "subject", "twin"]
    trained = sessions.assign(reached=sessions["status"].isin(_TRAINED))
    out = trained.groupby(keys, sort=False).agg(n_sessions=("session_idx", "size")).reset_index()
    first = (trained[trained["reached"]].groupby(keys)["session_idx"].min() + 1)
    out["sessions_to_trained"] = out.set_index(keys).index.map(first).astype(float)
    if switches.empty:
        out["switch_half_trials"] = np.nan
    else:
        half = switches.groupby(keys).apply(switch_half_trials, include_groups=False)
        out["switch_half_trials"] = out.set_index(keys).index.map(half).astype(float)
    return out


def _bands(sessions: pd.DataFrame, interval: float) -> pd.DataFrame:
    animals = sessions[sessions["mode"] == "animal"]
    twins = sessions[sessions["mode"] != "animal"]
    q_low, q_high = 0.5 - interval / 2, 0.5 + interval / 2
    long = twins.melt(id_vars=["mode", "session_idx"], value_vars=list(SESSION_METRICS),
                      var_name="metric")
    grouped = long.groupby(["mode", "metric", "session_idx"])["value"]
    bands = pd.DataFrame({"twins_mean": grouped.mean(), "twins_median": grouped.median(),
                          "twins_low": grouped.quantile(q_low),
                          "twins_high": grouped.quantile(q_high),
                          "n_twins": grouped.count()}).reset_index()
    animal = (animals.melt(id_vars="session_idx", value_vars=list(SESSION_METRICS),
                           var_name="metric").groupby(["metric", "session_idx"])["value"].mean()
              .rename("animal").reset_index())
    bands = bands.merge(animal, on=["metric", "session_idx"], how="inner")
    return bands[["mode", "metric", "session_idx", "animal", "twins_mean", "twins_median",
                  "twins_low", "twins_high", "n_twins"]]


def _summary(sessions, subjects, bands, interval) -> pd.DataFrame:
    rows = []
    modes = [m for m in MODES if m in set(sessions["mode"])]
    per_animal = sessions.groupby(["mode", "subject", "twin"])[list(SESSION_METRICS)].mean()
    by_subject = subjects.set_index("subject")
    for mode in modes:
        for metric in SESSION_METRICS:
            if metric == "repeat_fraction" and mode == "replay":
                continue  # the replayed stimuli, hence the repeats, are the animal's
            band = bands[(bands["mode"] == mode) & (bands["metric"] == metric)].dropna(
                subset=["animal", "twins_mean"])
            if band.empty:
                continue
            twins = per_animal.loc[mode][metric].dropna().droplevel("twin")
            animals = per_animal.loc["animal"][metric].dropna().droplevel("twin")
            inside = band["animal"].between(band["twins_low"], band["twins_high"])
            rows.append({"metric": metric, "mode": mode,
                         "animal": animals.median(),
                         **dict(zip(("twins_median", "twins_low", "twins_high"),
                                    _quantiles(twins.to_numpy(), interval), strict=True)),
                         "rms": float(np.sqrt(np.mean((band["twins_mean"] - band["animal"]) ** 2))),
                         "coverage": float(inside.mean()),
                         "percentile": _percentile(mode, animals, twins),
                         "n_twins": len(twins), "not_reached": 0})
        for metric in ("sessions_to_trained", "switch_half_trials"):
            animals = by_subject.loc[by_subject["mode"] == "animal", metric]
            twins = by_subject.loc[by_subject["mode"] == mode, metric]
            if metric == "switch_half_trials" and animals.isna().all():
                continue
            rows.append({"metric": metric, "mode": mode,
                         "animal": _quantiles(animals.to_numpy(), interval)[0],
                         **dict(zip(("twins_median", "twins_low", "twins_high"),
                                    _quantiles(twins.to_numpy(), interval), strict=True)),
                         "rms": np.nan, "coverage": np.nan,
                         "percentile": _percentile(mode, animals, twins),
                         "n_twins": len(twins), "not_reached": int(twins.isna().sum())})
    return pd.DataFrame(rows, columns=["metric", "mode", "animal", "twins_median", "twins_low",
                                       "twins_high", "rms", "coverage", "percentile",
                                       "n_twins", "not_reached"])


def _replays(estimator, animals: pd.DataFrame, seeds: np.ndarray) -> list[pd.DataFrame]:
    """Replay twins, many per call: each a copy of the animals under a subject name of its own.

    One call replays the copies side by side in one rollout (KS014, 20 replays: 1 s, where
    one call per twin took 0.7-1.1 s each); calls hold at most :data:`REPLAY_ROWS` trials,
    so that long cohorts stay within memory.
    """
    per_call = max(1, REPLAY_ROWS // len(animals))
    runs = []
    for start in range(0, len(seeds), per_call):
        twins = range(start, min(start + per_call, len(seeds)))
        copies = pd.concat([animals.assign(subject=animals["subject"] + f"{_COPY}{i}")
                            for i in twins], ignore_index=True)
        run = estimator.simulate(copies, random_state=int(seeds[start]))
        names = run["subject"].str.rsplit(_COPY, n=1, expand=True)
        runs.append(run.assign(subject=names[0], twin=names[1].astype(int), mode="replay"))
    return runs


def check_twins(
    estimator,
    trials: pd.DataFrame,
    n_twins: int = 20,
    random_state: int | None = 0,
    *,
    modes: Sequence[str] = MODES,
    protocol: str | None = None,
    psychometrics: bool = True,
    interval: float = 0.9,
    free_sessions: int | None = None,
) -> TwinCheck:
    """Run twins of a fitted estimator, free and on the animals' stimuli; compare them.

    Parameters
    ----------
    estimator : LearningRuleGLM
        A fitted estimator (free mode needs ``init_weights="zero"``: twins start at zero).
    trials : pandas.DataFrame
        Trials table of the animal(s) the twins are compared with.
    n_twins : int
        Free-running twins, and replays of each animal.
    random_state : int, optional
        Seed of the twins; the same seed gives the same check.
    modes : sequence of {"free", "replay"}
        Which twins to run.
    protocol : {"training", "biased"}, optional
        Protocol of the free twins; by default ``"biased"`` when the animals switch between
        biased blocks (see :func:`block_switch_curve`), else ``"training"``.
    psychometrics : bool
        Fit psychometric curves per session (most of the time on long runs).
    interval : float
        Central probability of the twins' interval (0.9: from the 5th to the 95th percentile).
    free_sessions : int, optional
        Sessions each free twin runs; by default as many as the longest animal. A twin that
        would reach ``trained_1a`` only after that counts as never trained, so when the
        animal trains near its last session, half its typical twins would: run them longer
        to see when they train (KS014 reaches ``trained_1a`` in its 14th session of 15).
        Learning curves, their RMS and each twin's mean over sessions are still compared
        over the animals' sessions only.

    Returns
    -------
    TwinCheck
        Tidy tables of the animals and twins and the summary (``TwinCheck.report()`` prints it).

    Examples
    --------
    >>> from ibl_learnrules import LearningRuleGLM, simulate_cohort
    >>> mice = simulate_cohort(1, "reinforce_baseline", n_sessions=1, random_state=0)
    >>> est = LearningRuleGLM(rule="reinforce_baseline", max_epochs=1).fit(mice)
    >>> check = check_twins(est, mice, n_twins=2, psychometrics=False)
    >>> check.summary[["metric", "mode"]].values.tolist()[:2]
    [['easy_correct', 'free'], ['repeat_fraction', 'free']]
    >>> check.sessions.groupby("mode")["twin"].nunique().to_dict()
    {'animal': 1, 'free': 2, 'replay': 2}
    """
    if not isinstance(n_twins, (int, np.integer)) or n_twins < 1:
        raise ValueError(f"n_twins must be a positive integer, got {n_twins!r}")
    unknown = set(modes) - set(MODES)
    if unknown or not modes:
        raise ValueError(f"unknown mode(s) {sorted(unknown)}; choose from {list(MODES)}")
    if not 0.0 < interval < 1.0:
        raise ValueError(f"interval must lie in (0, 1), got {interval!r}")
    animals = _with_session_idx(trials)
    n_sessions = int(animals.groupby("subject")["session_idx"].max().max()) + 1
    if free_sessions is None:
        free_sessions = n_sessions
    if not isinstance(free_sessions, (int, np.integer)) or free_sessions < n_sessions:
        raise ValueError(f"free_sessions must be an integer of at least the animals' "
                         f"{n_sessions} sessions, got {free_sessions!r}")
    if protocol is None:
        protocol = "training" if block_switch_curve(animals).empty else "biased"
    seeds = np.random.default_rng(random_state).integers(2**31 - 1, size=n_twins + 1)
    runs = [animals.assign(mode="animal", twin=-1)]
    if "free" in modes:
        free = estimator.simulate({"n_subjects": n_twins, "n_sessions": int(free_sessions),
                                   "protocol": protocol}, random_state=int(seeds[0]))
        runs.append(free.assign(mode="free", twin=free["subject"].str[3:].astype(int)))
    if "replay" in modes:
        runs += _replays(estimator, animals, seeds[1:])
    # one table, each run a subject of its own, so each step below is one vectorised pass
    # sessions keep the order they come in (dates differ between animals and free twins)
    table = pd.concat([run.drop(columns=["date", "session_start_time"], errors="ignore")
                       for run in runs], ignore_index=True)
    table["unit"] = table["mode"] + ":" + table["twin"].astype(str) + ":" + table["subject"]
    units = table.drop_duplicates("unit").set_index("unit")[["mode", "twin", "subject"]]
    metrics = session_metrics(table.assign(subject=table["unit"]), psychometrics)
    sessions = units.join(metrics.rename(columns={"subject": "unit"}).set_index("unit"),
                          how="inner").reset_index(drop=True)
    switches = block_switch_curve(table.assign(subject=table["unit"]))
    if not switches.empty:
        switches = units.join(switches.rename(columns={"subject": "unit"}).set_index("unit"),
                              how="inner").reset_index(drop=True)
    subjects = _per_subject(sessions, switches)
    bands = _bands(sessions, interval)
    summary = _summary(sessions[sessions["session_idx"] < n_sessions], subjects, bands,
                       interval)
    if not switches.empty:  # one curve per mode (twins pooled) for the figure
        switches = (switches.groupby(["mode", "to_block", "trials_since_switch"])
                    .apply(lambda g: pd.Series({"p_left": np.average(g["p_left"], weights=g["n"]),
                                                "n": g["n"].sum()}), include_groups=False)
                    .reset_index())
    return TwinCheck(sessions, subjects, bands, switches, summary, interval)

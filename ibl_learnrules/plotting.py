"""Figures of fitted learning rules, held-out comparisons and the animals' behaviour.

Every function takes an optional matplotlib ``ax`` (a new figure is made without one) and
returns the axes it drew on (the figure, for a figure of several panels). matplotlib is
imported inside the functions, so importing this module costs nothing and leaves the
backend choice to the caller.

Artists carrying data have a ``gid`` (``"session_start"``, ``"stage"``, ``"mean"``,
``"data"``, ``"model"``, ``"train"``, ``"val"``, ...) so that they can be found again, e.g.
``[line for line in ax.lines if line.get_gid() == "mean"]``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .interpret import CONTEXTS, Psychometric, learning_curve, summarize_reward_history

__all__ = [
    "plot_weight_trajectory",
    "plot_delta_w_grid",
    "plot_reward_history",
    "plot_reward_run_ratios",
    "plot_model_comparison",
    "plot_paired_differences",
    "plot_learning_curve",
    "plot_training_loss",
    "plot_psychometric",
    "plot_twin_check",
]

_KEYS = ["subject", "session", "trial"]
_LN2 = math.log(2.0)


def _axes(ax, figsize=(6.0, 4.0)):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def _one_subject(table: pd.DataFrame, subject) -> tuple[str, pd.DataFrame]:
    subjects = pd.unique(table["subject"].astype(str))
    if subject is None:
        if len(subjects) != 1:
            raise ValueError(f"the table holds {len(subjects)} subjects {list(subjects)[:5]}: "
                             "pass subject=")
        subject = subjects[0]
    rows = table[table["subject"].astype(str) == str(subject)]
    if rows.empty:
        raise ValueError(f"subject {subject!r} is not in the table: {list(subjects)[:5]}")
    return str(subject), rows


def _keyed(table: pd.DataFrame) -> pd.MultiIndex:
    return pd.MultiIndex.from_arrays([table["subject"].astype(str), table["session"].astype(str),
                                      table["trial"].astype(int)])


def plot_weight_trajectory(trajectory: pd.DataFrame, true: pd.DataFrame | None = None,
                           stages: pd.DataFrame | None = None, subject: str | None = None,
                           ax=None):
    """GLM weights of one animal over its trials, with session starts and training stages.

    Parameters
    ----------
    trajectory : pandas.DataFrame
        Output of :meth:`LearningRuleGLM.predict_trajectory` (rows in trial order, columns
        ``w_<covariate>``; with ``w_<covariate>_sd``, a 95 % band is shaded around each).
    true : pandas.DataFrame, optional
        A simulated cohort with ``true_w_<covariate>`` columns: the true weights are drawn
        dashed in the colour of the inferred ones (matched on subject, session, trial).
    stages : pandas.DataFrame, optional
        Output of :func:`ibl_learnrules.stages.training_status`: a labelled line marks the
        first trial of the first session at each status beyond ``"in training"``.
    subject : str, optional
        Animal to draw (needed when ``trajectory`` holds several).
    ax : matplotlib.axes.Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
        x is the trial number within the animal (0, 1, ...); a grey line (gid
        ``"session_start"``) stands at each session's first trial.

    Examples
    --------
    >>> from ibl_learnrules import LearningRuleGLM, simulate_cohort
    >>> trials = simulate_cohort(1, n_sessions=2, random_state=0, alpha=0.05)
    >>> est = LearningRuleGLM(rule="reinforce", max_epochs=1).fit(trials)
    >>> ax = plot_weight_trajectory(est.predict_trajectory(trials), true=trials)
    >>> [line.get_xdata()[0] for line in ax.lines if line.get_gid() == "session_start"]
    [0, 400]
    """
    subject, rows = _one_subject(trajectory, subject)
    ax = _axes(ax, (9.0, 4.0))
    x = np.arange(len(rows))
    session = rows["session"].astype(str).to_numpy()
    starts = np.flatnonzero(np.r_[True, session[1:] != session[:-1]])
    for s in starts:
        ax.axvline(int(s), color="0.85", lw=0.8, zorder=0, gid="session_start")
    names = [c[2:] for c in rows.columns if c.startswith("w_") and not c.endswith("_sd")]
    colors = {}
    for name in names:
        mean = rows[f"w_{name}"].to_numpy()
        (line,) = ax.plot(x, mean, label=name, gid=f"w_{name}")
        colors[name] = line.get_color()
        if f"w_{name}_sd" in rows:  # a rule with weight noise: the belief's 95 % band
            band = 1.96 * rows[f"w_{name}_sd"].to_numpy()
            ax.fill_between(x, mean - band, mean + band, color=colors[name], alpha=0.2,
                            lw=0, gid=f"w_{name}_band")
    if true is not None:
        shown = [n for n in names if f"true_w_{n}" in true.columns]
        if not shown:
            raise ValueError("true has no true_w_<covariate> column matching "
                             f"{[f'w_{n}' for n in names]}")
        values = true.set_index(_keyed(true))[[f"true_w_{n}" for n in shown]]
        values = values.reindex(_keyed(rows))
        for name in shown:
            ax.plot(x, values[f"true_w_{name}"].to_numpy(), ls="--", color=colors[name],
                    label=f"{name} (true)", gid=f"true_w_{name}")
    if stages is not None:
        _, status = _one_subject(stages, subject)
        first = {sid: int(s) for sid, s in zip(session[starts], starts, strict=True)}
        for level, group in status[status["status"] != "in training"].groupby("status",
                                                                                sort=False):
            sid = str(group["session"].iloc[0])
            if sid in first:
                ax.axvline(first[sid], color="tab:purple", ls=":", lw=1.2, gid="stage")
                ax.text(first[sid], 0.98, f" {level}", transform=ax.get_xaxis_transform(),
                        va="top", ha="left", color="tab:purple", fontsize=8)
    ax.axhline(0.0, color="0.6", lw=0.6, zorder=0)
    ax.set_xlabel("trial (grey lines: session starts)")
    ax.set_ylabel("GLM weight")
    ax.set_title(subject)
    ax.legend(fontsize=8)
    return ax


def plot_delta_w_grid(grid: pd.DataFrame, covariate: str | None = None, ax=None):
    """Weight update against the stimulus, one line per (choice, reward).

    Parameters
    ----------
    grid : pandas.DataFrame
        Output of :func:`~ibl_learnrules.interpret.delta_w_grid` at one weight vector (select
        rows first when it holds several, e.g. ``grid[grid.w_bias == 0]``).
    covariate : str, optional
        Weight whose update is drawn; every weight by default, one panel each.
    ax : Axes or sequence of Axes, optional
        One per panel.

    Returns
    -------
    matplotlib.axes.Axes or matplotlib.figure.Figure
        The axes for one panel, the figure for several. Colour: green rewarded, red not;
        solid right choice, dashed left (gid ``"choice=<c>,reward=<r>"``).

    Examples
    --------
    >>> from ibl_learnrules.interpret import delta_w_grid
    >>> from ibl_learnrules.rules import Reinforce
    >>> ax = plot_delta_w_grid(delta_w_grid(Reinforce(2, alpha=0.1)), covariate="bias")
    >>> sorted(line.get_gid() for line in ax.lines if line.get_gid())[:2]
    ['choice=0,reward=0', 'choice=0,reward=1']
    """
    import matplotlib.pyplot as plt

    names = [c[3:] for c in grid.columns if c.startswith("dw_")]
    if covariate is not None:
        if covariate not in names:
            raise ValueError(f"no dw_{covariate} column; the grid has {names}")
        names = [covariate]
    fixed = [c for c in grid.columns if c.startswith("w_") or c.startswith("prev_")]
    varying = [c for c in fixed if grid[c].nunique() > 1]
    if varying:
        raise ValueError(f"the grid varies {varying}: select one value of each first, "
                         f"e.g. grid[grid.{varying[0]} == {grid[varying[0]].iloc[0]!r}]")
    if ax is None:
        fig, axes = plt.subplots(1, len(names), figsize=(4.0 * len(names), 3.5), squeeze=False)
        axes = axes[0]
    else:
        axes = np.atleast_1d(ax)
        if len(axes) != len(names):
            raise ValueError(f"{len(names)} panels to draw ({names}) but {len(axes)} axes given")
        fig = axes[0].figure
    for panel, name in zip(axes, names, strict=True):
        for (choice, reward), rows in grid.groupby(["choice", "reward"]):
            rows = rows.sort_values("stimulus")
            panel.plot(rows["stimulus"], rows[f"dw_{name}"], marker="o", ms=3,
                       color="tab:green" if reward else "tab:red",
                       ls="-" if choice else "--", gid=f"choice={choice:g},reward={reward:g}",
                       label=f"{'right' if choice else 'left'} choice, "
                             f"{'rewarded' if reward else 'unrewarded'}")
        panel.axhline(0.0, color="0.6", lw=0.6, zorder=0)
        panel.set_xlabel("signed contrast (right > 0)")
        panel.set_ylabel(f"Δw {name}")
    axes[0].legend(fontsize=7)
    return axes[0] if len(names) == 1 else fig


def plot_reward_history(summary_or_updates: pd.DataFrame, covariate: str | None = None,
                        measure: str = "rate", ax=None):
    """Update size per reward-history context, for rewarded and unrewarded trials.

    Parameters
    ----------
    summary_or_updates : pandas.DataFrame
        Output of :func:`~ibl_learnrules.interpret.summarize_reward_history`, or of
        :func:`~ibl_learnrules.interpret.reward_history_updates` (summarised here).
    covariate : str, optional
        Weight to show (the first one by default).
    measure : {"rate", "mean_abs_dw"}
        Effective learning rate (signed: negative after errors for REINFORCE-type rules) or
        mean absolute update.
    ax : matplotlib.axes.Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
        One bar container per reward of the trial itself (label ``"rewarded trial"`` /
        ``"unrewarded trial"``), contexts on x with their trial counts.

    Examples
    --------
    >>> from ibl_learnrules import simulate_cohort
    >>> from ibl_learnrules.interpret import reward_history_updates
    >>> from ibl_learnrules.simulate import ground_truth_rule
    >>> trials = simulate_cohort(1, "reward_history", n_trials=500, random_state=0)
    >>> truth = ground_truth_rule("reward_history", 2)
    >>> ax = plot_reward_history(reward_history_updates(truth, trials))
    >>> [c.get_label() for c in ax.containers]
    ['unrewarded trial', 'rewarded trial']
    """
    summary = summary_or_updates
    if any(c.startswith("dw_") for c in summary.columns):
        summary = summarize_reward_history(summary)
    if measure not in ("rate", "mean_abs_dw"):
        raise ValueError(f"measure must be 'rate' or 'mean_abs_dw', got {measure!r}")
    covariate = summary["covariate"].iloc[0] if covariate is None else covariate
    rows = summary[summary["covariate"] == covariate]
    if rows.empty:
        raise ValueError(f"no covariate {covariate!r}; have {list(summary['covariate'].unique())}")
    contexts = [c for c in CONTEXTS if c in set(rows["context"])]
    ax = _axes(ax)
    position = np.arange(len(contexts))
    for offset, reward in ((-0.2, 0.0), (0.2, 1.0)):
        cell = rows[rows["reward"] == reward].set_index("context").reindex(contexts)
        ax.bar(position + offset, cell[measure].to_numpy(), width=0.4,
               color="tab:green" if reward else "tab:red",
               label="rewarded trial" if reward else "unrewarded trial")
    counts = rows.groupby("context")["n_trials"].sum()
    ax.set_xticks(position, [f"{c}\n(n={counts[c]})" for c in contexts])
    ax.axhline(0.0, color="0.4", lw=0.6)
    ax.set_xlabel("previous trials of the session")
    ax.set_ylabel("effective learning rate" if measure == "rate" else "mean |Δw|")
    ax.set_title(f"Δw {covariate} by reward history")
    ax.legend(fontsize=8)
    return ax


def plot_reward_run_ratios(ratios: pd.DataFrame, covariate: str | None = None, ax=None):
    """Step after k rewarded over after k unrewarded trials, per run length, across animals.

    Parameters
    ----------
    ratios : pandas.DataFrame
        Output of :func:`~ibl_learnrules.interpret.reward_run_ratios`; with a ``rule`` column
        (several rules concatenated), one curve per rule.
    covariate : str, optional
        Weight to show (the first one by default).
    ax : matplotlib.axes.Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
        Log-scaled y. Per rule: the median ratio across animals (line, gid ``"median"``), the
        interquartile range (band, gid ``"iqr"``) and the animals (points, gid ``"data"``);
        the line at 1 (gid ``"one"``) is REINFORCE with baseline.

    Examples
    --------
    >>> ratios = pd.DataFrame({"subject": ["a", "b", "a", "b"], "k": [1, 1, 2, 2],
    ...                        "covariate": "stimulus", "ratio": [1.1, 1.3, 1.2, 1.6]})
    >>> ax = plot_reward_run_ratios(ratios)
    >>> [line.get_ydata().round(2).tolist() for line in ax.lines if line.get_gid() == "median"]
    [[1.2, 1.4]]
    """
    if ratios.empty:
        raise ValueError("no ratios to plot: no animal had both k-rewarded and k-unrewarded runs")
    covariate = ratios["covariate"].iloc[0] if covariate is None else covariate
    rows = ratios[ratios["covariate"] == covariate]
    if rows.empty:
        raise ValueError(f"no covariate {covariate!r}; have {list(ratios['covariate'].unique())}")
    ax = _axes(ax)
    groups = rows.groupby("rule", sort=False) if "rule" in rows else [(None, rows)]
    for i, (rule, group) in enumerate(groups):
        color = f"C{i}"
        q = group.groupby("k")["ratio"].quantile([0.25, 0.5, 0.75]).unstack()
        offset = 0.08 * (i - 0.5 * (len(groups) - 1)) if rule is not None else 0.0
        ax.scatter(group["k"] + offset, group["ratio"], s=8, color=color, alpha=0.35, gid="data")
        ax.fill_between(q.index, q[0.25], q[0.75], color=color, alpha=0.2, gid="iqr")
        ax.plot(q.index, q[0.5], "o-", color=color, gid="median",
                label=f"{rule}: median, IQR" if rule is not None else "median, IQR")
    ax.axhline(1.0, color="0.3", ls="--", lw=0.8, gid="one")
    ax.set_yscale("log")
    ax.set_xticks(sorted(rows["k"].unique()))
    ax.set_xlabel("run length k (previous trials of the session)")
    ax.set_ylabel("rate after k rewarded / after k unrewarded")
    ax.set_title(f"Δw {covariate}: larger steps after runs of rewards? (above 1: yes)", fontsize=9)
    ax.legend(fontsize=8)
    return ax


def plot_model_comparison(results: pd.DataFrame, metric: str = "loglik", ax=None):
    """Held-out score of each rule: one grey line per animal, black squares for the means.

    Parameters
    ----------
    results : pandas.DataFrame
        Output of :func:`~ibl_learnrules.evaluation.compare_rules` or
        :func:`~ibl_learnrules.evaluation.held_out_future`.
    metric : {"loglik", "bits", "accuracy"}
        Column to show; scores are averaged over seeds per animal first.
    ax : matplotlib.axes.Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
        Rules on x from worst to best mean; the line with gid ``"mean"`` holds the per-rule
        means of the per-animal scores, lines with gid ``"animal:<subject>"`` the animals.

    Examples
    --------
    >>> results = pd.DataFrame({"rule": ["a"] * 2 + ["b"] * 2, "subject": ["x", "y"] * 2,
    ...                         "loglik": [-0.5, -0.6, -0.65, -0.62]})
    >>> ax = plot_model_comparison(results)
    >>> [line.get_ydata().tolist() for line in ax.lines if line.get_gid() == "mean"]
    [[-0.635, -0.55]]
    """
    per_animal = results.groupby(["rule", "subject"])[metric].mean().unstack("rule")
    means = per_animal.mean().sort_values()
    order = list(means.index)
    ax = _axes(ax, (7.0, 4.0))
    x = np.arange(len(order))
    for subject, scores in per_animal[order].iterrows():
        ax.plot(x, scores.to_numpy(), "o-", color="0.6", alpha=0.5, ms=4, lw=0.8,
                gid=f"animal:{subject}")
    ax.plot(x, means.to_numpy(), "s", color="k", ms=8, gid="mean", label="mean over animals")
    chance = {"loglik": -_LN2, "bits": 0.0, "accuracy": 0.5}.get(metric)
    if chance is not None:
        ax.axhline(chance, color="0.4", ls=":", lw=0.8, label="chance", gid="chance")
    ax.set_xticks(x, order, rotation=30, ha="right")
    unit = {"loglik": "held-out log-likelihood (nats/trial)",
            "bits": "held-out information (bits/trial)", "accuracy": "held-out accuracy"}
    ax.set_ylabel(unit.get(metric, metric))
    ax.legend(fontsize=8)
    return ax


def plot_paired_differences(results: pd.DataFrame, reference: str, metric: str = "loglik",
                            ax=None):
    """Per-animal difference of each rule's held-out score from a reference rule.

    Differences are paired (same animal, scores averaged over seeds first), so differences
    of a few thousandths of a nat per trial that the spread between animals hides in
    :func:`plot_model_comparison` are visible here.

    Parameters
    ----------
    results : pandas.DataFrame
        Output of :func:`~ibl_learnrules.evaluation.compare_rules` or
        :func:`~ibl_learnrules.evaluation.held_out_future`.
    reference : str
        The rule every other rule is compared with (the zero line).
    metric : {"loglik", "bits", "accuracy"}
        Column compared.
    ax : matplotlib.axes.Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
        Rules on x from worst to best mean difference; points with gid ``"data"`` are the
        animals' differences (one collection per rule), the line with gid ``"mean"`` the mean
        differences, error bars (gid ``"ci"``) their 95 % t-intervals across animals, and each
        tick label says how many animals the rule beats the reference on.

    Examples
    --------
    >>> results = pd.DataFrame({"rule": ["a"] * 2 + ["b"] * 2, "subject": ["x", "y"] * 2,
    ...                         "loglik": [-0.500, -0.600, -0.502, -0.597]})
    >>> ax = plot_paired_differences(results, reference="a")
    >>> [line.get_ydata().round(4).tolist() for line in ax.lines if line.get_gid() == "mean"]
    [[0.0005]]
    """
    from scipy import stats

    per_animal = results.groupby(["rule", "subject"])[metric].mean().unstack("rule")
    if reference not in per_animal:
        raise ValueError(f"reference {reference!r} is not in the results: "
                         f"{sorted(per_animal.columns)}")
    others = [r for r in per_animal.columns if r != reference]
    if not others:
        raise ValueError("the results hold no rule besides the reference")
    diff = per_animal[others].sub(per_animal[reference], axis=0)
    means = diff.mean().sort_values()
    order = list(means.index)
    ax = _axes(ax, (7.0, 4.0))
    x = np.arange(len(order))
    rng = np.random.default_rng(0)  # horizontal jitter only, for legibility
    half_widths, labels = [], []
    for i, rule in enumerate(order):
        values = diff[rule].dropna().to_numpy()
        ax.scatter(i + rng.uniform(-0.12, 0.12, len(values)), values, s=14, color="0.55",
                   alpha=0.7, zorder=2, gid="data", label="animals" if i == 0 else None)
        n = len(values)
        sem = values.std(ddof=1) / math.sqrt(n) if n > 1 else np.nan
        half_widths.append(stats.t.ppf(0.975, n - 1) * sem if n > 1 else np.nan)
        labels.append(f"{rule}\n{int((values > 0).sum())}/{n} better")
    ax.errorbar(x, means.to_numpy(), yerr=np.asarray(half_widths), fmt="none", ecolor="k",
                capsize=4, lw=1.2, zorder=3, gid="ci")
    ax.plot(x, means.to_numpy(), "s", color="k", ms=7, zorder=4, gid="mean",
            label="mean (95% CI)")
    ax.axhline(0.0, color="0.3", ls="--", lw=0.8, gid="zero")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_xlim(-0.6, len(order) - 0.4)
    unit = {"loglik": "nats/trial", "bits": "bits/trial", "accuracy": "accuracy"}
    ax.set_ylabel(f"held-out {metric} - {reference} ({unit.get(metric, metric)})")
    ax.set_title(f"paired differences from {reference} (above 0: better)", fontsize=9)
    ax.legend(fontsize=8)
    return ax


def plot_learning_curve(trials: pd.DataFrame, p_right=None, ax=None):
    """Fraction correct per session of each animal, and of the model when given.

    Parameters
    ----------
    trials : pandas.DataFrame
        Trials table.
    p_right : array-like, optional
        The model's p(right) of each row (e.g. ``est.predict_proba(trials)[:, 1]``).
    ax : matplotlib.axes.Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
        Per animal, a line of the data (gid ``"data:<subject>"``) and, dashed, of the model
        (gid ``"model:<subject>"``) against the session number; see
        :func:`~ibl_learnrules.interpret.learning_curve`.

    Examples
    --------
    >>> from ibl_learnrules import load_ks014
    >>> ax = plot_learning_curve(load_ks014())
    >>> len(ax.lines[0].get_xdata())
    15
    """
    curve = learning_curve(trials, p_right)
    ax = _axes(ax)
    several = curve["subject"].nunique() > 1
    for subject, rows in curve.groupby("subject", sort=False):
        (line,) = ax.plot(rows["session_idx"], rows["p_correct"], "o-", ms=4,
                          label=f"{subject} data" if several else "data", gid=f"data:{subject}")
        if p_right is not None:
            ax.plot(rows["session_idx"], rows["p_correct_model"], "--", color=line.get_color(),
                    label=f"{subject} model" if several else "model", gid=f"model:{subject}")
    ax.axhline(0.5, color="0.6", ls=":", lw=0.8)
    shown = curve[[c for c in ("p_correct", "p_correct_model") if c in curve]].to_numpy()
    ax.set_ylim(min(0.3, np.nanmin(shown) - 0.03), 1.0)  # debiasing can push below chance
    ax.set_xlabel("session")
    ax.set_ylabel("p(correct)")
    ax.legend(fontsize=8)
    return ax


def plot_training_loss(estimator_or_history, ax=None):
    """Training (and validation) loss per epoch of a fitted estimator.

    Parameters
    ----------
    estimator_or_history : LearningRuleGLM or pandas.DataFrame
        A fitted estimator, or its ``history_`` (``epoch``, ``train_loss``, ``val_loss``).
    ax : matplotlib.axes.Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
        Lines with gid ``"train"`` and (when early stopping validated) ``"val"``.

    Examples
    --------
    >>> history = pd.DataFrame({"epoch": [0, 1], "train_loss": [0.69, 0.6],
    ...                         "val_loss": [float("nan")] * 2})
    >>> [line.get_gid() for line in plot_training_loss(history).lines]
    ['train']
    """
    history = getattr(estimator_or_history, "history_", estimator_or_history)
    ax = _axes(ax)
    ax.plot(history["epoch"], history["train_loss"], "o-", ms=3, label="train", gid="train")
    if "val_loss" in history and history["val_loss"].notna().any():
        ax.plot(history["epoch"], history["val_loss"], "o-", ms=3, label="validation",
                gid="val")
    best = getattr(estimator_or_history, "best_epoch_", -1)
    if best is not None and best >= 0:
        ax.axvline(best, color="0.6", ls=":", lw=0.8, label="best epoch")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (nats/trial)")
    ax.legend(fontsize=8)
    return ax


def plot_psychometric(curves: Psychometric, session: str | int | None = None,
                      subject: str | None = None, ax=None):
    """Psychometric curve of one session: data, model and their erf fits.

    Parameters
    ----------
    curves : Psychometric
        Output of :func:`~ibl_learnrules.interpret.psychometric_curves`.
    session : str or int, optional
        Session id, or its number within the animal (``session_idx``); the last by default.
    subject : str, optional
        Animal (needed when ``curves`` holds several).
    ax : matplotlib.axes.Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
        Points of the data (gid ``"data"``) and model (gid ``"model"``) against the signed
        contrast in %, fitted curves with gid ``"fit:data"`` / ``"fit:model"``.

    Examples
    --------
    >>> from ibl_learnrules import simulate_cohort
    >>> from ibl_learnrules.interpret import psychometric_curves
    >>> trials = simulate_cohort(1, n_sessions=1, random_state=0, alpha=0.05)
    >>> ax = plot_psychometric(psychometric_curves(trials))
    >>> [line.get_gid() for line in ax.lines][:2]
    ['data', 'fit:data']
    """
    import psychofit

    subject, points = _one_subject(curves.points, subject)
    if session is None:
        session = int(points["session_idx"].max())
    column = "session_idx" if isinstance(session, (int, np.integer)) else "session"
    points = points[points[column] == session]
    if points.empty:
        raise ValueError(f"no session {session!r} for {subject}")
    fits = curves.fits[(curves.fits["subject"].astype(str) == subject)
                       & (curves.fits[column] == session)]
    ax = _axes(ax)
    grid = np.linspace(-100.0, 100.0, 201)
    for source, column_p, style in (("data", "p_right", "o"), ("model", "p_right_model", "x")):
        if column_p not in points:
            continue
        (line,) = ax.plot(100.0 * points["contrast"], points[column_p], style, label=source,
                          gid=source)
        fit = fits[fits["source"] == source]
        if len(fit):
            pars = fit[["bias", "threshold", "lapse_left", "lapse_right"]].iloc[0].to_numpy()
            ax.plot(grid, psychofit.erf_psycho_2gammas(pars, grid), color=line.get_color(),
                    ls="-" if source == "data" else "--", gid=f"fit:{source}")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("signed contrast (%; right > 0)")
    ax.set_ylabel("p(right choice)")
    ax.set_title(f"{subject}, session {points['session_idx'].iloc[0]}")
    ax.legend(fontsize=8)
    return ax


def plot_twin_check(check, psychometric: tuple[str, ...] = ("bias", "threshold")):
    """Animals beside their twins: the panels of a closed-loop check.

    Parameters
    ----------
    check : TwinCheck
        Output of :func:`~ibl_learnrules.twins.check_twins`.
    psychometric : tuple of str
        Psychometric parameters drawn per session (``"bias"``, ``"threshold"``,
        ``"lapse_left"``, ``"lapse_right"``); skipped when the check has none.

    Returns
    -------
    matplotlib.figure.Figure
        Panels against the session number: easy-trial correct, each psychometric parameter
        and (free twins) the debiasing-trial fraction, each with the animals' mean (gid
        ``"animal"``), and per mode the twins' median (gid ``"median:<mode>"``) in their
        interval (a band, gid ``"band:<mode>"``); sessions to trained_1a per animal and twin
        (gid ``"trained:<mode>"``, ``"trained:animal"``); p(left choice) around block
        switches when the animals have them (gid ``"switch:<mode>:<to_block>"``).

    Examples
    --------
    >>> from ibl_learnrules import LearningRuleGLM, simulate_cohort
    >>> from ibl_learnrules.twins import check_twins
    >>> mice = simulate_cohort(1, "reinforce_baseline", n_sessions=1, random_state=0)
    >>> est = LearningRuleGLM(rule="reinforce_baseline", max_epochs=1).fit(mice)
    >>> fig = plot_twin_check(check_twins(est, mice, n_twins=2, psychometrics=False))
    >>> [ax.get_title() for ax in fig.axes][:2]
    ['easy-trial correct (contrast >= 0.5)', 'debiasing trials']
    """
    import matplotlib.pyplot as plt

    bands = check.bands
    present = set(bands.dropna(subset=["twins_median"])["metric"])
    metrics = ["easy_correct", "repeat_fraction"] + [m for m in psychometric if m in present]
    n_panels = len(metrics) + 1 + (not check.block_switch.empty)
    n_cols = min(3, n_panels)
    n_rows = math.ceil(n_panels / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.3 * n_cols, 3.4 * n_rows),
                             squeeze=False)
    axes = list(axes.ravel())
    for ax in axes[n_panels:]:
        ax.remove()
    titles = {"easy_correct": "easy-trial correct (contrast >= 0.5)",
              "repeat_fraction": "debiasing trials", "bias": "psychometric bias (%)",
              "threshold": "psychometric threshold (%)", "lapse_left": "lapse (left stimuli)",
              "lapse_right": "lapse (right stimuli)"}
    colours = {"free": "C1", "replay": "C2"}
    for ax, metric in zip(axes, metrics, strict=False):
        rows = bands[bands["metric"] == metric]
        for mode, band in rows.groupby("mode", sort=False):
            if metric == "repeat_fraction" and mode == "replay":
                continue  # replayed stimuli: the animals' own repeats
            ax.fill_between(band["session_idx"], band["twins_low"], band["twins_high"],
                            color=colours.get(mode), alpha=0.2, lw=0, gid=f"band:{mode}")
            ax.plot(band["session_idx"], band["twins_median"], "-", color=colours.get(mode),
                    label=f"{mode} twins", gid=f"median:{mode}")
        animal = rows.drop_duplicates("session_idx")
        ax.plot(animal["session_idx"], animal["animal"], "o-", color="k", ms=3,
                label="animal(s)", gid="animal")
        ax.set_title(titles.get(metric, metric), fontsize=9)
        ax.set_xlabel("session")
        ax.legend(fontsize=7)
    ax = axes[len(metrics)]
    subjects = check.subjects
    order = ["animal"] + [m for m in ("free", "replay") if m in set(subjects["mode"])]
    never = subjects["n_sessions"].max() + 1
    for i, mode in enumerate(order):
        values = subjects.loc[subjects["mode"] == mode, "sessions_to_trained"].fillna(never)
        jitter = np.random.default_rng(i).uniform(-0.15, 0.15, len(values))
        ax.scatter(i + jitter, values, s=14, color=colours.get(mode, "k"), gid=f"trained:{mode}")
    ax.axhline(never, color="0.6", ls=":", lw=0.8)
    ax.set_xticks(range(len(order)), order)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel(f"sessions to trained_1a ({never:g}: never)")
    ax.set_title("sessions to trained_1a", fontsize=9)
    if not check.block_switch.empty:
        ax = axes[len(metrics) + 1]
        styles = {"animal": ("k", "-"), "free": (colours["free"], "--"),
                  "replay": (colours["replay"], ":")}
        for (mode, to_block), curve in check.block_switch.groupby(["mode", "to_block"]):
            colour, ls = styles.get(mode, ("0.5", "-"))
            ax.plot(curve["trials_since_switch"], curve["p_left"], ls=ls, color=colour,
                    alpha=1.0 if to_block == 0.8 else 0.6, gid=f"switch:{mode}:{to_block:g}",
                    label=f"{mode}, to p(left) {to_block:g}")
        ax.axvline(0, color="0.6", ls=":", lw=0.8)
        ax.set_xlabel("trials since block switch")
        ax.set_ylabel("p(left choice)")
        ax.set_title("block switches (0 % contrast trials)", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig

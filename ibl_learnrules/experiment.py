"""The paper's experiment in one call: mice through ONE, held-out comparison, tests, figures.

Load the first ``n_trials`` training-protocol trials of a list of mice (chosen by name or by
lab) through ONE, cross-validate the fixed GLM, the classic rules and the DNN/RNN rules by
mouse (``GroupKFold``), test every flexible rule against every classic rule across the
held-out mice, and write the table, a text report, a JSON summary and two figures.

Against the IBL public database (downloads the trials of each mouse into ONE's cache)::

    from one.api import ONE
    one = ONE(base_url="https://openalyx.internationalbrainlab.org",
              password="international", silent=True)
    result = run_paper_experiment(one, labs=["cortexlab"], out="paper_experiment")
    print(result.report)

The same call reads a local ONE cache (``ONE(cache_dir=..., mode="local")``).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .evaluation import compare_rules, paired_test, summarize
from .io.files import atomic_write
from .io.one import load_subject_trials
from .trials import validate_trials

__all__ = [
    "PAPER_RULES",
    "FLEXIBLE_RULES",
    "ExperimentResult",
    "find_subjects",
    "load_first_trials",
    "flexible_vs_classic",
    "run_paper_experiment",
]

#: The rules of the paper's comparison: fixed GLM, two classic rules, the two network rules.
PAPER_RULES = ("none", "reinforce", "reinforce_baseline", "dnn", "rnn")
#: Rules tested against every other (classic) rule of the comparison.
FLEXIBLE_RULES = ("dnn", "rnn")
#: Significance level of the verdict lines of the report.
ALPHA = 0.05


@dataclass
class ExperimentResult:
    """What :func:`run_paper_experiment` returns.

    Attributes
    ----------
    results : pandas.DataFrame
        Tidy table of :func:`~ibl_learnrules.evaluation.compare_rules`: one row per (rule,
        seed, held-out mouse).
    tests : pandas.DataFrame
        One row per (flexible, classic) pair: :func:`flexible_vs_classic`.
    report : str
        The text report (also ``report.txt``).
    trials : pandas.DataFrame
        The trials compared (validated trials table of the kept mice).
    trials_per_subject : pandas.Series
        Trials used per mouse (index: subject), in the order of the comparison.
    short : list of str
        Mice kept with fewer than ``n_trials`` trials.
    dropped : list of str
        Mice left out (fewer than ``min_trials`` trials, or no readable training session).
    reference : str or None
        The rule the paired-difference figure is drawn against.
    settings : dict
        The arguments of the run (JSON-serialisable).
    figures : dict of str to matplotlib.figure.Figure
        ``"model_comparison"`` and ``"paired_differences"`` (open figures: close them when
        done).
    files : dict of str to pathlib.Path
        Files written into ``out`` (empty without ``out``).
    """

    results: pd.DataFrame
    tests: pd.DataFrame
    report: str
    trials: pd.DataFrame
    trials_per_subject: pd.Series
    short: list[str]
    dropped: list[str]
    reference: str | None
    settings: dict[str, Any]
    figures: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable summary: settings, mice, mean scores per rule and the tests."""
        means = summarize(self.results)
        return _jsonable({
            "settings": self.settings,
            "subjects": {str(k): int(v) for k, v in self.trials_per_subject.items()},
            "short": self.short,
            "dropped": self.dropped,
            "rules": {rule: row.to_dict() for rule, row in means.iterrows()},
            "tests": self.tests.to_dict(orient="records"),
            "reference": self.reference,
            "files": {k: str(v) for k, v in self.files.items()},
        })


def _jsonable(value):
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _as_list(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def find_subjects(one, subjects: str | Sequence[str] | None = None,
                  labs: str | Sequence[str] | None = None,
                  protocols: str | Sequence[str] | None = None) -> list[str]:
    """Mice named by ``subjects``, or all mice with a session in one of ``labs``.

    Parameters
    ----------
    one : one.api.One
        A ONE instance (local cache or database).
    subjects : str or sequence of str, optional
        Exact subject names; each must have at least one session.
    labs : str or sequence of str, optional
        Exact lab names (``one.search(lab=...)`` matches partially; partial matches are
        dropped). Used only without ``subjects``.
    protocols : str or sequence of str, optional
        With ``labs`` and one protocol: the mice with a session of that protocol (all mice
        of the labs where the cache records no protocol).

    Returns
    -------
    list of str
        Subject names, in the order given, or sorted for ``labs``.

    Raises
    ------
    ValueError
        If neither ``subjects`` nor ``labs`` is given, if a named subject has no session, or
        if the labs have no mouse.

    Examples
    --------
    >>> import tempfile
    >>> from one.api import ONE
    >>> from ibl_learnrules import simulate_cohort
    >>> from ibl_learnrules.io.one import write_one_cache
    >>> cohort = simulate_cohort(2, n_trials=100, random_state=0)
    >>> one = ONE(cache_dir=write_one_cache(cohort, tempfile.mkdtemp()), mode="local")
    >>> find_subjects(one, labs="simlab")
    ['sim000', 'sim001']
    """
    names, lab_names = _as_list(subjects), _as_list(labs)
    if names:
        unknown = []
        for name in names:
            _, details = one.search(subject=name, details=True)
            # one.search matches partially ("KS014" also finds "KS0140")
            if not any((info or {}).get("subject") == name for info in details or []):
                unknown.append(name)
        if unknown:
            raise ValueError(f"ONE found no session of subject(s) {', '.join(unknown)}")
        return list(dict.fromkeys(names))
    if not lab_names:
        raise ValueError("choose the mice: give subjects (names) or labs")
    protocols = _as_list(protocols)
    found: set[str] = set()
    for lab in lab_names:
        details = []
        if len(protocols) == 1:  # fewer sessions to page through on a database
            _, details = one.search(lab=lab, task_protocol=protocols[0], details=True)
        if not details:  # or a cache that records no protocol
            _, details = one.search(lab=lab, details=True)
        # one.search matches lab names partially on a local cache: keep exact matches
        found.update(str(info["subject"]) for info in details or []
                     if info and info.get("lab", lab) == lab and info.get("subject"))
    if not found:
        raise ValueError(f"ONE found no mouse in lab(s) {', '.join(lab_names)}")
    return sorted(found)


def load_first_trials(
    one,
    subjects: Sequence[str],
    n_trials: int = 10_000,
    min_trials: int | None = None,
    protocols: Sequence[str] = ("training",),
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Load the first ``n_trials`` trials of each mouse's training-protocol sessions.

    Mice with fewer than ``n_trials`` trials are kept, with one warning naming them; mice
    with fewer than ``min_trials`` trials, or without a readable session of these protocols,
    are dropped, with one warning naming them.

    Parameters
    ----------
    one : one.api.One
        A ONE instance.
    subjects : sequence of str
        Exact subject names.
    n_trials : int
        Trials per mouse, from its first session of these protocols on (the paper: 10,000).
    min_trials : int, optional
        Fewest trials a mouse needs to be kept; default ``n_trials // 10`` (1,000 in the
        paper's setting: about two sessions).
    protocols : sequence of str
        Keep sessions whose ``task_protocol`` contains one of these strings (sessions of a
        cache that records no protocol are kept, with one warning for all mice).

    Returns
    -------
    trials : pandas.DataFrame
        Validated trials table of the kept mice.
    short : list of str
        Kept mice with fewer than ``n_trials`` trials.
    dropped : list of str
        Mice left out.

    Examples
    --------
    >>> import tempfile
    >>> from one.api import ONE
    >>> from ibl_learnrules import simulate_cohort
    >>> from ibl_learnrules.io.one import write_one_cache
    >>> cohort = simulate_cohort(2, n_trials=200, random_state=0)
    >>> one = ONE(cache_dir=write_one_cache(cohort, tempfile.mkdtemp()), mode="local")
    >>> trials, short, dropped = load_first_trials(one, ["sim000", "sim001"], n_trials=150,
    ...                                            protocols=())
    >>> trials.groupby("subject").size().tolist(), short, dropped
    ([150, 150], [], [])
    """
    if n_trials < 1:
        raise ValueError(f"n_trials must be a positive integer, got {n_trials}")
    min_trials = max(1, n_trials // 10) if min_trials is None else int(min_trials)
    tables, short, dropped, no_protocol = [], [], [], []
    short_names, dropped_names = [], []
    for subject in subjects:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                table = load_subject_trials(one, subject, protocols=list(protocols) or None,
                                            max_trials=n_trials)
            except ValueError as err:
                table = None
                dropped.append(f"{subject} ({err})")
                dropped_names.append(subject)
        for w in caught:
            if "have no task_protocol" in str(w.message):
                no_protocol.append(subject)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if table is None:
            continue
        if len(table) < min_trials:
            dropped.append(f"{subject} ({len(table)} trials < min_trials={min_trials})")
            dropped_names.append(subject)
            continue
        if len(table) < n_trials:
            short.append(f"{subject} ({len(table)})")
            short_names.append(subject)
        tables.append(table)
    if no_protocol:
        warnings.warn(f"{len(no_protocol)} mouse/mice ({', '.join(no_protocol)}) have sessions "
                      "without a task_protocol in this ONE cache: kept whatever their protocol",
                      stacklevel=2)
    if short:
        warnings.warn(f"{len(short)} mouse/mice have fewer than {n_trials} trials and are kept "
                      f"with all they have: {', '.join(short)}", stacklevel=2)
    if dropped:
        warnings.warn(f"{len(dropped)} mouse/mice left out: {'; '.join(dropped)}", stacklevel=2)
    if not tables:
        raise ValueError(f"no mouse has {min_trials} or more trials of protocol(s) "
                         f"{list(protocols)}: {'; '.join(dropped)}")
    trials = validate_trials(pd.concat(tables, ignore_index=True)).reset_index(drop=True)
    return trials, short_names, dropped_names


def flexible_vs_classic(results: pd.DataFrame, flexible: Sequence[str] = FLEXIBLE_RULES,
                        metric: str = "loglik") -> pd.DataFrame:
    """Paired one-sided tests of every flexible rule against every other rule of ``results``.

    Parameters
    ----------
    results : pandas.DataFrame
        Output of :func:`~ibl_learnrules.evaluation.compare_rules`.
    flexible : sequence of str
        The rules under test (those absent from ``results`` are skipped); every other rule
        of ``results`` is a classic rule they are tested against.
    metric : str
        Column compared.

    Returns
    -------
    pandas.DataFrame
        One row per pair: ``flexible``, ``classic`` and the fields of
        :func:`~ibl_learnrules.evaluation.paired_test` (``mean_diff`` is flexible minus
        classic; p-values are for "flexible scores higher").

    Examples
    --------
    >>> results = pd.DataFrame({"rule": ["dnn"] * 3 + ["none"] * 3,
    ...                         "subject": list("xyz") * 2,
    ...                         "loglik": [-0.5, -0.4, -0.45, -0.6, -0.5, -0.52]})
    >>> flexible_vs_classic(results)[["flexible", "classic", "n_a_better"]].values.tolist()
    [['dnn', 'none', 3]]
    """
    present = list(dict.fromkeys(results["rule"]))
    flex = [r for r in flexible if r in present]
    classic = [r for r in present if r not in flex]
    rows = []
    for a in flex:
        for b in classic:
            test = paired_test(results, a, b, metric=metric)
            rows.append({"flexible": a, "classic": b, **test.to_dict()})
    columns = ["flexible", "classic", "n_animals", "mean_a", "mean_b", "mean_diff",
               "n_a_better", "wilcoxon_p", "ttest_p"]
    table = pd.DataFrame(rows, columns=columns)
    for column in ("n_animals", "n_a_better"):
        table[column] = table[column].astype(int)
    return table


class _Splits:
    """A splitter that replays given (train, test) index pairs (for one fold at a time)."""

    def __init__(self, splits):
        self.splits = list(splits)

    def split(self, X=None, y=None, groups=None):  # noqa: N803 - scikit-learn's signature
        yield from self.splits

    def get_n_splits(self, X=None, y=None, groups=None):  # noqa: N803
        return len(self.splits)


def _report(result: ExperimentResult, n_trials: int, n_folds: int, seeds) -> str:
    counts = result.trials_per_subject
    lines = [
        f"The paper's experiment: {len(counts)} mice, first {n_trials} training trials each "
        f"(median {int(counts.median())}); held-out mice, GroupKFold({n_folds}), "
        f"seed(s) {', '.join(str(s) for s in seeds)}",
        "mice: " + ", ".join(f"{s} ({n})" for s, n in counts.items()),
    ]
    if result.short:
        lines.append(f"fewer than {n_trials} trials (kept): {', '.join(result.short)}")
    if result.dropped:
        lines.append(f"left out: {', '.join(result.dropped)}")
    lines += ["", "held-out score per rule (mean over mice):",
              summarize(result.results).round(4).to_string(), ""]
    if result.tests.empty:
        lines.append("no flexible-vs-classic pair among the rules compared")
        return "\n".join(lines)
    lines.append("flexible vs classic rules, one-sided paired tests across held-out mice:")
    for row in result.tests.itertuples():
        lines.append(f"{row.flexible} > {row.classic}: {row.mean_diff:+.4f} nats/trial, "
                     f"{row.n_a_better}/{row.n_animals} mice, Wilcoxon p = {row.wilcoxon_p:.3g}, "
                     f"t-test p = {row.ttest_p:.3g}")
    lines.append("")
    for rule, rows in result.tests.groupby("flexible", sort=False):
        wins = (rows["wilcoxon_p"] < ALPHA).to_numpy()
        beaten, not_beaten = rows["classic"][wins].tolist(), rows["classic"][~wins].tolist()
        verdict = ("beats every classic rule" if not not_beaten else
                   "beats no classic rule" if not beaten else
                   f"beats {', '.join(beaten)}; does not beat {', '.join(not_beaten)}")
        lines.append(f"verdict: {rule} {verdict} (one-sided Wilcoxon p < {ALPHA})")
    return "\n".join(lines)


def _default_reference(results: pd.DataFrame, flexible: Sequence[str]) -> str | None:
    means = summarize(results)["loglik"]
    classic = [r for r in means.index if r not in flexible]
    if classic:
        return str(classic[0])  # the best classic rule: what the flexible rules must beat
    return str(means.index[0]) if len(means) > 1 else None


def run_paper_experiment(
    one,
    subjects: str | Sequence[str] | None = None,
    labs: str | Sequence[str] | None = None,
    n_trials: int = 10_000,
    rules: Sequence[str] = PAPER_RULES,
    n_folds: int = 5,
    seeds: Sequence[int] = (0,),
    estimator_params: Mapping | None = None,
    out: str | Path | None = None,
    n_jobs: int | None = None,
    progress: bool = True,
    *,
    min_trials: int | None = None,
    protocols: Sequence[str] = ("training",),
    flexible: Sequence[str] = FLEXIBLE_RULES,
    reference: str | None = None,
) -> ExperimentResult:
    """Run the paper's held-out-mouse comparison of learning rules on mice loaded via ONE.

    Steps: :func:`find_subjects` (by name or lab), :func:`load_first_trials` (the first
    ``n_trials`` training trials of each mouse), :func:`~ibl_learnrules.evaluation.
    compare_rules` with ``GroupKFold(n_folds)`` by mouse, :func:`flexible_vs_classic`, a
    text report and two figures (:func:`~ibl_learnrules.plotting.plot_model_comparison`
    and :func:`~ibl_learnrules.plotting.plot_paired_differences`).

    Parameters
    ----------
    one : one.api.One
        A ONE instance: a local cache or the IBL database.
    subjects : str or sequence of str, optional
        Mice by exact name.
    labs : str or sequence of str, optional
        All mice of these labs (used only without ``subjects``).
    n_trials : int
        Trials per mouse (the paper: the first 10,000).
    rules : sequence of str
        Rules compared (default :data:`PAPER_RULES`).
    n_folds : int
        ``GroupKFold`` folds by mouse; needs at least ``n_folds`` mice.
    seeds : sequence of int
        ``random_state`` of each repeat of the comparison.
    estimator_params : dict, optional
        Keyword arguments of every :class:`~ibl_learnrules.LearningRuleGLM` (e.g.
        ``{"max_epochs": 50}``); package defaults otherwise.
    out : str or Path, optional
        Folder to write ``results.csv``, ``tests.csv``, ``report.txt``, ``summary.json``,
        ``model_comparison.png`` and ``paired_differences.png`` into (each atomically).
    n_jobs : int, optional
        Fits run at once through joblib (per rule, over folds and seeds).
    progress : bool
        Show a tqdm bar over rules and folds.
    min_trials : int, optional
        Fewest trials a mouse needs (default ``n_trials // 10``); see
        :func:`load_first_trials`.
    protocols : sequence of str
        Task protocols whose sessions are used (default training sessions).
    flexible : sequence of str
        Rules tested against every other rule (default :data:`FLEXIBLE_RULES`).
    reference : str, optional
        Rule of the paired-difference figure; default: the classic rule with the best mean
        held-out log-likelihood (the one the flexible rules must beat).

    Returns
    -------
    ExperimentResult

    Raises
    ------
    ValueError
        No mice chosen, an unknown subject or rule, a lab without mice, or fewer usable
        mice than ``n_folds``.

    Examples
    --------
    With internet (not run here; see the module docstring for the ONE instance)::

        result = run_paper_experiment(one, subjects=["KS014", "CSHL_002", ...], out="exp")
        print(result.report)

    On a local ONE cache:

    >>> import tempfile
    >>> from one.api import ONE
    >>> from ibl_learnrules import simulate_cohort
    >>> from ibl_learnrules.io.one import write_one_cache
    >>> cohort = simulate_cohort(3, n_trials=200, random_state=0)
    >>> one = ONE(cache_dir=write_one_cache(cohort, tempfile.mkdtemp()), mode="local")
    >>> result = run_paper_experiment(one, labs="simlab", n_trials=150, rules=["none", "dnn"],
    ...                               n_folds=3, estimator_params={"max_epochs": 1},
    ...                               progress=False, protocols=())
    >>> len(result.results), result.tests[["flexible", "classic"]].values.tolist()
    (6, [['dnn', 'none']])
    """
    from sklearn.model_selection import GroupKFold

    from .rules import available_rules

    rules = list(dict.fromkeys(_as_list(rules)))
    if not rules:
        raise ValueError("give at least one rule")
    unknown = [r for r in rules if r not in available_rules()]
    if unknown:
        raise ValueError(f"unknown rule(s) {unknown}; available: {available_rules()}")
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    seeds = [int(s) for s in seeds]
    names = find_subjects(one, subjects, labs, protocols)
    trials, short, dropped = load_first_trials(one, names, n_trials, min_trials, protocols)
    counts = trials.groupby("subject", sort=False).size()
    if len(counts) < n_folds:
        raise ValueError(f"{n_folds}-fold cross-validation by mouse needs at least {n_folds} "
                         f"mice, {len(counts)} usable: {', '.join(counts.index)}")

    params = dict(estimator_params or {})
    params.setdefault("verbose", 0)
    splits = list(GroupKFold(n_splits=n_folds).split(trials, groups=trials["subject"]))
    # one fit per (rule, fold) in a serial run, so the bar moves per fit; each fit is seeded,
    # so the table is the one a single compare_rules call returns
    per_fold = n_jobs in (None, 1)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(rules) * n_folds, desc="rules x folds", unit="fit")
    tables = []
    try:
        for rule in rules:
            if bar is not None:
                bar.set_postfix(rule=rule)
            chunks = ([(fold, [split]) for fold, split in enumerate(splits)] if per_fold
                      else [(0, splits)])
            for first_fold, chunk in chunks:
                table = compare_rules(trials, [rule], cv=_Splits(chunk), seeds=seeds,
                                      estimator_params=params, n_jobs=n_jobs)
                table["fold"] += first_fold
                tables.append(table)
                if bar is not None:
                    bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    results = pd.concat(tables, ignore_index=True)

    tests = flexible_vs_classic(results, flexible)
    if reference is None:
        reference = _default_reference(results, flexible)
    elif reference not in rules:
        raise ValueError(f"reference {reference!r} is not among the rules {rules}")
    settings = {"subjects": subjects if subjects is None else _as_list(subjects),
                "labs": labs if labs is None else _as_list(labs), "n_trials": n_trials,
                "min_trials": max(1, n_trials // 10) if min_trials is None else min_trials,
                "rules": rules, "n_folds": n_folds, "seeds": seeds,
                "estimator_params": {k: v for k, v in params.items() if k != "verbose"},
                "protocols": list(protocols), "flexible": list(flexible)}
    result = ExperimentResult(results=results, tests=tests, report="", trials=trials,
                              trials_per_subject=counts, short=short, dropped=dropped,
                              reference=reference, settings=_jsonable(settings))
    result.report = _report(result, n_trials, n_folds, seeds)
    result.figures = _figures(results, reference)
    if out is not None:
        result.files = _write(result, Path(out))
    return result


def _figures(results: pd.DataFrame, reference: str | None) -> dict[str, Any]:
    from .plotting import plot_model_comparison, plot_paired_differences

    figures = {"model_comparison": plot_model_comparison(results).figure}
    if reference is not None and results["rule"].nunique() > 1:
        figures["paired_differences"] = plot_paired_differences(results, reference).figure
    return figures


def _write(result: ExperimentResult, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "results": atomic_write(out / "results.csv",
                                lambda tmp: result.results.to_csv(tmp, index=False)),
        "tests": atomic_write(out / "tests.csv",
                              lambda tmp: result.tests.to_csv(tmp, index=False)),
        "report": atomic_write(out / "report.txt",
                               lambda tmp: tmp.write_text(result.report + "\n")),
    }
    for name, figure in result.figures.items():
        files[name] = atomic_write(out / f"{name}.png",
                                   lambda tmp, fig=figure: fig.savefig(tmp, dpi=120,
                                                                       bbox_inches="tight"))
    files["summary"] = out / "summary.json"
    result.files = files  # the summary lists every file, itself included
    summary = result.summary()
    atomic_write(files["summary"], lambda tmp: tmp.write_text(json.dumps(summary, indent=2)))
    return files

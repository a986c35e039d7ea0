"""The main job: compare learning rules on real mice, the bundled KS014 and a simulated cohort.

``ibl-learnrules demo --out DIR`` runs :func:`run_demo`: it fits the fixed GLM, the classic
rules and the DNN/RNN rules, prints the held-out comparison tables (held-out real mice from
the 27 bundled IBL mice, with the verdict of the flexible rules against REINFORCE with
baseline; held-out animals of a simulated cohort; held-out later sessions of KS014), and writes
figures, fitted models, KS014's sessions as NWB files carrying the fitted rule's results, and a
JSON summary into ``DIR``.
"""

from __future__ import annotations

import json
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sklearn.model_selection import GroupKFold

from .datasets import IBL_MICE_ATTRIBUTION, KS014_ATTRIBUTION, load_ibl_mice, load_ks014
from .estimator import LearningRuleGLM
from .evaluation import (
    compare_rules,
    comparison_report,
    held_out_future,
    paired_test,
    summarize,
)
from .interpret import reward_run_ratios
from .io.files import write_figure, write_table, write_text
from .io.model_file import save_model
from .simulate import simulate_cohort
from .twins import check_twins

__all__ = ["DemoSizes", "run_demo"]

CLASSIC = ["none", "reinforce", "reinforce_baseline", "reward_max", "prediction_error",
           "q_learning"]
NETWORKS = ["dnn", "rnn"]


@dataclass(frozen=True)
class DemoSizes:
    """How much work the demo does (the defaults finish in a few minutes on 2 CPU cores)."""

    n_animals: int = 8
    n_trials: int = 1000
    folds: int = 4
    classic_epochs: int = 10
    network_epochs: int = 60
    ks014_train_sessions: int = 10
    # REINFORCE alone and the fixed GLM on the real mice are left to the simulated cohort and
    # to KS014 respectively: the held-out folds on the real mice are half the demo's time
    ks014_rules: tuple[str, ...] = ("none", "reinforce_baseline", "reinforce_baseline_leak",
                                    "dnn", "rnn")
    twin_rules: tuple[str, ...] = ("reinforce_baseline", "dnn", "rnn")  # KS014 twins of these
    nwb_sessions: int | None = None  # KS014 sessions written as NWB files (None: all)
    real_sessions: int = 2  # first biased sessions of each bundled mouse
    real_mice: int | None = None  # how many of the 27 (None: all)
    real_trials: int | None = None  # at most this many trials per mouse (None: all)
    real_folds: int = 5
    real_rules: tuple[str, ...] = ("reinforce_baseline", "reinforce_baseline_leak", "dnn", "rnn")
    real_epochs: int | None = None  # fits on real data (27 mice, KS014); None: defaults
    reward_run_ks: tuple[int, ...] = (1, 2, 3, 4, 5)  # run lengths of the reward-run claim
    n_twins: int = 20  # free-running twins of each KS014 model
    # sessions each twin runs: KS014 reaches trained_1a in its 14th of 15, so with 15 a twin
    # that trains in the 16th would count as never trained (None: as many as KS014's)
    twin_sessions: int | None = 25


QUICK = DemoSizes(n_animals=4, n_trials=300, folds=2, classic_epochs=1, network_epochs=2,
                  ks014_train_sessions=2, ks014_rules=("none", "dnn"), nwb_sessions=2,
                  real_sessions=1, real_mice=6, real_trials=300, real_folds=3, real_epochs=2,
                  reward_run_ks=(1, 2), n_twins=2, twin_sessions=16)
#: The classic rule the flexible ones must beat on real mice.
REFERENCE = "reinforce_baseline"
#: The same with forgetting: the flexible rules are compared with it too.
LEAK = "reinforce_baseline_leak"


def _params(rule: str, sizes: DemoSizes) -> dict:
    network = rule in NETWORKS
    return {"max_epochs": sizes.network_epochs if network else sizes.classic_epochs,
            "lr": 0.01 if network else 0.05, "tbptt": 250, "random_state": 0}


def _default_params(sizes: DemoSizes) -> dict:
    """Return the package defaults (with a seed), unless the sizes shorten training."""
    params = {"random_state": 0}
    if sizes.real_epochs is not None:
        params["max_epochs"] = sizes.real_epochs
    return params


def _load_real_mice(sizes: DemoSizes) -> pd.DataFrame:
    trials = load_ibl_mice("biased", max_sessions=sizes.real_sessions)
    if sizes.real_mice is not None:
        keep = sorted(trials["subject"].unique())[:sizes.real_mice]
        trials = trials[trials["subject"].isin(keep)]
    if sizes.real_trials is not None:
        trials = trials.groupby("subject").head(sizes.real_trials)
    return trials


def _verdict(table: pd.DataFrame, rule: str, reference: str) -> dict:
    """Paired test of ``rule`` against ``reference``; ``wins``: better on average, p < 0.05."""
    test = paired_test(table, rule, reference).to_dict()
    return dict(test, wins=bool(test["mean_diff"] > 0 and test["wilcoxon_p"] < 0.05))


def _real_mice(trials: pd.DataFrame, sizes: DemoSizes,
               report: Callable[[str], None]) -> tuple[pd.DataFrame, dict]:
    """Held-out comparison on the bundled IBL mice' first biased sessions, and the verdict."""
    params = _default_params(sizes)
    n_nogo = int((trials["choice"] == 0).sum())
    report(f"real mice: {trials['subject'].nunique()} IBL mice, first {sizes.real_sessions} "
           f"biased session(s), {len(trials):,} trials ({n_nogo} no-go, left out of the "
           "likelihood); package defaults")
    tables = []
    for rule in sizes.real_rules:
        report(f"held-out real mice: fitting {rule}")
        with warnings.catch_warnings():  # said once above, not once per fit and fold
            warnings.filterwarnings("ignore", message=r".*no-go trial", category=UserWarning)
            tables.append(compare_rules(trials, {rule: LearningRuleGLM(rule=rule, **params)},
                                        cv=GroupKFold(sizes.real_folds)))
    table = pd.concat(tables, ignore_index=True)
    report("\nReal IBL mice, held out by mouse (biased sessions):")
    report(summarize(table).round(4).to_string())
    verdicts = {}
    for rule in (r for r in NETWORKS if r in sizes.real_rules):
        verdicts[rule] = verdict = _verdict(table, rule, REFERENCE)
        report(f"verdict: {rule} {'beats' if verdict['wins'] else 'does not beat'} {REFERENCE} "
               f"on held-out mice: {verdict['mean_diff']:+.4f} nats/trial, "
               f"{int(verdict['n_a_better'])}/{int(verdict['n_animals'])} mice better, "
               f"one-sided Wilcoxon p = {verdict['wilcoxon_p']:.3g}")
        if LEAK in sizes.real_rules:
            verdict["against_leak"] = leak = _verdict(table, rule, LEAK)
            report(f"  and {'beats' if leak['wins'] else 'does not beat'} {LEAK} (with "
                   f"forgetting): {leak['mean_diff']:+.4f} nats/trial, "
                   f"{int(leak['n_a_better'])}/{int(leak['n_animals'])} mice better, "
                   f"p = {leak['wilcoxon_p']:.3g}")
    return table, verdicts


def _reward_runs(trials: pd.DataFrame, sizes: DemoSizes,
                 report: Callable[[str], None]) -> pd.DataFrame:
    """Measure the third claim on the real mice: larger steps after runs of rewards."""
    report("\nreward runs: fitting dnn and rnn on all the real mice")
    tables = []
    for rule in NETWORKS:
        with warnings.catch_warnings():  # the no-go trials were reported above
            warnings.filterwarnings("ignore", message=r".*no-go trial", category=UserWarning)
            est = LearningRuleGLM(rule=rule, **_default_params(sizes)).fit(trials)
            ratios = reward_run_ratios(est, trials, ks=sizes.reward_run_ks)
        tables.append(ratios.assign(rule=rule))
    ratios = pd.concat(tables, ignore_index=True)
    report("Step after k rewarded over after k unrewarded trials (rewarded trials only; 1 = "
           "REINFORCE with baseline), median across mice [mice above 1]:")
    for (rule, name), group in ratios.groupby(["rule", "covariate"], sort=False):
        cells = [f"k={k}: {g['ratio'].median():.2f} [{int((g['ratio'] > 1).sum())}/{len(g)}]"
                 for k, g in group.groupby("k")]
        report(f"  {rule:<4} {name:<9} " + ", ".join(cells))
    return ratios


def _ks014_twins(fitted: dict, ks014: pd.DataFrame, sizes: DemoSizes,
                 report: Callable[[str], None]) -> dict:
    """Free-running twins of each rule fitted on KS014, beside the mouse."""
    checks = {}
    length = ("" if sizes.twin_sessions is None
              else f" for {sizes.twin_sessions} sessions (curves compared over KS014's)")
    report(f"\nKS014's twins: {sizes.n_twins} free-running twins per rule under the training "
           f"protocol{length}, beside the mouse")
    for rule, est in fitted.items():
        check = check_twins(est, ks014, n_twins=sizes.n_twins, random_state=0,
                            modes=("free",), psychometrics=False,
                            free_sessions=sizes.twin_sessions)
        row = check.summary.set_index("metric")
        trained, easy = row.loc["sessions_to_trained"], row.loc["easy_correct"]
        median = ("never" if pd.isna(trained["twins_median"])
                  else f"{trained['twins_median']:g}")
        mouse = "never" if pd.isna(trained["animal"]) else f"{trained['animal']:g}"
        report(f"  {rule:<18s} sessions to trained_1a: twins' median {median} (KS014 "
               f"{mouse}; {int(trained['not_reached'])}/{sizes.n_twins} never), easy-trial "
               f"correct RMS vs KS014 {easy['rms']:.3f}")
        checks[rule] = check
    return checks


def _figures(out: Path, cohort_table, ks014_table, ks014_model, ks014,
             real_table, ratios, twin_checks) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # the demo only writes files; no display needed
    import matplotlib.pyplot as plt

    from .plotting import (
        plot_learning_curve,
        plot_model_comparison,
        plot_paired_differences,
        plot_reward_run_ratios,
        plot_twin_check,
        plot_weight_trajectory,
    )
    from .stages import training_status

    def save(fig, name: str) -> Path:
        fig.tight_layout()
        write_figure(fig, out / name, dpi=120)
        plt.close(fig)
        return out / name

    paths = []
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    plot_model_comparison(real_table, ax=left)
    left.set_title("Real IBL mice: held-out mice")
    # the floor's large gap would squash the few thousandths that separate the others
    plot_paired_differences(real_table[real_table["rule"] != "none"], REFERENCE, ax=right)
    right.set_title(f"Paired difference from {REFERENCE}, per mouse")
    paths.append(save(fig, "real_mice_comparison.png"))

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, name in zip(axes, ("stimulus", "bias"), strict=True):
        plot_reward_run_ratios(ratios, covariate=name, ax=ax)
    paths.append(save(fig, "real_mice_reward_runs.png"))

    for rule, check in twin_checks.items():
        fig = plot_twin_check(check)
        fig.suptitle(f"KS014 and the free-running twins of its fitted {rule} rule")
        paths.append(save(fig, f"ks014_twins_{rule}.png"))

    fig, ax = plt.subplots(figsize=(7, 4))
    plot_model_comparison(cohort_table, ax=ax)
    ax.set_title("Simulated cohort: held-out animals")
    paths.append(save(fig, "cohort_comparison.png"))

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), height_ratios=[3, 2])
    traj = ks014_model.predict_trajectory(ks014)  # also holds p(right): one rollout for both
    plot_weight_trajectory(traj, stages=training_status(ks014), ax=top)
    top.set_title(f"KS014: weights under the fitted {ks014_model.rule} rule")
    plot_learning_curve(ks014, traj.loc[ks014.index, "p_right"].to_numpy(), ax=bottom)
    bottom.set_title("KS014: fraction correct per session, mouse and model (teacher-forced)")
    paths.append(save(fig, "ks014_weights.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    plot_model_comparison(ks014_table, ax=ax)
    ax.set_ylabel("log-likelihood on later sessions (nats/trial)")
    ax.set_title("KS014: held-out later sessions")
    paths.append(save(fig, "ks014_future.png"))
    return paths


def _write_nwb(folder: Path, ks014, model, comparison, n_sessions: int | None) -> list[Path]:
    """Write KS014's sessions as NWB files and append the model's results to each."""
    from .io.nwb import trials_to_nwb, write_results

    keep = sorted(ks014["session_idx"].unique())[:n_sessions]
    sessions = ks014[ks014["session_idx"].isin(keep)]
    paths = trials_to_nwb(sessions, folder, overwrite=True, subject_metadata={
        "description": "IBL mouse KS014 (cortexlab); " + KS014_ATTRIBUTION})
    for i, path in enumerate(paths):
        # the whole history: each session's slice continues the weights of the one before
        write_results(path, model, trials=ks014,
                      comparison=comparison if i == len(paths) - 1 else None)
    return paths


def run_demo(out_dir: str | Path, sizes: DemoSizes = DemoSizes(),
             report: Callable[[str], None] = print) -> dict:
    """Run the demo and write its outputs into ``out_dir``; return the JSON summary.

    Parameters
    ----------
    out_dir : str or Path
        Folder for figures (PNG), fitted models (``.pt``), NWB session files with results
        (``nwb/``) and ``summary.json``.
    sizes : DemoSizes
        Amount of work; ``ibl_learnrules.demo.QUICK`` is a seconds-long smoke run.
    report : callable
        Receives the progress lines and tables (``print`` by default).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rules = CLASSIC + NETWORKS
    real_trials = _load_real_mice(sizes)
    real_table, verdicts = _real_mice(real_trials, sizes, report)
    ratios = _reward_runs(real_trials, sizes, report)
    report(f"\nsimulating {sizes.n_animals} REINFORCE-with-baseline mice x {sizes.n_trials} trials")
    cohort = simulate_cohort(sizes.n_animals, "reinforce_baseline", n_trials=sizes.n_trials,
                             random_state=0, alpha=0.05, w0=(0.0, 0.0))
    tables = []
    for rule in rules:
        report(f"held-out animals: fitting {rule}")
        tables.append(compare_rules(cohort, {rule: LearningRuleGLM(rule=rule,
                                                                   **_params(rule, sizes))},
                                    cv=GroupKFold(sizes.folds)))
    cohort_table = pd.concat(tables, ignore_index=True)
    report("\nSimulated cohort, held-out animals (mean per animal), and the best rule against "
           "each other one across animals:")
    report(comparison_report(cohort_table))

    ks014 = load_ks014()
    tables = []
    for rule in sizes.ks014_rules:
        report(f"KS014 later sessions: fitting {rule}")
        tables.append(held_out_future(ks014, {rule: LearningRuleGLM(rule=rule,
                                                                    **_default_params(sizes))},
                                      n_train_sessions=sizes.ks014_train_sessions))
    ks014_table = pd.concat(tables, ignore_index=True)
    report(f"\nKS014, sessions {sizes.ks014_train_sessions}-14 held out "
           f"(fit on sessions 0-{sizes.ks014_train_sessions - 1}):")
    report(summarize(ks014_table).round(4).to_string())

    best = summarize(cohort_table).index[0]
    tests = {other: paired_test(cohort_table, best, other).to_dict()
             for other in rules if other != best}

    report("fitting each rule on all of KS014's sessions")
    fitted = {rule: LearningRuleGLM(rule=rule, **_default_params(sizes)).fit(ks014)
              for rule in sizes.ks014_rules}
    models = [save_model(est, out / f"ks014_{rule}.pt") for rule, est in fitted.items()]
    twin_checks = _ks014_twins({r: fitted[r] for r in sizes.twin_rules if r in fitted},
                               ks014, sizes, report)
    shown = fitted.get("dnn", list(fitted.values())[-1])
    figures = _figures(out, cohort_table, ks014_table, shown, ks014, real_table, ratios,
                       twin_checks)
    write_table(real_table, out / "real_mice_heldout.csv")
    write_table(ratios, out / "real_mice_reward_runs.csv")
    write_table(cohort_table, out / "cohort_heldout_animals.csv")
    write_table(ks014_table, out / "ks014_heldout_sessions.csv")
    nwb_files = _write_nwb(out / "nwb", ks014, shown, ks014_table, sizes.nwb_sessions)
    report(f"\nwrote KS014's {len(nwb_files)} session(s) as NWB files with the {shown.rule} "
           f"rule's trajectory and model in {out / 'nwb'}")
    summary = {
        "real_mice": {"rules": summarize(real_table).reset_index().to_dict(orient="records"),
                      "verdicts": verdicts, "reference": REFERENCE,
                      "n_mice": int(real_table["subject"].nunique()),
                      "attribution": IBL_MICE_ATTRIBUTION,
                      "reward_runs": ratios.groupby(["rule", "covariate", "k"])["ratio"]
                      .median().rename("median_ratio").reset_index().to_dict(orient="records")},
        "cohort": {"rules": summarize(cohort_table).reset_index().to_dict(orient="records"),
                   "paired_tests": {f"{best} > {k}": v for k, v in tests.items()},
                   "n_animals": sizes.n_animals, "n_trials": sizes.n_trials},
        "ks014": {"rules": summarize(ks014_table).reset_index().to_dict(orient="records"),
                  "train_sessions": sizes.ks014_train_sessions,
                  "twins": {rule: check.summary.to_dict(orient="records")
                            for rule, check in twin_checks.items()},
                  "twin_sessions": {rule: int(check.sessions.query("mode == 'free'")
                                              ["session_idx"].max()) + 1
                                    for rule, check in twin_checks.items()},
                  "attribution": KS014_ATTRIBUTION},
        "figures": [p.name for p in figures],
        "models": [p.name for p in models],
        "nwb": [str(p.relative_to(out)) for p in nwb_files],
        "seconds": round(time.perf_counter() - start, 1),
        "machine": platform.machine(),
    }
    write_text(out / "summary.json", json.dumps(summary, indent=2, default=float))
    report(f"\nwrote {len(figures)} figures, {len(models)} models and summary.json to {out} "
           f"in {summary['seconds']:.0f} s")
    return summary

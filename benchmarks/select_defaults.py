"""Choose the network rules' defaults on validation animals only (inner cross-validation).

Usage::

    python benchmarks/select_defaults.py --configs dnn_plain,dnn_nested
    python benchmarks/select_defaults.py --protocol training --outer 5 --inner 4
    python benchmarks/select_defaults.py --protocol biased --max-sessions 5
    python benchmarks/select_defaults.py --protocol ks014 --configs dnn_default,rnn_default

The 27 bundled IBL mice are split by mouse into ``--outer`` folds, as the science benchmark
splits them; each outer fold's *training* mice are split again into ``--inner`` folds, and
every candidate is fitted on inner-training mice and scored on inner-validation mice. The
outer test mice are never loaded into a fit or a score here: what this prints may choose
defaults without peeking at the folds that ``bench_science.py`` reports.

``--protocol ks014`` validates within the one bundled mouse instead: fitted on KS014's
sessions 0-6 and scored on 7-9, where ``bench_science.py`` fits 0-9 and scores 10-14.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold
from training_settings import (
    AUTO,
    FREE_STIMULUS,
    FREE_STIMULUS_BASE,
    GATE_AGAINST,
    PREV_SIDE,
    SIDE_TRACE,
    STOP20,
    TEACHER_FORCED,
)

from ibl_learnrules import LearningRuleGLM
from ibl_learnrules.datasets import load_ibl_mice, load_ks014
from ibl_learnrules.evaluation import compare_rules, held_out_future

#: Candidate estimators: name -> LearningRuleGLM keyword arguments (over TEACHER_FORCED).
CANDIDATES = {
    "dnn_default": dict(rule="dnn", **AUTO),
    "rnn_default": dict(rule="rnn", **AUTO),
    "reinforce_baseline": dict(rule="reinforce_baseline"),
    "dnn_plain": dict(rule="dnn", rule_params={"base": None}),
    "dnn_nested": dict(rule="dnn", rule_params={"base": "reinforce_baseline"}),
    "dnn_nested_cosine": dict(rule="dnn", rule_params={"base": "reinforce_baseline"},
                              lr_schedule="cosine"),
    "dnn_nested_es": dict(rule="dnn", rule_params={"base": "reinforce_baseline"},
                          early_stopping=True, max_epochs=200),
    "dnn_nested_wd01": dict(rule="dnn", rule_params={"base": "reinforce_baseline"},
                            weight_decay=0.1),
    "dnn_nested_wd1": dict(rule="dnn", rule_params={"base": "reinforce_baseline"},
                           weight_decay=1.0),
    "dnn_nested_h8": dict(rule="dnn", rule_params={"base": "reinforce_baseline"},
                          hidden_size=8),
    "reinforce_baseline_tb100": dict(rule="reinforce_baseline", tbptt=100),
    "dnn_nested_tb100": dict(rule="dnn", rule_params={"base": "reinforce_baseline"}, tbptt=100),
    "dnn_nested_tb100_wd1": dict(rule="dnn", rule_params={"base": "reinforce_baseline"},
                                 tbptt=100, weight_decay=1.0),
    "rnn_nested_tb100": dict(rule="rnn", rule_params={"base": "reinforce_baseline"}, tbptt=100),
    "rnn_plain_tb100": dict(rule="rnn", rule_params={"base": None}, tbptt=100),
    "rnn_plain": dict(rule="rnn", rule_params={"base": None}),
    "rnn_nested": dict(rule="rnn", rule_params={"base": "reinforce_baseline"}),
    "rnn_nested_cosine": dict(rule="rnn", rule_params={"base": "reinforce_baseline"},
                              lr_schedule="cosine"),
    "rnn_nested_wd1": dict(rule="rnn", rule_params={"base": "reinforce_baseline"},
                           weight_decay=1.0),
    # choice history as a GLM covariate (perseveration outside the learned weights)
    "reinforce_baseline_pc": dict(rule="reinforce_baseline",
                                  covariates=("stimulus", "bias", "prev_choice")),
    "dnn_pc": dict(rule="dnn", covariates=("stimulus", "bias", "prev_choice")),
    "rnn_pc": dict(rule="rnn", covariates=("stimulus", "bias", "prev_choice")),
    # the free-running likelihood in the loss (twins that learn like the animal)
    "dnn_free01": dict(rule="dnn", free_running=0.1),
    "dnn_free03": dict(rule="dnn", free_running=0.3),
    "dnn_free1": dict(rule="dnn", free_running=1.0),
    "dnn_free1_cosine": dict(rule="dnn", free_running=1.0, lr_schedule="cosine"),
    "rnn_free03": dict(rule="rnn", free_running=0.3),
    "rnn_free1_cosine": dict(rule="rnn", free_running=1.0, lr_schedule="cosine"),
    # the default dnn with its correction shrunk toward the nested classic rule
    "dnn_default_wd1": dict(rule="dnn", **STOP20, weight_decay=1.0),
    "dnn_default_wd10": dict(rule="dnn", **STOP20, weight_decay=10.0),
    # the default dnn with its correction gated by 1 - (1 - 2p)^(2m) (twins that cannot drift
    # on alone where the policy is sure)
    "dnn_gate1": dict(rule="dnn", rule_params={"gate": 1}, **AUTO),
    "dnn_gate4": dict(rule="dnn", rule_params={"gate": 4}, **AUTO),
    # gated on the bias weight's own sigmoid (p at zero contrast): open on sure easy trials
    "dnn_gate_bias": dict(rule="dnn", rule_params={"gate": 1, "gate_on": "bias"}, **AUTO),
    "rnn_gate_bias": dict(rule="rnn", rule_params={"gate": 1, "gate_on": "bias"}, **AUTO),
    # gated against the bias, and that with the stimulus weight's free-running term, which
    # slows the KS014 twins that no longer lock in (training_settings)
    **GATE_AGAINST,
    **FREE_STIMULUS,
    **FREE_STIMULUS_BASE,
    **PREV_SIDE,
    **SIDE_TRACE,
}
# the defaults with a Gaussian prior on the correction (``correction_prior``), whose pull
# falls with the number of training trials
CANDIDATES.update({f"{rule}_default_prior{strength}": dict(
    rule=rule, **{**AUTO, "correction_prior": float(strength)})
    for rule in ("dnn", "rnn") for strength in (0, 1, 3, 10, 30, 100, 300)})
# REINFORCE with baseline plus forgetting, alone and nested in the networks (with the prior)
CANDIDATES["reinforce_baseline_leak"] = dict(rule="reinforce_baseline_leak")
CANDIDATES.update({f"{rule}_leak_prior{strength}": dict(
    rule=rule, rule_params={"base": "reinforce_baseline_leak"},
    **{**AUTO, "correction_prior": float(strength)})
    for rule in ("dnn", "rnn") for strength in (0, 3, 10, 30, 100)})

# the prior chosen per fit, on held-out data of the training set: none or the class default
CANDIDATES.update({f"{rule}{tag}_choose_prior": dict(
    rule=rule, rule_params={"base": base}, **{**AUTO, "correction_prior": (0.0, strength)})
    for rule, strength in (("dnn", 30.0), ("rnn", 10.0))
    for tag, base in (("", "reinforce_baseline"), ("_leak", "reinforce_baseline_leak"))})
# the defaults with the drift guard (ibl_learnrules.drift_guard) at two strengths
CANDIDATES.update({f"{rule}_guard{strength:g}": dict(
    rule=rule, **{**AUTO, "drift_guard": float(strength)})
    for rule in ("dnn", "rnn") for strength in (1, 10)})


def candidate(name: str) -> LearningRuleGLM:
    """The estimator of candidate ``name``."""
    return LearningRuleGLM(**{**TEACHER_FORCED, **CANDIDATES[name]})


def validate_on_ks014(configs: list[str], seeds: tuple[int, ...] | None = None) -> None:
    """Fit KS014's sessions 0-6, score 7-9 (never the 10-14 that the benchmark scores).

    ``seeds`` default to 0, 1 and 2: one mouse's fit depends on its seed more than a cohort's.
    """
    seeds = seeds or (0, 1, 2)
    ks014 = load_ks014()
    first_ten = ks014[ks014["session"].isin(pd.unique(ks014["session"])[:10])]
    for name in configs:
        start = time.perf_counter()
        scores = held_out_future(first_ten, {name: candidate(name)}, n_train_sessions=7,
                                 seeds=seeds)["loglik"]
        print(f"KS014 {name:<24s} sessions 7-9 {scores.mean():+.4f} nats/trial per "
              f"seed {np.round(scores.to_numpy(), 4).tolist()} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)


def _fold_summary(table: pd.DataFrame, settings: dict) -> str:
    """An outer fold's inner-validation score, per seed with several, and, for a candidate
    that chooses its prior per fit, how many inner fits chose which."""
    per_seed = table.groupby("seed")["loglik"].mean()
    text = f"{per_seed.mean():+.4f} nats/trial"
    if len(per_seed) > 1:
        text += f" (per seed {np.round(per_seed.to_numpy(), 4).tolist()})"
    if isinstance(settings.get("correction_prior"), tuple):
        chosen = table.drop_duplicates(["seed", "fold"])["correction_prior"].value_counts()
        text += ", inner fits' priors " + ", ".join(
            f"{v:g}: {n}" for v, n in chosen.sort_index().items())
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(CANDIDATES))
    parser.add_argument("--protocol", default="training",
                        help="training, biased (the 27 mice) or ks014 (sessions 0-6 fitted, "
                             "7-9 scored)")
    parser.add_argument("--max-sessions", type=int, default=None,
                        help="first sessions of each mouse kept (e.g. 5 biased sessions)")
    parser.add_argument("--outer", type=int, default=5)
    parser.add_argument("--inner", type=int, default=4)
    parser.add_argument("--folds", default=None,
                        help="outer folds to run, comma-separated (default: all)")
    parser.add_argument("--seeds", default=None,
                        help="fitting seeds, comma-separated (default: 0; ks014: 0,1,2); "
                             "one seed can mislead where a candidate's fit depends on it")
    args = parser.parse_args()
    configs = args.configs.split(",")
    seeds = None if args.seeds is None else tuple(int(s) for s in args.seeds.split(","))
    if args.protocol == "ks014":
        validate_on_ks014(configs, seeds)
        return
    trials = load_ibl_mice(args.protocol, max_sessions=args.max_sessions)
    groups = trials["subject"].to_numpy()
    rows = []
    folds = None if args.folds is None else {int(f) for f in args.folds.split(",")}
    for fold, (train, _) in enumerate(GroupKFold(args.outer).split(trials, groups=groups)):
        if folds is not None and fold not in folds:
            continue
        inner = trials.iloc[train]
        for name in configs:
            start = time.perf_counter()
            table = compare_rules(inner, {name: candidate(name)}, cv=GroupKFold(args.inner),
                                  seeds=seeds or (0,))
            table.insert(0, "outer_fold", fold)
            rows.append(table)
            print(f"outer fold {fold}: {name:<20s} inner-validation "
                  f"{_fold_summary(table, CANDIDATES[name])} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    results = pd.concat(rows, ignore_index=True)
    # each seed weighs alike; within a seed, each held-out mouse does
    per_fold = (results.groupby(["outer_fold", "rule", "seed"])["loglik"].mean()
                .groupby(["outer_fold", "rule"]).mean().unstack("rule"))
    print("\nmean inner-validation log-likelihood per outer fold (nats/trial):")
    print(per_fold[configs].round(4).to_string())
    print("\nover all folds:", per_fold[configs].mean().round(4).to_dict())
    winners = per_fold[configs].idxmax(axis=1)
    print("winner per outer fold:", winners.tolist())
    base = "reinforce_baseline"
    if base in configs:
        for name in configs:
            if name != base:
                diff = (per_fold[name] - per_fold[base]).to_numpy()
                print(f"{name} - {base}: {np.round(diff, 4).tolist()}")


if __name__ == "__main__":
    main()

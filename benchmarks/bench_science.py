"""The science claims on real mice, with the package's defaults: do the flexible rules win?

Usage::

    python benchmarks/bench_science.py                    # everything (~10 minutes, 2 cores)
    python benchmarks/bench_science.py --parts training,ks014

Parts:

* ``training``: the training-protocol sessions of the 27 bundled IBL mice (62,457 trials),
  ``GroupKFold(5)`` by mouse: held-out log-likelihood of ``none``, ``reinforce``,
  ``reinforce_baseline``, ``reinforce_baseline_leak``, ``dnn``, ``rnn``; paired one-sided
  tests of each flexible rule and of the leak rule against ``reinforce_baseline``, and of
  each flexible rule against the leak rule (REINFORCE with baseline plus forgetting).
* ``ks014``: KS014's first 10 sessions fitted, sessions 10-14 scored (the rule rolled through
  all of them on the mouse's own choices).
* ``biased``: the same 5-fold comparison on the first ``--biased-sessions`` biased-block
  sessions of each mouse (within-session adaptation to block switches is learning of the
  bias weight).
* ``reward_runs``: the paper's third claim. ``dnn`` and ``rnn`` fitted on those biased
  sessions of all 27 mice; per mouse, the effective learning rate (``rate`` of
  :func:`~ibl_learnrules.interpret.summarize_reward_history`) on rewarded trials after k
  rewarded trials vs after k unrewarded ones, k = 1..5: median ratio across mice, its
  interquartile range, and the number of mice whose ratio exceeds 1; and how much of each
  network's correction is a constant drift (:func:`~ibl_learnrules.interpret.correction_summary`).

Every estimator is ``LearningRuleGLM(rule=name)`` with the package defaults, seed 0;
``--seeds 0,1,2`` repeats the cross-validated comparisons with each fitting seed (scores
averaged over seeds per mouse, the mean per seed printed too), which measures how much of
a difference between two settings is fitting noise.
``--network-params '{"free_running": 0.3}'`` measures a variant of ``dnn`` and ``rnn``
(extra estimator parameters, JSON) against the same classic rules; ``--covariates
stimulus,bias,prev_reward_side`` gives every rule those GLM covariates; ``--rules`` limits
the rules fitted (``reinforce_baseline``, the reference, is always one); ``--ensemble 3`` fits
``dnn`` and ``rnn`` as seed ensembles (:class:`~ibl_learnrules.SeedEnsemble`: seeds 0, 1, 2,
probabilities averaged) for the comparisons (not for ``reward_runs``, which reads one rule).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import pandas as pd
from sklearn.model_selection import GroupKFold

from ibl_learnrules import LearningRuleGLM, SeedEnsemble, load_ks014
from ibl_learnrules.datasets import load_ibl_mice
from ibl_learnrules.evaluation import compare_rules, held_out_future, paired_test, summarize
from ibl_learnrules.interpret import correction_summary, reward_run_ratios

RULES = ("none", "reinforce", "reinforce_baseline", "reinforce_baseline_leak", "dnn", "rnn")
NETWORKS = ("dnn", "rnn")
REFERENCE = "reinforce_baseline"
#: The classic rule with forgetting: the networks are also tested against it.
LEAK = "reinforce_baseline_leak"


def report(title: str, table: pd.DataFrame, seconds: float, networks) -> None:
    print(f"\n## {title} ({seconds:.0f} s)")
    print(summarize(table).round(4).to_string())
    if table["seed"].nunique() > 1:
        per_seed = table.groupby(["rule", "seed"])["loglik"].mean().unstack("seed")
        print("mean log-likelihood per fitting seed:")
        print(per_seed.round(4).to_string())
    fitted = set(table["rule"])
    pairs = [(rule, REFERENCE) for rule in [*networks, LEAK] if rule in fitted]
    pairs += [(rule, LEAK) for rule in networks if LEAK in fitted]
    for rule, reference in pairs:
        test = paired_test(table, rule, reference)
        print(f"{rule} - {reference}: {test['mean_diff']:+.4f} nats/trial, "
              f"{int(test['n_a_better'])}/{int(test['n_animals'])} mice better, "
              f"Wilcoxon p = {test['wilcoxon_p']:.3g}, t-test p = {test['ttest_p']:.3g}",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="training,ks014,biased,reward_runs")
    parser.add_argument("--biased-sessions", type=int, default=5)
    parser.add_argument("--network-params", type=json.loads, default={},
                        help="JSON: extra LearningRuleGLM parameters of dnn and rnn")
    parser.add_argument("--covariates", type=lambda text: tuple(text.split(",")), default=None,
                        help="GLM covariates of every rule, comma-separated (default: the "
                             "package's, stimulus,bias), e.g. stimulus,bias,prev_reward_side")
    parser.add_argument("--rules", default=",".join(RULES))
    parser.add_argument("--ensemble", type=int, default=1,
                        help="fit dnn and rnn as seed ensembles of this many members")
    parser.add_argument("--seeds", type=lambda text: [int(s) for s in text.split(",")],
                        default=[0], help="fitting seeds of the cross-validated comparisons")
    args = parser.parse_args()
    parts = args.parts.split(",")
    names = list(dict.fromkeys(args.rules.split(",") + [REFERENCE]))
    shared = {} if args.covariates is None else {"covariates": args.covariates}
    rules = {name: LearningRuleGLM(rule=name, random_state=0, **shared,
                                   **(args.network_params if name in NETWORKS else {}))
             for name in names}
    if args.ensemble > 1:
        rules.update({name: SeedEnsemble(rules[name], args.ensemble, random_state=0)
                      for name in NETWORKS if name in names})
    networks = [name for name in NETWORKS if name in names]
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}; rules {names}; "
          "package defaults" + (f", networks with {args.network_params}"
                                if args.network_params else "")
          + (f", covariates {list(args.covariates)}" if args.covariates else ""))
    if "training" in parts:
        trials = load_ibl_mice("training")
        start = time.perf_counter()
        table = compare_rules(trials, rules, cv=GroupKFold(5), seeds=args.seeds)
        report(f"27 mice, training sessions, {len(trials):,} trials, GroupKFold(5)", table,
               time.perf_counter() - start, networks)
    if "ks014" in parts:
        start = time.perf_counter()
        table = held_out_future(load_ks014(), rules, n_train_sessions=10)
        seconds = time.perf_counter() - start
        print(f"\n## KS014, sessions 0-9 fitted, 10-14 scored ({seconds:.0f} s)")
        scores = table.set_index("rule")["loglik"]
        print(scores.round(4).to_string())
        for rule in [*networks, LEAK]:
            if rule in scores:
                print(f"{rule} - {REFERENCE}: {scores[rule] - scores[REFERENCE]:+.4f} "
                      "nats/trial")
    if "biased" in parts:
        trials = load_ibl_mice("biased", max_sessions=args.biased_sessions)
        start = time.perf_counter()
        table = compare_rules(trials, rules, cv=GroupKFold(5), seeds=args.seeds)
        report(f"27 mice, first {args.biased_sessions} biased sessions, {len(trials):,} "
               "trials, GroupKFold(5)", table, time.perf_counter() - start, networks)

    if "reward_runs" in parts:
        trials = load_ibl_mice("biased", max_sessions=args.biased_sessions)
        print(f"\n## Updates after runs of rewards ({len(trials):,} biased trials, 27 mice; "
              "ratio of |effective rate| on rewarded trials after k rewarded vs after k "
              "unrewarded trials)")
        for rule in networks:
            est = LearningRuleGLM(rule=rule, random_state=0, **shared,
                                  **args.network_params).fit(trials)
            for (k, name), group in reward_run_ratios(est, trials).groupby(
                    ["k", "covariate"], sort=False):
                q = group["ratio"].quantile([0.25, 0.5, 0.75]).to_numpy()
                print(f"{rule} k={k} {name:<9s} median {q[1]:.2f} (IQR {q[0]:.2f}-"
                      f"{q[2]:.2f}), {int((group['ratio'] > 1).sum())}/{len(group)} "
                      "mice > 1", flush=True)
            # how much of the network's correction is a constant step on every trial
            for row in correction_summary(est, trials).itertuples():
                print(f"{rule} correction {row.covariate:<9s} drift {row.drift:+.5f}/trial, "
                      f"sd {row.correction_sd:.5f} (classic part's sd {row.classic_sd:.5f}), "
                      f"drift share {row.drift_share:.2f}", flush=True)


if __name__ == "__main__":
    main()

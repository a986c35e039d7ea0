"""Time a default held-out comparison of the rules on real mice (the issue's 3-minute target).

Usage::

    python benchmarks/bench_compare.py                     # 8 rules, GroupKFold(5), defaults
    python benchmarks/bench_compare.py --rules none,dnn --n-jobs 2

Data: the training-protocol sessions of the 27 bundled IBL mice (62,457 trials). Every
estimator runs with the package defaults (``LearningRuleGLM(rule=name)``), so this measures
what a user's first ``compare_rules`` call costs.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch
from sklearn.model_selection import GroupKFold

from ibl_learnrules.datasets import load_ibl_mice
from ibl_learnrules.evaluation import compare_rules, comparison_report

EIGHT_RULES = ("none", "reinforce", "reinforce_baseline", "reward_max", "prediction_error",
               "q_learning", "dnn", "rnn")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", default=",".join(EIGHT_RULES))
    parser.add_argument("--n-jobs", type=int, default=None)
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    rules = args.rules.split(",")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__} ({torch.get_num_threads()} threads)")
    trials = load_ibl_mice("training")
    print(f"{trials['subject'].nunique()} mice, {len(trials):,} trials; rules {rules}; "
          f"GroupKFold({args.folds}), package defaults", flush=True)
    total = 0.0
    tables = []
    for rule in rules:
        start = time.perf_counter()
        tables.append(compare_rules(trials, [rule], cv=GroupKFold(args.folds),
                                    n_jobs=args.n_jobs))
        seconds = time.perf_counter() - start
        total += seconds
        print(f"  {rule:<20s} {seconds:7.1f} s", flush=True)
    print(f"total: {total:.1f} s for {len(rules)} rules x {args.folds} folds")
    import pandas as pd

    print(comparison_report(pd.concat(tables, ignore_index=True)))


if __name__ == "__main__":
    main()

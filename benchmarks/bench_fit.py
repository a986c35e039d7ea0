"""Time training epochs and print a held-out-animal comparison on a simulated cohort.

Usage::

    python benchmarks/bench_fit.py                      # 12 mice x 10,000 trials timing
    python benchmarks/bench_fit.py --compare-trials 2000 --compare-epochs 30

Prints seconds per epoch (forward + backward + Adam step over all chunks) for the ``dnn``
and ``rnn`` rules, then the GroupKFold held-out comparison table of several rules.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from sklearn.model_selection import GroupKFold

from ibl_learnrules import LearningRuleGLM, simulate_cohort
from ibl_learnrules.evaluation import compare_rules, comparison_report


def seconds_per_epoch(trials, rule: str, epochs: int, device: str) -> float:
    est = LearningRuleGLM(rule=rule, max_epochs=1, device=device, random_state=0)
    est.fit(trials)  # warm-up: allocations, first-call overheads
    start = time.perf_counter()
    est.set_params(max_epochs=epochs).fit(trials)
    return (time.perf_counter() - start) / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--animals", type=int, default=12)
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compare-trials", type=int, default=2_000)
    parser.add_argument("--compare-epochs", type=int, default=30)
    parser.add_argument("--rules", default="none,reinforce,reinforce_baseline,dnn,rnn")
    args = parser.parse_args()

    print(f"machine: {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"cuda {torch.cuda.is_available()}")
    trials = simulate_cohort(args.animals, n_trials=args.trials, random_state=0)
    for rule in ("dnn", "rnn"):
        sec = seconds_per_epoch(trials, rule, args.epochs, args.device)
        print(f"{rule}: {sec:.2f} s/epoch on {args.animals} animals x {args.trials} trials "
              f"(tbptt 500)")

    cohort = simulate_cohort(args.animals, n_trials=args.compare_trials, random_state=1,
                             rule="reinforce", alpha=0.05, w0=(0.0, 0.0))
    start = time.perf_counter()
    table = compare_rules(cohort, args.rules.split(","), cv=GroupKFold(4),
                          estimator_params={"max_epochs": args.compare_epochs, "tbptt": 100,
                                            "lr": 0.02, "device": args.device})
    print(f"\nheld-out comparison: {args.animals} simulated REINFORCE mice (alpha 0.05) x "
          f"{args.compare_trials} trials, GroupKFold(4), {args.compare_epochs} epochs "
          f"({time.perf_counter() - start:.0f} s)")
    print(comparison_report(table))


if __name__ == "__main__":
    main()

"""Peak memory of a fit against the size of the data: it should grow no faster than the data.

Usage::

    python benchmarks/bench_memory.py                          # 25, 50, 100, 200 mice x 10,000
    python benchmarks/bench_memory.py --mice 10,20 --trials 2000 --rules reinforce
    python benchmarks/bench_memory.py --mice 25,50 --longest 100000   # unequal lengths

Each (rule, cohort size) runs in a fresh Python process, so every peak is its own: the process
simulates the cohort (``simulate_cohort``), fits ``LearningRuleGLM`` for a few epochs and
reports its peak resident set size (``resource.getrusage(...).ru_maxrss``) after the imports
and a tiny warm-up fit (kernels compiled: the baseline), after simulating and after fitting,
with the size of the trials table in memory. The last columns compare growth: (peak -
baseline) relative to the smallest cohort,
against the growth of the data. A ratio near 1 (or below) means memory is linear in the data.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys

_CHILD = r"""
import json, resource, sys, time
def peak_mib():  # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
import torch
from ibl_learnrules import LearningRuleGLM, simulate_cohort
torch.set_num_threads(1)
n_mice, n_trials, rule, epochs, longest = json.loads(sys.argv[1])
# a tiny warm-up fit first: numba compiles (or loads) its kernels, torch allocates its pools;
# that fixed cost belongs in the baseline, not in what grows with the data
LearningRuleGLM(rule=rule, max_epochs=1, device="cpu", random_state=0).fit(
    simulate_cohort(2, n_trials=300, random_state=1))
base = peak_mib()
trials = simulate_cohort(n_mice, n_trials=n_trials, random_state=0)
if longest:  # one more mouse, longer than the others: the arrays are padded to its length
    import pandas as pd
    long = simulate_cohort(1, n_trials=longest, n_sessions=10**6, random_state=1)
    trials = pd.concat([trials, long.assign(subject="long", session="long-" + long["session"])],
                       ignore_index=True)
data = trials.memory_usage(deep=True).sum() / 2**20
after_sim = peak_mib()
start = time.perf_counter()
LearningRuleGLM(rule=rule, max_epochs=epochs, device="cpu", random_state=0).fit(trials)
print(json.dumps({"base": base, "after_sim": after_sim, "peak": peak_mib(), "data": data,
                  "n_rows": len(trials), "seconds": time.perf_counter() - start}))
"""


def run_one(n_mice: int, n_trials: int, rule: str, epochs: int, longest: int = 0) -> dict:
    """Fit in a fresh interpreter; return its memory figures (MiB)."""
    done = subprocess.run([sys.executable, "-c", _CHILD,
                           json.dumps([n_mice, n_trials, rule, epochs, longest])],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{rule} on {n_mice} mice failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mice", default="25,50,100,200", help="comma-separated cohort sizes")
    parser.add_argument("--trials", type=int, default=10_000, help="trials per mouse")
    parser.add_argument("--rules", default="reinforce,dnn")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--longest", type=int, default=0,
                        help="add one mouse with this many trials (unequal lengths: the "
                             "per-animal arrays are padded to the longest animal)")
    args = parser.parse_args()
    sizes = sorted(int(n) for n in args.mice.split(","))
    print(f"machine: {platform.processor() or platform.machine()}, python "
          f"{platform.python_version()}; {args.trials} trials per mouse, {args.epochs} epochs, "
          "one fresh process per row")
    print(f"{'rule':<10} {'mice':>5} {'rows':>10} {'data MiB':>9} {'base MiB':>9} "
          f"{'sim MiB':>8} {'peak MiB':>9} {'fit s':>7} {'data x':>7} {'RSS-base x':>10} "
          f"{'ratio':>6}")
    for rule in [r for r in args.rules.split(",") if r]:
        first = None
        for n in sizes:
            r = run_one(n, args.trials, rule, args.epochs, args.longest)
            first = first or r
            data_growth = r["data"] / first["data"]
            rss_growth = (r["peak"] - r["base"]) / (first["peak"] - first["base"])
            print(f"{rule:<10} {n:>5} {r['n_rows']:>10} {r['data']:>9.1f} {r['base']:>9.1f} "
                  f"{r['after_sim']:>8.1f} {r['peak']:>9.1f} {r['seconds']:>7.1f} "
                  f"{data_growth:>7.2f} {rss_growth:>10.2f} {rss_growth / data_growth:>6.2f}",
                  flush=True)
    print("ratio = growth of (peak - base) / growth of the data, relative to the smallest "
          "cohort; <= 1 means memory grows no faster than the data")


if __name__ == "__main__":
    main()

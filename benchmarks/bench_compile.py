"""Time what a fresh install pays before its first fit: compiling the numba kernels.

Usage::

    python benchmarks/bench_compile.py

Each case runs in a fresh Python process with an empty ``NUMBA_CACHE_DIR``: a one-epoch fit
on a small simulated cohort, timed twice in that process (first fit: compile and fit;
second: fit alone), then once more in a new process that loads the kernels from the cache
the first one wrote. Compilation is the first fit minus the second. The estimator trains in
float32, so these are the float32 kernels; the test suite compiles the float64 ones too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numba

#: (label, estimator arguments): every compiled kernel family a default or option reaches
CASES = [
    ("reinforce_baseline", dict(rule="reinforce_baseline")),
    ("dnn", dict(rule="dnn")),
    ("rnn", dict(rule="rnn")),
    ("dnn free-running", dict(rule="dnn", free_running=0.5)),
    ("rnn free-running", dict(rule="rnn", free_running=0.5)),
]

_CHILD = r"""
import json, sys, time
from ibl_learnrules import LearningRuleGLM, simulate_cohort
kwargs = json.loads(sys.argv[1])
trials = simulate_cohort(3, "reinforce_baseline", n_trials=300, random_state=0)
times = []
for _ in range(2):
    start = time.perf_counter()
    LearningRuleGLM(max_epochs=1, random_state=0, **kwargs).fit(trials)
    times.append(time.perf_counter() - start)
print(json.dumps(times))
"""


def run_case(kwargs: dict, cache: str) -> list[float]:
    """Return the two fit times of one fresh process whose numba cache is ``cache``."""
    env = {**os.environ, "NUMBA_CACHE_DIR": cache}
    # run outside the checkout: ``python -c`` puts the working directory first on sys.path,
    # ahead of PYTHONPATH, which may name another tree to measure
    out = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(kwargs)], env=env, cwd=cache,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"numba {numba.__version__}, NUMBA_NUM_THREADS="
          f"{os.environ.get('NUMBA_NUM_THREADS', 'unset')}", flush=True)
    total = 0.0
    for label, kwargs in CASES:
        with tempfile.TemporaryDirectory() as cache:
            start = time.perf_counter()
            first, second = run_case(kwargs, cache)
            cached, _ = run_case(kwargs, cache)
        compile_s = first - second
        total += compile_s
        print(f"{label:18s}: first fit {first:6.1f} s, second {second:5.2f} s, compile "
              f"~{compile_s:5.1f} s; first fit from the cache {cached:5.2f} s "
              f"({time.perf_counter() - start:.0f} s wall)", flush=True)
    print(f"compile time, all cases: ~{total:.0f} s (cases share helpers, so each case "
          "compiles from scratch in its own cache)")


if __name__ == "__main__":
    main()

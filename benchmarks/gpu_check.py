"""GPU check: the estimator fits on CUDA, agrees with the CPU, and how long an epoch takes.

Run on a machine with a CUDA GPU (prints and exits 1 if none)::

    PYTHONPATH=. python benchmarks/gpu_check.py
"""

from __future__ import annotations

import sys
import time

import torch

from ibl_learnrules import LearningRuleGLM, simulate_cohort


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA GPU visible")
        return 1
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    small = simulate_cohort(4, n_trials=500, random_state=0, alpha=0.05)
    worst = 0.0
    for rule in ("reinforce", "q_learning", "dnn", "rnn"):
        scores = {}
        for device in ("cpu", "cuda"):
            est = LearningRuleGLM(rule=rule, max_epochs=3, tbptt=100, device=device,
                                  random_state=0).fit(small)
            assert str(est.device_).startswith(device)
            scores[device] = est.score(small)
        diff = abs(scores["cpu"] - scores["cuda"])
        worst = max(worst, diff)
        print(f"{rule}: score cpu {scores['cpu']:.6f} cuda {scores['cuda']:.6f} |diff| {diff:.2e}")
    auto = LearningRuleGLM(rule="none", max_epochs=1).fit(small)
    print(f"device='auto' chose {auto.device_}")
    big = simulate_cohort(12, n_trials=10_000, random_state=0)
    for rule in ("dnn", "rnn"):
        est = LearningRuleGLM(rule=rule, max_epochs=1, device="cuda", random_state=0).fit(big)
        torch.cuda.synchronize()
        start = time.perf_counter()
        est.fit(big)
        torch.cuda.synchronize()
        print(f"{rule}: {time.perf_counter() - start:.2f} s/epoch on cuda, 12 animals x 10,000 "
              "trials (tbptt 500)")
    print(f"largest cpu/cuda score difference after 3 epochs: {worst:.2e} nats")
    return 0 if worst < 1e-3 else 2


if __name__ == "__main__":
    sys.exit(main())

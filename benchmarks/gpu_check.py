"""GPU check: seconds per epoch on a large cohort, and CPU/GPU agreement of the loss.

Run on a machine with a CUDA GPU (prints "no CUDA GPU visible" and exits 1 if none)::

    PYTHONPATH=. python benchmarks/gpu_check.py [--animals 1000] [--trials 10000]

For ``dnn``, ``rnn`` and ``reinforce`` it times one training epoch (tbptt 500, float32,
``device="cuda"``) on 1,000 mice x 10,000 trials, then evaluates the loss of the trained
rule on both devices (same parameters, same data, float32; the CPU takes its usual path,
the compiled kernel where the rule has one) and prints the difference. Simulating 1,000
mice would dominate the run, so a few are simulated and tiled, each copy shuffled in order.
Exit status: 0 when every relative loss difference is below ``--tolerance``, else 2.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import time

import numpy as np
import torch

from ibl_learnrules import featurize, simulate_cohort
from ibl_learnrules.engine import ChunkRunner, TensorBatch, train_rule
from ibl_learnrules.rules import get_rule_class

RULES = ("dnn", "rnn", "reinforce")
TBPTT = 500


def tiled_cohort(n_animals: int, n_trials: int, n_simulated: int, seed: int = 0) -> TensorBatch:
    """``n_animals`` mice on the CPU: ``n_simulated`` simulated ones, tiled and shuffled."""
    start = time.perf_counter()
    trials = simulate_cohort(n_simulated, n_trials=n_trials, random_state=seed)
    batch = TensorBatch.from_arrays(featurize(trials), torch.device("cpu"))
    order = np.random.default_rng(seed).permutation(np.resize(np.arange(n_simulated), n_animals))
    index = torch.as_tensor(order)
    tiled = TensorBatch(**{f.name: getattr(batch, f.name)[index].contiguous()
                           for f in dataclasses.fields(batch)})
    print(f"cohort: {n_simulated} mice x {n_trials} trials simulated in "
          f"{time.perf_counter() - start:.0f} s, tiled to {n_animals} mice", flush=True)
    return tiled


def to_device(batch: TensorBatch, device: str) -> TensorBatch:
    return TensorBatch(**{f.name: getattr(batch, f.name).to(device)
                          for f in dataclasses.fields(batch)})


def mean_nll(rule, batch: TensorBatch) -> float:
    """Mean negative log-likelihood per valid trial, the device's usual path (no gradients)."""
    runner = ChunkRunner(rule, batch, "auto")
    w, state = runner.start(torch.zeros(batch.n_animals, batch.x.shape[-1],
                                        device=batch.x.device))
    with torch.no_grad():
        loglik, _, _ = runner(w, state, 0, batch.n_trials, need_grad=False)
    return -loglik / float(batch.valid.sum())


def epoch_seconds(rule, batch: TensorBatch) -> float:
    """One training epoch on ``batch``'s device, after a short warm-up."""
    w0 = torch.zeros(batch.n_animals, batch.x.shape[-1], device=batch.x.device)
    warm = TensorBatch(**{f.name: getattr(batch, f.name)[:, :2 * TBPTT]
                          for f in dataclasses.fields(batch)})
    train_rule(copy.deepcopy(rule), warm, w0, max_epochs=1, lr=0.01, tbptt=TBPTT)
    torch.cuda.synchronize()
    start = time.perf_counter()
    train_rule(rule, batch, w0, max_epochs=1, lr=0.01, tbptt=TBPTT)
    torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--animals", type=int, default=1000)
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--simulated", type=int, default=48,
                        help="mice actually simulated (then tiled to --animals)")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest relative CPU/GPU difference of the mean loss")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU visible")
        return 1
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads", flush=True)
    cpu_batch = tiled_cohort(args.animals, args.trials, min(args.simulated, args.animals))
    gpu_batch = to_device(cpu_batch, "cuda")
    size = f"{args.animals} mice x {args.trials} trials (tbptt {TBPTT}, float32)"
    worst = 0.0
    for name in RULES:
        torch.manual_seed(0)
        rule = get_rule_class(name)(cpu_batch.x.shape[-1]).to("cuda")
        sec = epoch_seconds(rule, gpu_batch)
        print(f"{name}: {sec:.2f} s/epoch on cuda, {size}", flush=True)
        # the trained parameters, on both devices
        gpu_loss = mean_nll(rule, gpu_batch)
        start = time.perf_counter()
        cpu_loss = mean_nll(copy.deepcopy(rule).to("cpu"), cpu_batch)
        cpu_sec = time.perf_counter() - start
        rel = abs(cpu_loss - gpu_loss) / abs(cpu_loss)
        worst = max(worst, rel)
        print(f"{name}: mean loss cpu {cpu_loss:.7f} ({cpu_sec:.1f} s), cuda {gpu_loss:.7f}, "
              f"relative difference {rel:.1e}", flush=True)
    print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB; "
          f"largest relative cpu/cuda loss difference {worst:.1e} "
          f"(tolerance {args.tolerance:g})")
    return 0 if worst < args.tolerance else 2


if __name__ == "__main__":
    sys.exit(main())

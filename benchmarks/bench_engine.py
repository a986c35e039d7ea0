"""Time one training epoch: compiled kernels vs the per-trial torch loop; and a large cohort.

Usage::

    python benchmarks/bench_engine.py                 # 12 mice x 10,000 trials, both engines
    python benchmarks/bench_engine.py --scale 200 20000

An epoch is forward + backward + Adam step over all TBPTT chunks (tbptt 500) of all animals.
The reference is the package's generic per-trial torch loop (:func:`ibl_learnrules.engine.rollout`
with autograd), the one used on the GPU and for the classic rules.
"""

from __future__ import annotations

import argparse
import platform
import resource
import time

import torch

from ibl_learnrules import featurize, simulate_cohort
from ibl_learnrules.engine import TensorBatch, train_rule
from ibl_learnrules.rules import get_rule_class


def epoch_seconds(rule_name: str, batch: TensorBatch, engine: str, epochs: int) -> float:
    torch.manual_seed(0)
    rule = get_rule_class(rule_name)(batch.x.shape[-1]).to(batch.x.device)
    w0 = torch.zeros(batch.n_animals, batch.x.shape[-1], device=batch.x.device)
    kwargs = dict(lr=0.01, tbptt=500, engine=engine)
    train_rule(rule, batch, w0, max_epochs=1, **kwargs)  # warm-up (compilation, allocations)
    if batch.x.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    train_rule(rule, batch, w0, max_epochs=epochs, **kwargs)
    if batch.x.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--animals", type=int, default=12)
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--reference-epochs", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--scale", type=int, nargs=2, metavar=("ANIMALS", "TRIALS"),
                        help="also time one fused epoch of the dnn rule on a large cohort")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"device {device}, torch {torch.__version__}")
    trials = simulate_cohort(args.animals, n_trials=args.trials, random_state=0)
    batch = TensorBatch.from_arrays(featurize(trials), device)
    for rule in ("dnn", "rnn"):
        ref = epoch_seconds(rule, batch, "torch", args.reference_epochs)
        line = f"{rule}: torch loop {ref:.3f} s/epoch"
        if device.type == "cpu":
            fast = epoch_seconds(rule, batch, "fused", args.epochs)
            line += f", fused {fast:.3f} s/epoch, speed-up {ref / fast:.1f}x"
        print(f"{line}  ({args.animals} animals x {args.trials} trials)", flush=True)

    if args.scale:
        n_animals, n_trials = args.scale
        start = time.perf_counter()
        big = simulate_cohort(n_animals, n_trials=n_trials, random_state=1)
        print(f"simulated {n_animals} x {n_trials} trials in {time.perf_counter() - start:.0f} s")
        big_batch = TensorBatch.from_arrays(featurize(big), device)
        del big
        engine = "fused" if device.type == "cpu" else "torch"
        sec = epoch_seconds("dnn", big_batch, engine, 1)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"dnn ({engine}): {sec:.1f} s/epoch on {n_animals} animals x {n_trials} trials; "
              f"peak memory {peak:.2f} GiB")
        if device.type == "cuda":
            print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()

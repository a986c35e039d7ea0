"""Time one training epoch of every rule against a plain per-trial torch loop, in one run.

Usage::

    python benchmarks/bench_engine.py                 # 12 mice x 10,000 trials
    python benchmarks/bench_engine.py --scale 200 20000
    python benchmarks/bench_engine.py --animals 27 --trials 1600 --tbptt 100  # as the estimator

The reference is the plain loop of the published architecture, written out below rather
than taken from the package: for ``dnn`` an MLP 8 -> 32 -> 32 -> 2 (tanh) with a learned
per-weight output scale, ``W = W + c * MLP(cat(W, inputs_t))`` with ``inputs_t = [x, 2y-1,
2r-1, 2c-1, new_session]``; for ``rnn`` a GRUCell(8, 32) and a read-out MLP 32 -> 32 -> 2.
Policy logits ``(W * x).sum(-1)`` are stacked over trials, the loss is the binary
cross-entropy of the observed choices, the carried W (and h) are detached every 500 trials
(``--tbptt``; truncated back-propagation), and Adam takes ONE step per epoch.

The package's epoch is :func:`ibl_learnrules.engine.train_rule` (``engine="auto"``, float32
parameters): forward, backward and an Adam step for each 500-trial chunk of all animals.
The estimator's default chunks are shorter (``tbptt=100``), which is where the kernels' thread
threshold decides whether a chunk runs on one thread or several: ``--tbptt 100`` times that
shape.

Other engineers may share the machine, so every figure is the median of several repeats,
reference and package interleaved, and the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import time

import numba
import torch
import torch.nn.functional as F
from torch import nn

from ibl_learnrules import featurize, simulate_cohort
from ibl_learnrules.engine import TensorBatch, train_rule
from ibl_learnrules.kernels.threads import kernel_threads
from ibl_learnrules.rules import get_rule_class

TBPTT = 500
CLASSIC_RULES = ("none", "reinforce", "reinforce_baseline", "reward_max", "prediction_error",
                 "q_learning", "reward_history")


class PlainDNN(nn.Module):
    """``dw = c * MLP(w, inputs)``: the published architecture, as a plain module."""

    def __init__(self, n_weights: int, hidden: int = 32, scale: float = 1e-3):
        super().__init__()
        n_in = 2 * n_weights + 4
        self.mlp = nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, hidden),
                                 nn.Tanh(), nn.Linear(hidden, n_weights))
        self.log_scale = nn.Parameter(torch.full((n_weights,), float(torch.tensor(scale).log())))

    def initial_state(self, n_animals: int):
        return None

    def forward(self, w, inputs_t, state):
        return self.log_scale.exp() * self.mlp(torch.cat([w, inputs_t], -1)), state


class PlainRNN(nn.Module):
    """``h = GRU(h, [w, inputs])``, ``dw = c * MLP(h)``, as a plain module."""

    def __init__(self, n_weights: int, hidden: int = 32, scale: float = 1e-3):
        super().__init__()
        self.hidden = hidden
        self.gru = nn.GRUCell(2 * n_weights + 4, hidden)
        self.readout = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh(),
                                     nn.Linear(hidden, n_weights))
        self.log_scale = nn.Parameter(torch.full((n_weights,), float(torch.tensor(scale).log())))

    def initial_state(self, n_animals: int):
        return torch.zeros(n_animals, self.hidden)

    def forward(self, w, inputs_t, state):
        h = self.gru(torch.cat([w, inputs_t], -1), state)
        return self.log_scale.exp() * self.readout(h), h


def plain_epoch(model: nn.Module, optimizer, batch: TensorBatch, inputs: torch.Tensor,
                tbptt: int = TBPTT) -> float:
    """One epoch of the plain loop: whole trajectory, TBPTT by detaching, one Adam step."""
    w = torch.zeros(batch.n_animals, batch.x.shape[-1])
    state = model.initial_state(batch.n_animals)
    logits = []
    for t in range(batch.n_trials):
        if t % tbptt == 0:
            w = w.detach()
            state = None if state is None else state.detach()
        logits.append((w * batch.x[:, t]).sum(-1))
        dw, state = model(w, inputs[:, t], state)
        w = w + dw
    loss = F.binary_cross_entropy_with_logits(torch.stack(logits, 1), batch.y,
                                              weight=batch.valid)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss)


def rule_inputs(batch: TensorBatch) -> torch.Tensor:
    """``[x, 2y-1, 2r-1, 2c-1, new_session]`` for every trial (B, T, K + 4)."""
    signs = torch.stack([batch.y, batch.reward, batch.correct_side], -1) * 2.0 - 1.0
    return torch.cat([batch.x, signs, batch.new_session.unsqueeze(-1)], -1)


class PackageEpoch:
    """One epoch of :func:`train_rule` for a rule of the package, after a warm-up epoch."""

    def __init__(self, rule_name: str, batch: TensorBatch, engine: str = "auto",
                 tbptt: int = TBPTT):
        torch.manual_seed(0)
        k = batch.x.shape[-1]
        self.rule = get_rule_class(rule_name)(k).to(batch.x.device)
        self.batch, self.engine, self.tbptt = batch, engine, tbptt
        self.w0 = torch.zeros(batch.n_animals, k, device=batch.x.device)
        self()  # compilation, allocations

    def __call__(self) -> float:
        device = self.batch.x.device
        start = time.perf_counter()
        train_rule(self.rule, self.batch, self.w0, max_epochs=1, lr=0.01, tbptt=self.tbptt,
                   engine=self.engine)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start


class PlainEpoch:
    """One epoch of the plain reference loop."""

    def __init__(self, rule_name: str, batch: TensorBatch, tbptt: int = TBPTT):
        torch.manual_seed(0)
        k = batch.x.shape[-1]
        self.tbptt = tbptt
        self.model = (PlainDNN if rule_name == "dnn" else PlainRNN)(k)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=0.01)
        self.batch, self.inputs = batch, rule_inputs(batch)

    def __call__(self) -> float:
        start = time.perf_counter()
        plain_epoch(self.model, self.optimizer, self.batch, self.inputs, self.tbptt)
        return time.perf_counter() - start


def machine_line() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"machine: {cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), numba {numba.__version__} "
            f"({kernel_threads()} kernel threads), "
            f"load average {load()}")


def load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--animals", type=int, default=12)
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3,
                        help="reference epochs per network rule (medians are reported)")
    parser.add_argument("--package-repeats", type=int, default=3,
                        help="package epochs per reference epoch (interleaved)")
    parser.add_argument("--classic-repeats", type=int, default=5)
    parser.add_argument("--tbptt", type=int, default=TBPTT,
                        help="trials per chunk (truncated back-propagation; the estimator's 100)")
    parser.add_argument("--scale", type=int, nargs=2, metavar=("ANIMALS", "TRIALS"),
                        help="also time one epoch of the dnn rule on a large cohort")
    args = parser.parse_args()
    print(machine_line(), flush=True)
    trials = simulate_cohort(args.animals, n_trials=args.trials, random_state=0)
    batch = TensorBatch.from_arrays(featurize(trials), torch.device("cpu"))
    size = f"{args.animals} animals x {args.trials} trials, tbptt {args.tbptt}, float32"
    print(f"cohort: {size}", flush=True)
    for name in ("dnn", "rnn"):
        reference = PlainEpoch(name, batch, args.tbptt)
        package = PackageEpoch(name, batch, tbptt=args.tbptt)
        ref_times, pkg_times = [], []
        for _ in range(args.repeats):  # interleaved, so that a burst of load hits both
            ref_times.append(reference())
            pkg_times.extend(package() for _ in range(args.package_repeats))
        ref, pkg = statistics.median(ref_times), statistics.median(pkg_times)
        print(f"{name}: plain loop {ref:.3f} s/epoch, package (engine=auto) {pkg:.4f} s/epoch "
              f"(min {min(pkg_times):.4f}), speed-up x{ref / pkg:.1f}  "
              f"[medians of {len(ref_times)} and {len(pkg_times)}]", flush=True)
    for name in CLASSIC_RULES:
        package = PackageEpoch(name, batch, tbptt=args.tbptt)
        times = [package() for _ in range(args.classic_repeats)]
        path = "kernel" if package.rule.chunk_kernel() is not None else "torch loop"
        print(f"{name}: {statistics.median(times):.4f} s/epoch ({path}, engine=auto)",
              flush=True)
    print(f"at the end: {machine_line()}")

    if args.scale:
        n_animals, n_trials = args.scale
        start = time.perf_counter()
        big = simulate_cohort(n_animals, n_trials=n_trials, random_state=1)
        print(f"simulated {n_animals} x {n_trials} trials in {time.perf_counter() - start:.0f} s")
        big_batch = TensorBatch.from_arrays(featurize(big), torch.device("cpu"))
        del big
        sec = PackageEpoch("dnn", big_batch)()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"dnn: {sec:.1f} s/epoch on {n_animals} animals x {n_trials} trials; "
              f"peak memory {peak:.2f} GiB")


if __name__ == "__main__":
    main()

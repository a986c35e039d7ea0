"""Noisy learners: held-out real mice with and without weight noise, and PsyTrack side by side.

Usage::

    python benchmarks/bench_noise.py                         # all parts
    python benchmarks/bench_noise.py --parts psytrack
    python benchmarks/bench_noise.py --parts mice --rules none,reinforce_baseline

Parts:

* ``speed``: seconds per training epoch of each rule with and without noise on the 27 mice.
* ``mice``: the training-protocol sessions of the 27 bundled IBL mice, ``GroupKFold(5)`` by
  mouse: held-out log-likelihood (one-step-ahead predictions from each held-out mouse's own
  earlier trials, for every model) of each rule with and without ``weight_noise="learn"``;
  ``none`` + noise is the pure random walk. Deterministic rules run with the package
  defaults; noisy ones with ``max_epochs=--noisy-epochs``, ``lr=0.03`` and ``tbptt=500``
  (the filter is a per-trial torch loop, far slower per epoch than the compiled kernels:
  see ``speed``; the noise settles within a few epochs), seed 0. Also the per-mouse share
  of weight change the rule explains (:meth:`LearningRuleGLM.rule_share`), fitted on all
  27 mice.
* ``psytrack``: simulated random-walk mice (sd 0.05 stimulus, 0.03 bias); per mouse, PsyTrack
  (MAP weights, sigma by evidence; sigInit fixed at 4) and ``LearningRuleGLM(rule="none",
  weight_noise="learn")`` fitted to that mouse alone: recovered sd, correlation of the
  trajectories (PsyTrack's MAP against our smoothed mean), and seconds per fit.
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold

from ibl_learnrules import LearningRuleGLM, featurize, simulate_cohort
from ibl_learnrules.datasets import load_ibl_mice
from ibl_learnrules.evaluation import compare_rules, paired_test, summarize

NOISY = {"weight_noise": "learn", "lr": 0.03, "tbptt": 500}


def mice_part(rules: list[str], noisy_epochs: int) -> None:
    trials = load_ibl_mice("training")
    print(f"\n## 27 mice, training sessions, {len(trials):,} trials, GroupKFold(5)", flush=True)
    tables = []
    for rule in rules:
        for noisy in (False, True):
            label = f"{rule}+noise" if noisy else rule
            params = dict(NOISY, max_epochs=noisy_epochs) if noisy else {}
            start = time.perf_counter()
            table = compare_rules(trials, {label: LearningRuleGLM(rule=rule, **params)},
                                  cv=GroupKFold(5))
            tables.append(table)
            row = summarize(table).iloc[0]
            print(f"{label:<26s} loglik {row['loglik']:+.4f}  bits {row['bits']:.4f}  "
                  f"accuracy {row['accuracy']:.4f}  ({time.perf_counter() - start:.0f} s)",
                  flush=True)
            if noisy:
                test = paired_test(pd.concat(tables[-2:]), label, rule)
                print(f"  {label} - {rule}: {test['mean_diff']:+.4f} nats/trial, "
                      f"{int(test['n_a_better'])}/{int(test['n_animals'])} mice better, "
                      f"Wilcoxon p = {test['wilcoxon_p']:.3g}", flush=True)
    everything = pd.concat(tables)
    print("\n" + summarize(everything).round(4).to_string())
    if "none" in rules:  # does a rule add to the random walk?
        for rule in rules:
            if rule != "none":
                test = paired_test(everything, f"{rule}+noise", "none+noise")
                print(f"{rule}+noise - none+noise: {test['mean_diff']:+.4f} nats/trial, "
                      f"{int(test['n_a_better'])}/{int(test['n_animals'])} mice better, "
                      f"Wilcoxon p = {test['wilcoxon_p']:.3g}", flush=True)
    for rule in rules:
        if rule == "none":
            continue
        start = time.perf_counter()
        est = LearningRuleGLM(rule=rule, random_state=0, max_epochs=noisy_epochs,
                              **NOISY).fit(trials)
        share = est.rule_share(trials)
        sd = est.rule_.noise.sd.detach().numpy().round(4).tolist()
        print(f"\n{rule}+noise on all 27 mice ({time.perf_counter() - start:.0f} s): noise sd "
              f"{sd}; share of weight change the rule explains, median (IQR) over mice:")
        for column in [c for c in share.columns if c.startswith("share")]:
            q = share[column].quantile([0.25, 0.5, 0.75]).to_numpy()
            print(f"  {column:<16s} {q[1]:.3f} ({q[0]:.3f}-{q[2]:.3f})", flush=True)


def psytrack_fit(x: np.ndarray, y: np.ndarray, names) -> tuple[np.ndarray, np.ndarray]:
    """PsyTrack's random walk on one animal: (sd per weight, MAP weights (T, K)), our order."""
    from psytrack.hyperOpt import hyperOpt

    order = sorted(names)  # PsyTrack returns weights in alphabetical order
    dat = {"y": y.astype(float).copy(),
           "inputs": {n: x[:, [names.index(n)]] for n in names}}
    hyper = {"sigInit": 4.0, "sigma": [2.0 ** -4] * len(names), "sigDay": None}
    best, _, w_mode, _ = hyperOpt(dat, hyper, {n: 1 for n in names}, ["sigma"],
                                  hess_calc=None)
    back = [order.index(n) for n in names]
    return np.asarray(best["sigma"])[back], np.asarray(w_mode)[back].T


def psytrack_part(n_mice: int, n_trials: int) -> None:
    truth = np.array([0.05, 0.03])
    names = ["stimulus", "bias"]
    cohort = simulate_cohort(n_mice, rule="none", n_trials=n_trials, random_state=0,
                             weight_noise=truth, w0=(0.0, 0.0))
    print(f"\n## PsyTrack vs rule='none' + weight noise: {n_mice} simulated random-walk mice, "
          f"{n_trials} trials each, true sd {truth.tolist()}")
    rows = []
    for subject, mouse in cohort.groupby("subject"):
        arrays = featurize(mouse, names)
        x, y = arrays.x[0], arrays.y[0]
        start = time.perf_counter()
        sd_psy, w_psy = psytrack_fit(x, y, names)
        t_psy = time.perf_counter() - start
        start = time.perf_counter()
        est = LearningRuleGLM(rule="none", max_epochs=20, random_state=0, device="cpu",
                              **dict(NOISY, lr=0.05)).fit(mouse)
        t_ours = time.perf_counter() - start
        ours = est.predict_trajectory(mouse, smoothed=True)
        sd_ours = est.rule_.noise.sd.detach().numpy()
        row = {"subject": subject, "sec_psytrack": t_psy, "sec_ours": t_ours}
        for k, n in enumerate(names):
            true_w = mouse[f"true_w_{n}"].to_numpy()
            row[f"sd_{n}_psytrack"], row[f"sd_{n}_ours"] = sd_psy[k], sd_ours[k]
            row[f"r_{n}_ours_psytrack"] = np.corrcoef(ours[f"w_{n}"], w_psy[:, k])[0, 1]
            row[f"r_{n}_psytrack_true"] = np.corrcoef(w_psy[:, k], true_w)[0, 1]
            row[f"r_{n}_ours_true"] = np.corrcoef(ours[f"w_{n}"], true_w)[0, 1]
        rows.append(row)
        print(pd.DataFrame([row]).round(3).to_string(index=False, header=len(rows) == 1),
              flush=True)
    table = pd.DataFrame(rows)
    print("\nmean over mice:")
    print(table.drop(columns="subject").mean().round(4).to_string())


def speed_part(rules: list[str]) -> None:
    """Seconds per training epoch on the 27 mice's training sessions, without and with noise."""
    trials = load_ibl_mice("training")
    print(f"\n## Seconds per epoch, 27 mice, {len(trials):,} trials (one CPU thread for torch)")
    for rule in rules:
        for noisy in (False, True):
            params = dict(NOISY) if noisy else {}
            est = LearningRuleGLM(rule=rule, device="cpu", random_state=0, **params)
            est.set_params(max_epochs=1).fit(trials)  # warm-up: numba compilation
            start = time.perf_counter()
            est.set_params(max_epochs=2).fit(trials)
            label = f"{rule}+noise" if noisy else rule
            print(f"{label:<26s} {(time.perf_counter() - start) / 2:.2f} s/epoch", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="speed,psytrack,mice")
    parser.add_argument("--rules", default="none,reinforce_baseline,dnn")
    parser.add_argument("--noisy-epochs", type=int, default=30)
    parser.add_argument("--psytrack-mice", type=int, default=4)
    parser.add_argument("--psytrack-trials", type=int, default=3000)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*no-go trial")
    parts = args.parts.split(",")
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}; {args}")
    if "speed" in parts:
        speed_part(args.rules.split(","))
    if "psytrack" in parts:
        psytrack_part(args.psytrack_mice, args.psytrack_trials)
    if "mice" in parts:
        mice_part(args.rules.split(","), args.noisy_epochs)


if __name__ == "__main__":
    main()

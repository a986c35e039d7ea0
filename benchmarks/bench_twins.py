"""Do twins of rules fitted to KS014 learn the task as KS014 did? One line per model variant.

Usage::

    NUMBA_NUM_THREADS=1 python benchmarks/bench_twins.py                  # every variant
    python benchmarks/bench_twins.py --variants reinforce_baseline,reinforce_baseline_noise

Each variant is fitted on all 15 of KS014's sessions (seed 0, or each of ``--seeds``), then
20 free twins run the IBL training protocol from zero weights
(:func:`ibl_learnrules.twins.check_twins`, twin seed 0, no psychometric fits). Printed per
variant: the in-sample log-likelihood, the fitted baseline ``beta`` of the (nested)
REINFORCE-with-baseline rule, sessions to ``trained_1a`` (twins' median; KS014: 14), how
many twins never get there and KS014's percentile among them (0.5: a typical twin; near
0 or 1 the twins learn slower or faster than the mouse), the easy-trial correct RMS
against KS014 over sessions, the twins' median fraction of debiasing trials, and the
easy-trial RMS of 20 twins replaying KS014's own stimuli. The issue's targets: median
within 3 sessions of KS014's, RMS <= 0.15.
``--block-switches`` fits on the 27 bundled mice's first two biased sessions instead and
prints how many trials the mice and their replay twins take to half of a block switch's
change in p(left) (target: within 30 %). Twins depend on the fitting seed: compare variants
over several (``--seeds 0,1,2,3``), or fit each as a seed ensemble (``--ensemble 4``: its
twins are shared out among the members, a draw from the mixture). They depend on the
twins' own draw too: ``--twin-seed 0,1,2,3,4`` prints one line per draw of the same fit
(on KS014, 20 twins of ``reinforce_baseline`` gave an RMS of 0.147 to 0.258 over those five).
``--curves`` adds, under each line, KS014's and the free twins' mean easy-trial correct and
repeat fraction per session and each twin's sessions to ``trained_1a``, which show where the
RMS comes from (a mean curve of fast learners and lock-ins is flat where KS014's is not).
``--free-sessions 25`` runs KS014's free twins for 25 sessions: KS014 reaches ``trained_1a``
in its 14th of 15, so with 15 a twin that trains in session 16 counts as never trained and
the median is often "never"; the RMS still compares KS014's 15 sessions.

Noisy variants run the filter (a per-trial torch loop): a few minutes each on 2 cores.
Free-running variants (``free_running``: the weight of the free-running likelihood in the
loss) run compiled kernels (``dnn``, ``rnn`` and the REINFORCE-with-baseline family).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import time
import warnings

import numpy as np
from training_settings import (
    AUTO,
    FREE_STIMULUS,
    FREE_STIMULUS_BASE,
    GATE_AGAINST,
    PREV_SIDE,
    SIDE_TRACE,
    TEACHER_FORCED,
)

from ibl_learnrules import LearningRuleGLM, SeedEnsemble, load_ks014
from ibl_learnrules.datasets import load_ibl_mice
from ibl_learnrules.twins import check_twins

HISTORY = ("stimulus", "bias", "prev_choice")
NOISE = {"weight_noise": "learn", "max_epochs": 30}
REVERTING = {"weight_noise": "learn", "noise_reversion": "learn", "tbptt": 500}

#: Variant name -> LearningRuleGLM keyword arguments (over TEACHER_FORCED).
VARIANTS = {
    "dnn": dict(rule="dnn", **AUTO),  # the package defaults
    "rnn": dict(rule="rnn", **AUTO),
    "reinforce_baseline": dict(rule="reinforce_baseline"),
    "reinforce_baseline_prev_choice": dict(rule="reinforce_baseline", covariates=HISTORY),
    "reinforce_baseline_leak": dict(rule="reinforce_baseline_leak"),
    # trained with the free-running likelihood weighted 3: replay twins that follow block
    # switches within about 4 trials (the side step adds a little)
    "reinforce_baseline_leak_free3": dict(rule="reinforce_baseline_leak", free_running=3.0),
    "reinforce_baseline_leak_side": dict(rule="reinforce_baseline_leak_side"),
    # the stimulus weight alone free in the free-running likelihood, the bias teacher forced
    # (compiled: 13 s on KS014)
    "reinforce_baseline_free_stimulus": dict(rule="reinforce_baseline", free_running=0.3,
                                             free_weights=("stimulus",)),
    "reinforce_baseline_leak_side_free3": dict(rule="reinforce_baseline_leak_side",
                                               free_running=3.0),
    "dnn_leak": dict(rule="dnn", rule_params={"base": "reinforce_baseline_leak"}, **AUTO),
    # the defaults with the stimulus weight free as above, and with the correction centred
    # on the policy's own choice ("policy": run free it is its base rule) or gated by
    # 1 - (1 - 2p)^(2m) (m = 1: 4 p (1 - p))
    **FREE_STIMULUS,
    "dnn_centred": dict(rule="dnn", rule_params={"centre": "policy"}, **AUTO),
    "dnn_centred_free_stimulus": dict(rule="dnn", rule_params={"centre": "policy"},
                                      **{**AUTO, "free_running": 0.3},
                                      free_weights=("stimulus",)),
    "dnn_even": dict(rule="dnn", rule_params={"centre": "even"}, **AUTO),
    "dnn_gate": dict(rule="dnn", rule_params={"gate": 1}, **AUTO),
    "dnn_gate_free_stimulus": dict(rule="dnn", rule_params={"gate": 1},
                                   **{**AUTO, "free_running": 0.3}, free_weights=("stimulus",)),
    "dnn_gate4_free_stimulus": dict(rule="dnn", rule_params={"gate": 4},
                                    **{**AUTO, "free_running": 0.3},
                                    free_weights=("stimulus",)),
    # gated on the bias weight's sigmoid (p at zero contrast; index 1 of stimulus, bias)
    "dnn_gate_bias": dict(rule="dnn", rule_params={"gate": 1, "gate_on": "bias"}, **AUTO),
    "rnn_gate_bias": dict(rule="rnn", rule_params={"gate": 1, "gate_on": "bias"}, **AUTO),
    # the bias weight's own correction alone gated (the stimulus weight's drift kept)
    **{f"{rule}_gate_bias_own": dict(rule=rule, rule_params={"gate": 1, "gate_on": "bias",
                                                             "gate_all": False}, **AUTO)
       for rule in ("dnn", "rnn")},
    **GATE_AGAINST,  # gated against the bias (training_settings)
    "dnn_gate_bias_free_stimulus": dict(rule="dnn", rule_params={"gate": 1, "gate_on": "bias"},
                                        **{**AUTO, "free_running": 1.0},
                                        free_weights=("stimulus",)),
    # the same without the correction prior (the prior slows block switches; the gate is
    # meant to stop the lock-ins that the prior held back)
    "dnn_gate_bias_prior0": dict(rule="dnn", rule_params={"gate": 1, "gate_on": "bias"},
                                 **{**AUTO, "correction_prior": 0.0}),
    "rnn_leak": dict(rule="rnn", rule_params={"base": "reinforce_baseline_leak"}, **AUTO),
    "reinforce_baseline_noise": dict(rule="reinforce_baseline", **NOISE),
    # noise that falls back to the learned weights (noise_reversion), fitted longer
    "reinforce_baseline_noise_revert": dict(rule="reinforce_baseline", **REVERTING,
                                            max_epochs=60),
    "dnn_noise_revert": dict(rule="dnn", **AUTO, **REVERTING, max_epochs=40),
    "dnn_noise_revert_guard1": dict(rule="dnn", **AUTO, **REVERTING, max_epochs=40,
                                    drift_guard=1.0),
    "dnn_teacher_forced": dict(rule="dnn"),  # the default until stop 20
    "dnn_wd10": dict(rule="dnn", weight_decay=10.0),
    "dnn_prev_choice": dict(rule="dnn", covariates=HISTORY),
    "dnn_noise": dict(rule="dnn", **NOISE),
    "dnn_noise_wd10": dict(rule="dnn", weight_decay=10.0, **NOISE),
    "dnn_noise_free1": dict(rule="dnn", free_running=1.0, **NOISE),
    "dnn_noise_free1_tbptt500": dict(rule="dnn", free_running=1.0, tbptt=500, **NOISE),
    "dnn_free03": dict(rule="dnn", free_running=0.3),
    "dnn_free1": dict(rule="dnn", free_running=1.0),
    "dnn_free1_cosine": dict(rule="dnn", free_running=1.0, lr_schedule="cosine"),
    "dnn_free1_wd10": dict(rule="dnn", free_running=1.0, weight_decay=10.0),
    "dnn_free3_cosine": dict(rule="dnn", free_running=3.0, lr_schedule="cosine"),
    "dnn_free03_cosine": dict(rule="dnn", free_running=0.3, lr_schedule="cosine"),
    "dnn_cosine": dict(rule="dnn", lr_schedule="cosine"),
    "rnn_teacher_forced": dict(rule="rnn"),
    "rnn_free03": dict(rule="rnn", free_running=0.3),
    "rnn_free1": dict(rule="rnn", free_running=1.0),
    "rnn_free1_cosine": dict(rule="rnn", free_running=1.0, lr_schedule="cosine"),
    "rnn_noise": dict(rule="rnn", **NOISE),
    "rnn_noise_wd10": dict(rule="rnn", weight_decay=10.0, **NOISE),
}
# the defaults with weight noise, and the networks nesting the leak rule trained free too
VARIANTS.update({
    "dnn_noise_prior": dict(rule="dnn", **{**AUTO, **NOISE}),
    "rnn_noise_prior": dict(rule="rnn", **{**AUTO, **NOISE}),
    "dnn_leak_free1": dict(rule="dnn", rule_params={"base": "reinforce_baseline_leak"},
                           **{**AUTO, "free_running": 1.0}),
    "rnn_leak_free1": dict(rule="rnn", rule_params={"base": "reinforce_baseline_leak"},
                           **{**AUTO, "free_running": 1.0}),
})
# the stimulus weight's free-running term training the nested classic rule alone
VARIANTS.update(FREE_STIMULUS_BASE)
VARIANTS.update(PREV_SIDE)
VARIANTS.update(SIDE_TRACE)
# the prior chosen per fit on held-out data of the training set: none or the class default
VARIANTS.update({f"{rule}_choose_prior": dict(
    rule=rule, **{**AUTO, "correction_prior": (0.0, strength)})
    for rule, strength in (("dnn", 30.0), ("rnn", 10.0))})
# the defaults with the drift guard (ibl_learnrules.drift_guard): no expected drift further
# out beyond the visited weights, widened by half their range
VARIANTS.update({f"{rule}_guard{strength:g}": dict(
    rule=rule, **{**AUTO, "drift_guard": float(strength)})
    for rule in ("dnn", "rnn") for strength in (1, 10)})
# the defaults with a Gaussian prior on the correction, shared over the training trials
VARIANTS.update({f"{rule}_prior{strength}": dict(
    rule=rule, **{**AUTO, "correction_prior": float(strength)})
    for rule in ("dnn", "rnn") for strength in (0, 1, 3, 10, 30, 100)})


def fitted(name: str, seed: int, ensemble: int, data):
    """Fit a variant with ``seed``; with ``ensemble`` > 1 a SeedEnsemble of seeds seed, ..."""
    est = LearningRuleGLM(random_state=seed, **{**TEACHER_FORCED, **VARIANTS[name]})
    if ensemble > 1:
        est = SeedEnsemble(est, n_members=ensemble, random_state=seed)
    return est.fit(data)


def baseline(est) -> str:
    """The fitted ``beta`` of the classic rule the estimator's rule is or nests (member 0's)."""
    est = est.estimators_[0] if isinstance(est, SeedEnsemble) else est
    betas = [v for k, v in est.rule_.state_dict().items() if k.split(".")[-1] == "beta"]
    return "-" if not betas else ", ".join(f"{b:.2f}" for b in betas[0].tolist())


def curves(check) -> str:
    """KS014's and the free twins' mean easy-trial correct and repeat fraction per session,
    and each free twin's sessions to ``trained_1a`` (sorted; "-" never)."""
    animal = check.sessions["mode"] == "animal"
    n_sessions = check.sessions.loc[animal, "session_idx"].max() + 1
    sessions = check.sessions[check.sessions["session_idx"] < n_sessions]
    lines = []
    for metric in ("easy_correct", "repeat_fraction"):
        mean = sessions.groupby(["mode", "session_idx"])[metric].mean().unstack("session_idx")
        for mode, label in (("animal", "KS014"), ("free", "twins")):
            lines.append(f"    {metric:<15s} {label:<5s} "
                         + " ".join(f"{v:.2f}" for v in mean.loc[mode]))
    trained = check.subjects.loc[check.subjects["mode"] == "free", "sessions_to_trained"]
    lines.append("    twins to trained_1a  "
                 + " ".join("-" if v != v else f"{v:g}" for v in np.sort(trained.to_numpy())))
    return "\n" + "\n".join(lines)


def ks014_line(est, ks014, n_twins: int, twin_seed: int = 0,
               free_sessions: int | None = None, show_curves: bool = False) -> str:
    """A variant fitted on KS014: its free twins (and replay twins) against the mouse."""
    check = check_twins(est, ks014, n_twins=n_twins, random_state=twin_seed,
                        modes=("free", "replay"), psychometrics=False,
                        free_sessions=free_sessions)
    row = check.summary.set_index(["metric", "mode"])
    trained = row.loc[("sessions_to_trained", "free")]
    median = "never" if trained["twins_median"] != trained["twins_median"] else (
        f"{trained['twins_median']:g}")
    return (f"{est.score(ks014):+8.4f} {baseline(est):>18s} {median:>6s} "
            f"{int(trained['not_reached']):>3d}/{n_twins:<2d} {trained['percentile']:5.2f} "
            f"{row.loc[('easy_correct', 'free'), 'rms']:6.3f} "
            f"{row.loc[('repeat_fraction', 'free'), 'twins_median']:7.2f} "
            f"{row.loc[('easy_correct', 'replay'), 'rms']:7.3f}"
            + (curves(check) if show_curves else ""))


def switch_line(est, mice, n_twins: int, twin_seed: int = 0) -> str:
    """A variant fitted on the 27 mice's biased sessions: trials to half a block switch."""
    check = check_twins(est, mice, n_twins=n_twins, random_state=twin_seed, modes=("replay",),
                        psychometrics=False)
    half = check.subjects.groupby("mode")["switch_half_trials"].median()
    return f"{est.score(mice):+8.4f} {half['animal']:8.2f} {half['replay']:8.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--twins", type=int, default=20)
    parser.add_argument("--free-sessions", type=int, default=None,
                        help="sessions of KS014's free twins (default 15, KS014's: a twin "
                             "that trains after that counts as never trained)")
    parser.add_argument("--twin-seed", default="0",
                        help="seed(s) of the twins, comma-separated: one line per twin seed, "
                             "the fit shared (20 twins of one seed are a noisy measure)")
    parser.add_argument("--seeds", default="0",
                        help="fit seeds, comma-separated: one line per variant and seed")
    parser.add_argument("--block-switches", action="store_true",
                        help="instead of KS014: fit on the 27 mice's first two biased "
                             "sessions, 10 replay twins per mouse, trials to half of the "
                             "post-switch change (median over mice)")
    parser.add_argument("--curves", action="store_true",
                        help="under each KS014 line, KS014's and the free twins' mean "
                             "easy-trial correct and repeat fraction per session, and each "
                             "twin's sessions to trained_1a")
    parser.add_argument("--ensemble", type=int, default=1,
                        help="fit each variant as a SeedEnsemble of this many seeds (from "
                             "each --seeds value); each twin is one member's")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*no-go trial")
    if args.block_switches:
        data, line = load_ibl_mice("biased", max_sessions=2), switch_line
        args.twins = 10
        print(f"{'variant':<36s} {'loglik':>8s} {'mice':>8s} {'twins':>8s}  (block switches: "
              "trials to half; target: twins within 30 % of the mice)")
    else:
        data = load_ks014()
        line = functools.partial(ks014_line, free_sessions=args.free_sessions,
                                 show_curves=args.curves)
        print(f"{'variant':<36s} {'loglik':>8s} {'beta (stim, bias)':>18s} {'to 1a':>6s} "
              f"{'never':>6s} {'pct':>5s} {'RMS':>6s} {'repeats':>7s} {'replay':>7s}  "
              "(KS014: 14 sessions, repeats 0.27)")
    twin_seeds = [int(t) for t in args.twin_seed.split(",")]
    for name, seed in itertools.product(args.variants.split(","),
                                        [int(s) for s in args.seeds.split(",")]):
        start = time.perf_counter()
        est = fitted(name, seed, args.ensemble, data)
        label = name if seed == 0 else f"{name} (seed {seed})"
        if args.ensemble > 1:
            label += f" x{args.ensemble}"
        for twin_seed in twin_seeds:
            shown = label if len(twin_seeds) == 1 else f"{label} twins {twin_seed}"
            print(f"{shown:<36s} {line(est, data, args.twins, twin_seed)}  "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
            start = time.perf_counter()


if __name__ == "__main__":
    main()

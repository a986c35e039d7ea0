"""What sets a twin's pace? REINFORCE with baseline on KS014, fitted and edited many ways.

Usage::

    NUMBA_NUM_THREADS=1 python benchmarks/bench_identification.py            # every variant
    python benchmarks/bench_identification.py --variants teacher_forced,reinforce_noise
    python benchmarks/bench_identification.py --thirds                       # KS014's data only
    python benchmarks/bench_identification.py --drift                        # where biases go

Fitted teacher-forced, REINFORCE with baseline ``dw = alpha (r - beta) (y - p) x`` has two
parts: a reward-driven one, ``alpha r (y - p) x``, and one that follows the animal's
choice whatever the outcome, ``-alpha beta (y - p) x`` (KS014: ``beta`` about -8, so the
second is eight times the first). In a free twin only the reward-driven part has a mean
(``E[y - p] = 0`` under the twin's own policy), so it alone sets the pace at which a twin
learns; the choice-following part is a zero-mean random walk. Each variant is fitted on all
15 of KS014's sessions (seed 0) and run as 20 free twins and 20 replay twins
(:func:`ibl_learnrules.twins.check_twins`, seed 0, no psychometric fits). Printed: the
in-sample log-likelihood (per trial; through the filter for noisy variants), the fitted
reward-driven gain ``alpha`` and choice-following gain (stimulus, bias), the twins' median
sessions to ``trained_1a`` (KS014: 14), how many never get there, the median among those
that do, the easy-trial correct RMS against KS014 (free, replay).

Variants:

* ``teacher_forced``: the package's ``reinforce_baseline``.
* ``bounded_baseline``: the baseline held in [0, 1], as a reward expectation would be, so
  that no part of the update follows the choice regardless of the outcome (a rule defined
  here, fitted through the torch loop: minutes).
* ``choice_trace``: the choice-following part moved to a separate leaky trace added to the
  policy weights, ``h <- (1 - rho) h + kappa (y - p) x``, so that it cannot borrow the
  reward-driven gain (defined here; torch loop, about 5 minutes).
* ``reinforce``: ``beta`` = 0, the reward-driven part alone.
* ``overnight``: REINFORCE with baseline whose weights fall part of the way back to a
  resting point at each session's first trial (KS014 gains within sessions and loses part
  of it overnight: ``--thirds``; defined here, torch loop).
* ``*_noise``: the same rules with weight noise (``weight_noise="learn"``, the filter's
  likelihood, 30 epochs): the animal's own fluctuations go to the noise.
* ``teacher_forced_a<s>[_b<beta>]``: the teacher-forced fit with ``alpha`` multiplied by
  ``s`` (and ``beta`` set to a value) after fitting: how the twins' pace and lock-in follow
  each part. Their log-likelihood is that of the edited rule, teacher forced.

Measured on a 2-core CPU (stop 24's note on issue 16 has the table): teacher forcing puts
most of the update in the choice-following part; given a trace of its own for that part,
the fit drops the reward-driven gain to 0.001 and no twin trains; with weight noise the
gain is about the teacher-forced one (0.005-0.0075), and the twins either learn faster than
KS014 or lock into a bias.

``--mean-field`` prints what the free-running likelihood (``free_running=``) asks of a
rule on KS014: the mean-field log-likelihood per trial of the teacher-forced fit with its
reward-driven stimulus gain set to each of a range of values (bias gain 1e-5), and where
the mean-field weights end. Measured: chance level (-0.693 per valid trial) with no
learning, the best (-0.647, 0.046 above) for gains of 3e-4 to 1e-3 that end with a
stimulus weight of 0.7-1.8, far below chance (-0.821) for the gain that reaches KS014's
final weight (~3): KS014's early sessions are ruled by a bias the mean field cannot follow
(every twin's bias averages to ~0), so the term pays for learning slowly.

``--drift`` prints where a free twin's bias goes: the expected update of the bias weight
under the policy's own choice, ``p dw(right) + (1 - p) dw(left)``, averaged over the 12
signed contrasts, on a grid of bias weights, for the package's ``dnn`` (teacher forced,
defaults), the same with its correction gated (``rule_params={"gate": 1}``; and on the
bias weight's own sigmoid, ``{"gate": 1, "gate_on": "bias"}``) and
``reinforce_baseline``, fitted to KS014; the correct side either follows the contrast
(zero contrast: both sides) or, as in a twin caught in debiasing repeats, is always the side
its bias avoids. Measured (stimulus weight 0.5, debiasing): ``dnn`` -0.0024 per trial at
a bias of -8 and of +8 alike, the drift that carries a twin's bias away where REINFORCE's
restoring step has vanished (p near 0 or 1); ``reinforce_baseline`` ~0 there.

``--thirds`` prints KS014's easy-trial correct in each third of every session instead:
within a session and from one session to the next. ``--trajectories`` prints, for each
variant, 20 free twins' easy-trial correct and weights at the end of every session (seed 1)
and how far their bias weights wander.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from torch import nn

from ibl_learnrules import LearningRuleGLM, load_ks014
from ibl_learnrules.closed_loop import expected_update
from ibl_learnrules.rules.base import per_weight_log_parameter, per_weight_parameter
from ibl_learnrules.rules.classic import ReinforceBaseline, baseline_gain
from ibl_learnrules.twins import BLOCK_PRIORS, EASY_CONTRAST, check_twins, session_metrics

NOISE = {"weight_noise": "learn", "max_epochs": 30}


def logit(fraction: float) -> float:
    """Inverse of the sigmoid: the stored value of a parameter used as ``sigmoid(value)``."""
    return float(np.log(fraction / (1 - fraction)))


class BoundedBaseline(ReinforceBaseline):
    """REINFORCE with baseline whose baseline is ``sigmoid(beta)``, in [0, 1]."""

    name = "reinforce_baseline_bounded"

    def gain(self, trial):
        """``(r - sigmoid(beta)) (y - p)`` per weight."""
        return baseline_gain(torch.sigmoid(self.beta), trial)

    def chunk_kernel(self):
        """None: the torch loop (the compiled kernel is REINFORCE with baseline's)."""
        return None


class ChoiceTrace(ReinforceBaseline):
    """REINFORCE with baseline plus a leaky trace of the choices, added to the policy weights.

    The state ``h`` (B, K) is the trace; the rule returns the learned step plus the trace's
    change, so that the policy weights are the learned weights plus ``h``.
    """

    name = "reinforce_baseline_trace"

    def __init__(self, n_weights, alpha=0.01, beta=0.5, kappa=0.05, rho=0.01):
        super().__init__(n_weights, alpha, beta)
        self.log_kappa = per_weight_log_parameter(n_weights, kappa, "kappa")
        self.logit_rho = per_weight_parameter(n_weights, logit(rho), "rho")

    def initial_state(self, n_animals, device=None):  # noqa: D102
        return torch.zeros(n_animals, self.n_weights, device=device, dtype=self.beta.dtype)

    def forward(self, w, trial, state=None):
        """Learned step plus the trace's change; the new trace is the new state."""
        learned, _ = super().forward(w, trial)
        trace = ((1 - torch.sigmoid(self.logit_rho)) * state
                 + self.log_kappa.exp() * (trial.y - trial.p).unsqueeze(-1) * trial.x)
        return learned + (trace - state), trace

    def chunk_kernel(self):
        """None: the torch loop."""
        return None


class OvernightForgetting(ReinforceBaseline):
    """REINFORCE with baseline; on a session's first trial, ``w`` moves a fraction
    ``sigmoid(forget)`` of the way to ``rest`` (per weight)."""

    name = "reinforce_baseline_overnight"

    def __init__(self, n_weights, alpha=0.01, beta=0.5, forget=0.1, rest=0.0):
        super().__init__(n_weights, alpha, beta)
        self.logit_forget = per_weight_parameter(n_weights, logit(forget), "forget")
        self.rest = per_weight_parameter(n_weights, rest, "rest")

    def forward(self, w, trial, state=None):
        """REINFORCE with baseline's step, less the overnight fall on a session's first trial."""
        dw, state = super().forward(w, trial, state)
        night = torch.sigmoid(self.logit_forget) * (w - self.rest)
        return dw - trial.new_session.unsqueeze(-1) * night, state

    def chunk_kernel(self):
        """None: the torch loop."""
        return None


VARIANTS = {
    "teacher_forced": dict(rule="reinforce_baseline"),
    "bounded_baseline": dict(rule="reinforce_baseline_bounded", rule_params={"beta": 0.0}),
    "choice_trace": dict(rule="reinforce_baseline_trace"),
    "reinforce": dict(rule="reinforce"),
    "overnight": dict(rule="reinforce_baseline_overnight"),
    "teacher_forced_noise": dict(rule="reinforce_baseline", **NOISE),
    "bounded_baseline_noise": dict(rule="reinforce_baseline_bounded",
                                   rule_params={"beta": 0.0}, **NOISE),
    "reinforce_noise": dict(rule="reinforce", **NOISE),
    "leak_noise": dict(rule="reinforce_baseline_leak", **NOISE),
    "overnight_noise": dict(rule="reinforce_baseline_overnight", **NOISE),
}
#: Teacher-forced fit, then (alpha multiplier, beta or None to keep it).
EDITED = {"teacher_forced_a0.5": (0.5, None), "teacher_forced_a0.3": (0.3, None),
          "teacher_forced_a1_b0.5": (1.0, 0.5), "teacher_forced_a0.5_b0.5": (0.5, 0.5),
          "teacher_forced_a0.3_b0.5": (0.3, 0.5)}


def classic_part(est) -> nn.Module:
    """The fitted classic rule (inside the noise wrapper for noisy fits)."""
    return getattr(est.rule_, "base", est.rule_)


def gains(rule: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """Reward-driven gain ``alpha`` and choice-following gain per weight."""
    with torch.no_grad():
        alpha = rule.log_alpha.exp().double().numpy()
        beta = getattr(rule, "beta", None)
        if beta is None:
            follow = np.zeros_like(alpha)
        elif isinstance(rule, BoundedBaseline):
            follow = -alpha * torch.sigmoid(beta).double().numpy()
        else:
            follow = -alpha * beta.double().numpy()
        if isinstance(rule, ChoiceTrace):
            follow = follow + rule.log_kappa.exp().double().numpy()
    return alpha, follow


def fit(name: str, ks014):
    """Fit a variant (an edited one: its teacher-forced fit, then the edit)."""
    if name in EDITED:
        est = LearningRuleGLM(rule="reinforce_baseline", random_state=0).fit(ks014)
        scale, beta = EDITED[name]
        with torch.no_grad():
            est.rule_.log_alpha.add_(float(np.log(scale)))
            if beta is not None:
                est.rule_.beta.fill_(beta)
        return est
    return LearningRuleGLM(random_state=0, **VARIANTS[name]).fit(ks014)


def line(name: str, ks014, n_twins: int) -> str:
    """One variant's fit and twins."""
    est = fit(name, ks014)
    alpha, follow = gains(classic_part(est))
    check = check_twins(est, ks014, n_twins=n_twins, random_state=0, modes=("free", "replay"),
                        psychometrics=False)
    row = check.summary.set_index(["metric", "mode"])
    free = row.loc[("sessions_to_trained", "free")]
    trained = check.subjects.query("mode == 'free'")["sessions_to_trained"].dropna()

    def sessions(value) -> str:
        return "never" if value != value else f"{value:g}"

    return (f"{est.score(ks014):+8.4f} {alpha[0]:8.5f} {alpha[1]:8.5f} {follow[0]:+8.4f} "
            f"{follow[1]:+8.4f} {sessions(free['twins_median']):>6s} "  # never counts as last
            f"{int(free['not_reached']):>3d}/{n_twins:<2d} "
            f"{sessions(trained.median()):>7s} {row.loc[('easy_correct', 'free'), 'rms']:6.3f} "
            f"{row.loc[('easy_correct', 'replay'), 'rms']:7.3f}")


def thirds(ks014) -> None:
    """KS014's easy-trial correct (non-repeat trials) in each third of every session."""
    contrast = ks014["contrastLeft"].fillna(ks014["contrastRight"])
    fresh = ks014["probabilityLeft"].round(6).isin(BLOCK_PRIORS)  # as the twin check counts
    easy = ks014[(contrast >= EASY_CONTRAST) & fresh]
    print(f"{'session':>7s} {'easy trials':>11s} {'first':>6s} {'middle':>6s} {'last':>6s} "
          f"{'overnight':>9s}  (easy-trial correct by thirds of the session)")
    last = np.nan
    for i, (_, session) in enumerate(easy.groupby("session", sort=False)):
        correct = (session["feedbackType"] == 1).to_numpy()
        parts = [part.mean() for part in np.array_split(correct, 3)]
        print(f"{i:7d} {len(correct):11d} {parts[0]:6.2f} {parts[1]:6.2f} {parts[2]:6.2f} "
              f"{parts[0] - last:+9.2f}")
        last = parts[2]


def trajectories(name: str, ks014, n_twins: int) -> None:
    """Free twins' easy-trial correct and end-of-session weights, session by session."""
    est = fit(name, ks014)
    twins = est.simulate({"n_subjects": n_twins, "n_sessions": ks014["session"].nunique()},
                         random_state=1)
    easy = session_metrics(twins, psychometrics=False).pivot(
        index="subject", columns="session_idx", values="easy_correct")
    ends = twins.groupby(["subject", "session_idx"])[["w_stimulus", "w_bias"]].last()
    print(f"{name}: free twins, easy-trial correct / w_stimulus / w_bias at each session's end")
    for subject, row in easy.iterrows():
        print(f"  {subject} correct {' '.join(f'{v:5.2f}' for v in row)}")
        for weight in ("w_stimulus", "w_bias"):
            values = ends.loc[subject, weight]
            print(f"  {'':6s} {weight[2:6]:>7s} {' '.join(f'{v:5.1f}' for v in values)}")
    peak = ends["w_bias"].abs().groupby(level="subject").max()
    print(f"  twins whose bias weight ends a session beyond +-5: {int((peak > 5).sum())} of "
          f"{n_twins}; largest {peak.max():.1f}")


def mean_field_scan(ks014) -> None:
    """Mean-field log-likelihood of KS014 against REINFORCE with baseline's stimulus gain."""
    from ibl_learnrules import featurize
    from ibl_learnrules.closed_loop import mean_field_rollout
    from ibl_learnrules.engine import TensorBatch

    rule = LearningRuleGLM(rule="reinforce_baseline", random_state=0).fit(ks014).rule_.double()
    batch = TensorBatch.from_arrays(featurize(ks014), torch.device("cpu"), dtype=torch.float64)
    n_valid = float(batch.valid.sum())
    print(f"{'stimulus gain':>13s} {'MF loglik':>9s} {'end weights (stim, bias)':>25s}  "
          f"(chance {-np.log(2):.4f})")
    with torch.no_grad():
        for gain in (1e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2):
            rule.log_alpha.copy_(torch.log(torch.tensor([gain, 1e-5], dtype=torch.float64)))
            result = mean_field_rollout(rule, batch, torch.zeros(1, 2, dtype=torch.float64))
            end = result.w[-1].numpy()
            print(f"{gain:13.0e} {float(result.loglik.sum()) / n_valid:9.4f} "
                  f"{end[0]:12.2f}, {end[1]:.2f}")


def drift(ks014) -> None:
    """Print the expected bias update of fitted rules on a grid of bias weights."""
    contrasts = np.array([-1, -0.5, -0.25, -0.125, -0.0625, 0, 0, 0.0625, 0.125, 0.25, 0.5, 1])
    n = len(contrasts)
    x = torch.tensor(np.c_[contrasts, np.ones(n)], dtype=torch.float32)
    biases = (-8, -4, -2, -1, 0, 1, 2, 4, 8)
    models = {"dnn": dict(rule="dnn"), "dnn gated": dict(rule="dnn", rule_params={"gate": 1}),
              "dnn gated on bias": dict(rule="dnn", rule_params={"gate": 1, "gate_on": "bias"}),
              "reinforce_baseline": dict(rule="reinforce_baseline")}
    print(f"{'rule':<20s} {'stim':>4s} {'debias':>6s}  E[d bias] per trial at bias "
          + " ".join(f"{b:+d}" for b in biases))
    for label, params in models.items():
        est = LearningRuleGLM(random_state=0, **params).fit(ks014)
        assert est.covariates == ("stimulus", "bias")
        for stimulus in (0.5, 2.0):
            for debias in (False, True):
                row = []
                for bias in biases:
                    if debias:  # the correct side is always the one the bias avoids
                        side = torch.full((n,), 0.0 if bias > 0 else 1.0)
                    else:  # zero contrast: one trial each side
                        side = torch.tensor((contrasts > 0) + (contrasts == 0) * (np.arange(n) % 2),
                                            dtype=torch.float32)
                    w = torch.tensor([[stimulus, float(bias)]] * n)
                    with torch.no_grad():
                        expected, _ = expected_update(est.rule_, w, x, side, torch.zeros(n),
                                                      torch.sigmoid((w * x).sum(-1)))
                    row.append(f"{float(expected[:, 1].mean()):+.4f}")
                print(f"{label:<20s} {stimulus:4.1f} {int(debias):6d}  " + " ".join(row),
                      flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join([*VARIANTS, *EDITED]))
    parser.add_argument("--twins", type=int, default=20)
    parser.add_argument("--thirds", action="store_true",
                        help="print KS014's easy-trial correct by thirds of each session")
    parser.add_argument("--mean-field", action="store_true",
                        help="print the mean-field log-likelihood of KS014 against the "
                             "reward-driven stimulus gain")
    parser.add_argument("--drift", action="store_true",
                        help="print fitted rules' expected bias update on a grid of biases")
    parser.add_argument("--trajectories", action="store_true",
                        help="print each variant's free twins session by session")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*no-go trial")
    warnings.filterwarnings("ignore", message="Mean of empty slice")  # twins that never train
    ks014 = load_ks014()
    if args.thirds:
        thirds(ks014)
        return
    if args.mean_field:
        mean_field_scan(ks014)
        return
    if args.drift:
        drift(ks014)
        return
    names = args.variants.split(",")
    unknown = sorted(set(names) - set(VARIANTS) - set(EDITED))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {[*VARIANTS, *EDITED]}")
    if args.trajectories:
        for name in names:
            trajectories(name, ks014, args.twins)
        return
    print(f"{'variant':<26s} {'loglik':>8s} {'alpha_s':>8s} {'alpha_b':>8s} {'follow_s':>8s} "
          f"{'follow_b':>8s} {'to 1a':>6s} {'never':>6s} {'trained':>7s} {'RMS':>6s} "
          f"{'replay':>7s}  (KS014: 14 sessions; 'trained': median of the twins that get there)")
    for name in names:
        start = time.perf_counter()
        print(f"{name:<26s} {line(name, ks014, args.twins)}  ({time.perf_counter() - start:.0f} s)",
              flush=True)


if __name__ == "__main__":
    main()

"""Our random-walk model (``rule="none"`` + weight noise) against PsyTrack on the same mouse.

PsyTrack fits the same model (a Gaussian random walk of GLM weights) by MAP weights with the
noise chosen by the Laplace evidence; ours filters and learns the noise by the one-step-ahead
likelihood. On one simulated random-walk mouse both should find similar noise and nearly the
same trajectory. About 10 s.
"""

import numpy as np
import pytest

from ibl_learnrules import LearningRuleGLM, featurize, simulate_cohort

hyper_opt = pytest.importorskip("psytrack.hyperOpt", reason="PsyTrack is not installed "
                                "(pip install psytrack; part of the test extra)").hyperOpt

NAMES = ["stimulus", "bias"]


def psytrack_fit(x, y):
    """PsyTrack's sd per weight and MAP weights (T, K), in our covariate order."""
    dat = {"y": y.astype(float).copy(), "inputs": {n: x[:, [k]] for k, n in enumerate(NAMES)}}
    hyper = {"sigInit": 4.0, "sigma": [2.0 ** -4] * len(NAMES), "sigDay": None}
    best, _, w_mode, _ = hyper_opt(dat, hyper, {n: 1 for n in NAMES}, ["sigma"],
                                   hess_calc=None)
    back = [sorted(NAMES).index(n) for n in NAMES]  # PsyTrack orders weights by name
    return np.asarray(best["sigma"])[back], np.asarray(w_mode)[back].T


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_random_walk_agrees_with_psytrack():
    truth = np.array([0.05, 0.03])
    mouse = simulate_cohort(1, rule="none", n_trials=2000, random_state=5, weight_noise=truth,
                            w0=(0.0, 0.0))
    arrays = featurize(mouse, NAMES)
    sd_psy, w_psy = psytrack_fit(arrays.x[0], arrays.y[0])
    est = LearningRuleGLM(rule="none", weight_noise="learn", max_epochs=8, lr=0.05,
                          device="cpu", random_state=0).fit(mouse)
    sd_ours = est.rule_.noise.sd.detach().numpy()
    ours = est.predict_trajectory(mouse, smoothed=True)
    for k, name in enumerate(NAMES):
        r = np.corrcoef(ours[f"w_{name}"], w_psy[:, k])[0, 1]
        # both are posterior means of the same model given all the choices
        assert r > 0.95
    # seed 5: stimulus 0.065 ours, 0.056 PsyTrack (truth 0.05); bias 0.013 and 0.021 (truth
    # 0.03). One mouse pins the bias noise down poorly (a trained mouse's choices follow the
    # stimulus): PsyTrack misses it by 30 %, we by 55 %. Iterating our update to the
    # posterior mode or moment matching moved these by < 1 %: it is the estimator (one-step
    # predictions vs evidence), not the filter's approximation. Cohorts recover both
    # (tests/test_noise.py). So: stimulus within 25 %, bias within a factor of 2.
    assert sd_ours[0] == pytest.approx(sd_psy[0], rel=0.25)
    assert 0.5 < sd_ours[1] / sd_psy[1] < 2.0

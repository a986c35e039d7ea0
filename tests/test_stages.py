import warnings

import numpy as np
import pytest
from brainbox.behavior.training import get_training_status
from iblutil.util import Bunch

from ibl_learnrules import simulate_cohort
from ibl_learnrules.stages import cut_at_stage, training_status


def brainbox_status(sessions):
    """brainbox's verdict on three sessions, fed directly (no code of ours in between)."""
    window = {}
    for i, s in enumerate(sessions):
        b = Bunch({k: s[k].to_numpy(float) for k in ("contrastLeft", "contrastRight",
                                                     "feedbackType", "probabilityLeft", "choice")})
        b["response_times"] = b["stimOn_times"] = np.full(len(s), np.nan)
        window[str(i)] = b
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # median of no reaction times
        return get_training_status(window, ["training"] * 3, [], 0)[0]


def test_cut_agrees_with_brainbox_on_a_simulated_mouse():
    mouse = simulate_cohort(1, n_sessions=12, random_state=0)
    cut = cut_at_stage(mouse, "trained_1a")
    sessions = [s for _, s in mouse.groupby("session_idx")]
    n_kept = cut["session"].nunique()
    assert 3 <= n_kept < len(sessions)
    assert cut.equals(mouse[mouse["session_idx"] < n_kept])
    # the last three kept sessions pass brainbox's 1a criteria; no earlier window did
    assert brainbox_status(sessions[n_kept - 3:n_kept]) == "trained 1a"
    for end in range(3, n_kept):
        assert brainbox_status(sessions[end - 3:end]) == "in training"


def test_ks014_reaches_1a_at_its_fourteenth_session(ks014):
    status = training_status(ks014)
    assert status["status"].tolist().index("trained 1a") == 13
    cut = cut_at_stage(ks014, "trained_1a")
    assert cut["session_idx"].max() == 13


def test_1b_needs_reaction_times(ks014):
    with pytest.warns(UserWarning, match="KS014 never reached trained_1b"):
        cut = cut_at_stage(ks014, "trained_1b")
    assert len(cut) == len(ks014)


def test_unknown_stage():
    with pytest.raises(ValueError, match="unknown training stage 'expert'"):
        cut_at_stage(simulate_cohort(1, n_trials=300, random_state=0), "expert")


def _every_window_by_brainbox(trials):
    """brainbox's verdict on each session with the two before it (the first two: none)."""
    sessions = [s for _, s in trials.groupby("session_idx")]
    return ["in training"] * 2 + [brainbox_status(sessions[i - 2:i + 1])
                                  for i in range(2, len(sessions))]


@pytest.mark.parametrize("case", ["ks014", "simulated", "short_sessions"])
def test_every_session_is_judged_as_brainbox_judges_it(case, ks014):
    # training_status skips the psychometric fit of windows that fail the per-session
    # criteria; it must say what brainbox says of every window, including those it skipped:
    # sessions of 150 trials (too few for any stage) from a mouse that has learned
    mouse = simulate_cohort(1, n_sessions=10, random_state=0)
    trials = {"ks014": ks014, "simulated": mouse,
              "short_sessions": mouse[mouse["trial"] < 150]}[case]
    status = training_status(trials)["status"].tolist()
    assert status == _every_window_by_brainbox(trials)
    if case != "short_sessions":
        assert "trained 1a" in status  # the windows that pass were judged too

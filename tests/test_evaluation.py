import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import GroupKFold

from ibl_learnrules import LearningRuleGLM, simulate_cohort
from ibl_learnrules.evaluation import (
    compare_rules,
    held_out_future,
    paired_test,
    per_animal_scores,
)

FAST = {"max_epochs": 2, "tbptt": 200}


@pytest.fixture(scope="module")
def cohort():
    return simulate_cohort(4, n_trials=300, random_state=3, alpha=0.05)


def test_compare_rules_is_tidy_and_splits_by_animal(cohort):
    table = compare_rules(cohort, ["none", "reinforce"], cv=GroupKFold(2), seeds=(0, 1),
                          estimator_params=FAST)
    assert list(table.columns) == ["rule", "seed", "fold", "subject", "n_trials", "loglik",
                                   "bits", "accuracy", "correction_prior"]
    assert (table["correction_prior"] == 0.0).all()  # classic rules have no correction
    assert len(table) == 2 * 2 * 4  # rules x seeds x animals
    # every animal is scored exactly once per (rule, seed): held out in one fold
    assert table.groupby(["rule", "seed"])["subject"].apply(lambda s: s.is_unique).all()
    assert (table["n_trials"] == 300).all()
    np.testing.assert_allclose(table["bits"], (table["loglik"] + np.log(2)) / np.log(2))


def test_per_animal_scores_agree_with_score(cohort):
    est = LearningRuleGLM(rule="reinforce", random_state=0, **FAST).fit(cohort)
    per = per_animal_scores(est, cohort)
    weighted = np.average(per["loglik"], weights=per["n_trials"])
    assert weighted == pytest.approx(est.score(cohort), rel=1e-5)
    proba = est.predict_proba(cohort)[:, 1]
    p_observed = np.where(cohort["choice"] == -1, proba, 1 - proba)
    # a hit: the observed choice got more than even odds; a tie (p = 0.5, e.g. every animal's
    # first trial from zero weights) counts half
    hit = np.where(np.abs(p_observed - 0.5) < 1e-6, 0.5, p_observed > 0.5)
    assert (np.abs(p_observed - 0.5) < 1e-6).sum() >= cohort["subject"].nunique()
    assert np.average(per["accuracy"], weights=per["n_trials"]) == pytest.approx(hit.mean())


def test_paired_test_direction():
    rng = np.random.default_rng(0)
    subjects = [f"m{i}" for i in range(10)]
    base = rng.normal(-0.5, 0.05, 10)
    results = pd.DataFrame({
        "rule": ["good"] * 10 + ["bad"] * 10,
        "subject": subjects * 2,
        "loglik": np.r_[base + 0.02 + rng.normal(0, 0.005, 10), base],
    })
    good = paired_test(results, "good", "bad")
    assert good["n_a_better"] == 10 and good["wilcoxon_p"] < 0.01 and good["mean_diff"] > 0
    bad = paired_test(results, "bad", "good")
    assert bad["wilcoxon_p"] > 0.9
    with pytest.raises(ValueError, match="rule 'ugly' is not in the results"):
        paired_test(results, "ugly", "bad")


def test_held_out_future_scores_only_later_sessions(ks014):
    first_three = ks014[ks014["session_idx"] < 4]
    table = held_out_future(first_three, ["none"], n_train_sessions=3,
                            estimator_params=FAST | {"random_state": 0})
    assert table["n_trials"].tolist() == [(ks014["session_idx"] == 3).sum()]
    with pytest.raises(ValueError, match="n_train_sessions must lie between 1 and 3"):
        held_out_future(first_three, ["none"], n_train_sessions=4)


def test_compare_rules_needs_two_animals(cohort):
    with pytest.raises(ValueError, match="at least 2 animals"):
        compare_rules(cohort[cohort["subject"] == "sim000"], ["none"])


def test_parallel_and_dask_runs_match_the_serial_one(cohort):
    from dask.distributed import Client, LocalCluster, get_task_stream
    from joblib import parallel_config

    kwargs = dict(cv=GroupKFold(2), seeds=(0, 1), estimator_params=FAST)
    rules = ["reinforce", "dnn"]
    serial = compare_rules(cohort, rules, **kwargs)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        with parallel_config(backend="dask"), get_task_stream(client) as tasks:
            distributed = compare_rules(cohort, rules, n_jobs=-1, **kwargs)
        assert len(tasks.data) >= 8  # the 2 x 2 x 2 fits ran on the cluster's workers
    pd.testing.assert_frame_equal(serial, distributed)

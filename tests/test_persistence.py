import json

import numpy as np
import pandas as pd
import pytest
import torch

from ibl_learnrules import (
    LearningRuleGLM,
    SeedEnsemble,
    __version__,
    load_model,
    save_model,
    simulate_cohort,
)
from ibl_learnrules.io.nwb import write_results


@pytest.fixture(scope="module")
def cohort():
    return simulate_cohort(3, n_trials=300, random_state=0, alpha=0.05)


@pytest.mark.parametrize("rule", ["none", "q_learning", "dnn", "rnn"])
def test_save_load_round_trip_predicts_identically(tmp_path, cohort, rule):
    est = LearningRuleGLM(rule=rule, hidden_size=8, max_epochs=2, tbptt=100,
                          init_weights="fitted", random_state=0).fit(cohort)
    path = save_model(est, tmp_path / "model.pt")
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.predict_proba(cohort), est.predict_proba(cohort))
    assert loaded.get_params() == est.get_params() | {"device": "cpu"}
    assert loaded.subjects_ == est.subjects_ and loaded.n_iter_ == 2
    assert loaded.history_.equals(est.history_)


def test_the_file_loads_without_pickle(tmp_path, cohort):
    est = LearningRuleGLM(rule="reinforce", max_epochs=1, random_state=0).fit(cohort)
    path = save_model(est, tmp_path / "m.pt")
    blob = torch.load(path, weights_only=True)
    config = json.loads(blob["config"])
    assert config["package_version"] == __version__
    assert set(blob["state_dict"]) == {"log_alpha"}


def test_version_mismatch_is_a_clear_error(tmp_path, cohort):
    est = LearningRuleGLM(rule="reinforce", max_epochs=1, random_state=0).fit(cohort)
    path = save_model(est, tmp_path / "m.pt")
    blob = torch.load(path, weights_only=True)
    config = json.loads(blob["config"])
    config["package_version"] = "0.0.1"
    torch.save({"config": json.dumps(config), "state_dict": blob["state_dict"]}, path)
    with pytest.raises(ValueError, match=rf"saved by ibl_learnrules 0.0.1, this is {__version__}"):
        load_model(path)
    assert load_model(path, allow_version_mismatch=True).rule_name_ == "reinforce"


def test_unfitted_save_and_foreign_files_are_refused(tmp_path):
    with pytest.raises(Exception, match="not fitted"):
        save_model(LearningRuleGLM(), tmp_path / "x.pt")
    junk = tmp_path / "junk.pt"
    junk.write_text("hello")
    with pytest.raises(ValueError, match="is not a model saved by save_model"):
        load_model(junk)


def test_a_failed_save_leaves_the_existing_file_untouched(tmp_path, cohort):
    est = LearningRuleGLM(rule="reinforce", max_epochs=1, random_state=0).fit(cohort)
    path = save_model(est, tmp_path / "m.pt")
    before = path.read_bytes()
    est.history_ = est.history_.assign(train_loss=object())  # not JSON: fails mid-save
    with pytest.raises(TypeError):
        save_model(est, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


@pytest.mark.parametrize("noise", ["learn", np.array([0.02, 0.0])])
def test_noisy_estimator_round_trips(tmp_path, cohort, noise):
    est = LearningRuleGLM(rule="reinforce_baseline", weight_noise=noise, max_epochs=1,
                          random_state=0).fit(cohort)
    loaded = load_model(save_model(est, tmp_path / "noisy.pt"))
    assert loaded.noisy_
    np.testing.assert_array_equal(loaded.score_samples(cohort), est.score_samples(cohort))
    traj = loaded.predict_trajectory(cohort, smoothed=True)
    np.testing.assert_array_equal(traj["w_bias_sd"],
                                  est.predict_trajectory(cohort, smoothed=True)["w_bias_sd"])
    saved = loaded.get_params()["weight_noise"]
    assert saved == "learn" if isinstance(noise, str) else saved == [0.02, 0.0]


def test_seed_ensemble_round_trips_whole(tmp_path, cohort):
    template = LearningRuleGLM(rule="dnn", hidden_size=8, max_epochs=2, drift_guard=0.5)
    ens = SeedEnsemble(template, n_members=2, random_state=3).fit(cohort)
    loaded = load_model(save_model(ens, tmp_path / "ensemble.pt"))
    assert isinstance(loaded, SeedEnsemble)
    assert loaded.get_params(deep=False)["n_members"] == 2 and loaded.random_state == 3
    assert loaded.estimator.get_params() == template.get_params() | {"device": "cpu"}
    assert [m.random_state for m in loaded.estimators_] == [3, 4]
    np.testing.assert_array_equal(loaded.score_samples(cohort), ens.score_samples(cohort))
    twins = {"n_subjects": 3, "n_sessions": 1}
    pd.testing.assert_frame_equal(loaded.simulate(twins, 0), ens.simulate(twins, 0))
    # a file whose members and parameter sets disagree is refused, not half loaded
    blob = torch.load(tmp_path / "ensemble.pt", weights_only=True)
    torch.save({"config": blob["config"], "state_dicts": blob["state_dicts"][:1]},
               tmp_path / "cut.pt")
    with pytest.raises(ValueError, match="2 member configurations, 1 parameter sets"):
        load_model(tmp_path / "cut.pt")
    # NWB holds one rule per container: an ensemble is written member by member
    with pytest.raises(TypeError, match="got SeedEnsemble .write each of its estimators_"):
        write_results(tmp_path / "session.nwb", ens)


def test_save_refuses_what_is_not_an_estimator(tmp_path, cohort):
    with pytest.raises(TypeError, match="saves a LearningRuleGLM or a SeedEnsemble, got dict"):
        save_model({"rule": "dnn"}, tmp_path / "x.pt")
    with pytest.raises(Exception, match="not fitted"):
        save_model(SeedEnsemble(LearningRuleGLM()), tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()

"""The ndx-learning-rules extension: shipped spec in sync with its script, types round-trip."""

from datetime import datetime, timezone

import numpy as np
from pynwb import NWBHDF5IO, NWBFile

from ibl_learnrules.nwb import (
    NAMESPACE_PATH,
    LearningRuleModel,
    LearningTrajectory,
    ModelComparisonTable,
    RuleParameters,
)
from ibl_learnrules.nwb.make_spec import write_spec


def test_shipped_yaml_is_what_the_script_generates(tmp_path):
    generated = write_spec(tmp_path)
    for shipped in NAMESPACE_PATH.parent.glob("*.yaml"):
        assert (tmp_path / shipped.name).read_text() == shipped.read_text(), shipped.name
    assert generated.name == NAMESPACE_PATH.name


def test_every_type_round_trips(tmp_path):
    nwbfile = NWBFile(session_description="round trip", identifier="rt",
                      session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc))
    nwbfile.add_trial(start_time=0.0, stop_time=1.0)
    nwbfile.add_trial(start_time=1.0, stop_time=2.0)
    module = nwbfile.create_processing_module("behavior", "results")
    weights = np.array([[0.1, -0.2], [0.3, 0.4]], dtype=np.float32)
    module.add(LearningTrajectory(name="traj", rule="dnn", session_id="rt", subject_id="M1",
                                  weights=weights, weight_names=["stimulus", "bias"],
                                  p_right=np.array([0.5, 0.6], dtype=np.float32),
                                  trial_indices=np.array([0, 1]), trials=nwbfile.trials))
    parameters = RuleParameters(name="parameters", description="p")
    parameters.add_row(parameter="scale", shape=[2], values=[1e-3, 2e-3])
    parameters.add_row(parameter="offset", shape=[], values=[0.5])
    module.add(LearningRuleModel(name="model", rule="dnn", hyperparameters='{"lr": 0.01}',
                                 package_version="1.0", n_epochs=3, best_epoch=2,
                                 parameters=parameters, covariates=["stimulus", "bias"],
                                 training_subjects=["M1", "M2"],
                                 train_loss=np.array([0.7, 0.6, 0.5])))
    table = ModelComparisonTable(name="comparison", description="c")
    table.add_row(rule="dnn", subject="M3", seed=0, n_trials=10, log_likelihood=-0.5,
                  bits_per_trial=0.28, accuracy=0.8)
    module.add(table)
    path = tmp_path / "rt.nwb"
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)

    with NWBHDF5IO(str(path), "r") as io:
        back = io.read().processing["behavior"]
        traj = back["traj"]
        np.testing.assert_array_equal(traj.weights[:], weights)
        assert list(traj.weight_names[:]) == ["stimulus", "bias"]
        assert traj.trials.name == "trials" and len(traj.trials) == 2
        assert (traj.rule, traj.session_id, traj.subject_id) == ("dnn", "rt", "M1")
        model = back["model"]
        assert model.hyperparameters == '{"lr": 0.01}' and model.best_epoch == 2
        assert model.validation_loss is None
        rows = model.parameters.to_dataframe()
        assert rows["parameter"].tolist() == ["scale", "offset"]
        assert [list(s) for s in rows["shape"]] == [[2], []]
        np.testing.assert_array_equal(rows["values"][0], [1e-3, 2e-3])
        frame = back["comparison"].to_dataframe()
        assert frame.iloc[0].to_dict() == {"rule": "dnn", "subject": "M3", "seed": 0,
                                           "n_trials": 10, "log_likelihood": -0.5,
                                           "bits_per_trial": 0.28, "accuracy": 0.8}

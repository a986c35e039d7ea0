import numpy as np

from ibl_learnrules import validate_trials
from ibl_learnrules.datasets import KS014_ATTRIBUTION


def test_ks014_shape_and_sessions(ks014):
    assert len(ks014) == 10310
    assert ks014["subject"].unique().tolist() == ["KS014"]
    sizes = ks014.groupby("session_idx", sort=True).size().tolist()
    assert sizes == [513, 337, 491, 752, 735, 910, 923, 842, 746, 418, 847, 771, 657, 722, 646]
    # sessions come in date order and trials in order within them
    assert ks014["session_idx"].is_monotonic_increasing
    assert ks014["date"].is_monotonic_increasing
    assert (ks014.groupby("session")["trial"].diff().dropna() == 1).all()


def test_ks014_is_a_valid_trials_table(ks014):
    again = validate_trials(ks014)
    assert again.equals(ks014)
    assert set(ks014["choice"].unique()) == {-1, 1}


def test_ks014_learning_is_visible(ks014):
    correct = ks014["feedbackType"].eq(1).groupby(ks014["session_idx"]).mean()
    assert abs(correct.iloc[0] - 0.37) < 0.02  # the README's number for session 0
    assert correct.iloc[-3:].min() > 0.75


def test_ks014_contrast_schedule(ks014):
    contrast = np.fmax(ks014["contrastLeft"].fillna(0), ks014["contrastRight"].fillna(0))
    first_seen = contrast.groupby(contrast).apply(lambda c: ks014.loc[c.index, "session_idx"].min())
    assert first_seen[0.25] == 9 and first_seen[0.125] == 11 and first_seen[0.0625] == 12


def test_attribution_and_licence_ship_with_the_data():
    from importlib import resources

    data = resources.files("ibl_learnrules") / "data"
    assert "Permission is hereby granted" in (data / "LICENSE-diHMM.txt").read_text()
    assert "CC BY 4.0" in KS014_ATTRIBUTION


def test_ibl_mice_are_27_valid_mice_with_both_protocols():
    from ibl_learnrules.datasets import IBL_MICE_ATTRIBUTION, load_ibl_mice

    training = load_ibl_mice("training")
    assert len(training) == 62_457 and training["subject"].nunique() == 27
    assert set(training["protocol"]) == {"training"}
    assert training.groupby("subject")["session"].nunique().eq(3).all()
    assert validate_trials(training).equals(training)
    biased = load_ibl_mice("biased")
    assert len(biased) == 692_731
    assert set(biased["probabilityLeft"].round(1)) >= {0.2, 0.5, 0.8}
    # sessions keep their order within a mouse: training first, then biased
    both = load_ibl_mice()
    for _, mouse in both.groupby("subject"):
        assert mouse["session_index"].is_monotonic_increasing
    assert "CC BY 4.0" in IBL_MICE_ATTRIBUTION


def test_ibl_mice_attribution_ships_with_the_data():
    from importlib import resources

    readme = (resources.files("ibl_learnrules") / "data" / "IBL_MICE_README.md").read_text()
    assert "CC BY 4.0" in readme and "eLife.63711" in readme


def test_ibl_mice_first_sessions():
    from ibl_learnrules.datasets import load_ibl_mice

    first = load_ibl_mice("biased", max_sessions=2)
    assert first.groupby("subject")["session"].nunique().eq(2).all()
    full = load_ibl_mice("biased")
    for subject, mouse in first.groupby("subject"):
        sessions = full.loc[full["subject"] == subject, "session"].unique()[:2]
        assert sorted(mouse["session"].unique()) == sorted(sessions)

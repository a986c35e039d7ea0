"""Shared fixtures: small simulated cohorts and the bundled real mouse."""

import pytest

from ibl_learnrules import load_ks014, simulate_cohort


@pytest.fixture(scope="session")
def ks014():
    return load_ks014()


@pytest.fixture(scope="session")
def small_cohort():
    """Three mice of unequal length (sessions cut at 700 trials) under REINFORCE."""
    return simulate_cohort(3, n_sessions=2, random_state=0, alpha=0.02)

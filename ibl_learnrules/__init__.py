"""Infer how animals learn the IBL decision task from their choices.

The decision policy is a GLM whose weights move after every trial; the learning rule (the
map from a trial's stimulus, choice and reward to the weight update) is inferred with a small
neural network, a recurrent network, or a classic RL rule.
"""

from importlib.metadata import PackageNotFoundError, version

from .datasets import load_ks014
from .ensemble import SeedEnsemble
from .estimator import LearningRuleGLM
from .io import load_model, save_model
from .rules import available_rules
from .simulate import simulate_cohort
from .trials import featurize, validate_trials

try:
    __version__ = version("ibl_learnrules")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "__version__",
    "LearningRuleGLM",
    "SeedEnsemble",
    "available_rules",
    "featurize",
    "load_ks014",
    "load_model",
    "save_model",
    "simulate_cohort",
    "validate_trials",
]

"""Learning rules as torch modules behind one small interface.

A rule maps the current GLM weights and one trial to a weight update (and, for rules with
memory, a new state). Subclass :class:`LearningRule` and set ``name`` to add one.
"""

from .base import (
    RULES,
    ChunkInputs,
    KernelResult,
    LearningRule,
    TrialStep,
    available_rules,
    get_rule_class,
    make_rule,
)
from .classic import (
    NoLearning,
    PredictionError,
    QLearning,
    Reinforce,
    ReinforceBaseline,
    ReinforceBaselineLeak,
    RewardHistoryReinforce,
    RewardMax,
)
from .neural import DNNRule, RNNRule

__all__ = [
    "RULES",
    "LearningRule",
    "TrialStep",
    "ChunkInputs",
    "KernelResult",
    "available_rules",
    "get_rule_class",
    "make_rule",
    "NoLearning",
    "Reinforce",
    "ReinforceBaseline",
    "ReinforceBaselineLeak",
    "RewardMax",
    "PredictionError",
    "QLearning",
    "RewardHistoryReinforce",
    "DNNRule",
    "RNNRule",
]

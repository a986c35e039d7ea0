"""The ``ndx-learning-rules`` NWB extension: learning trajectories, fitted rules, comparisons.

Importing this module loads the extension's namespace into pynwb (the YAML shipped in
``spec/``) and exposes its container classes. Files written with it cache the spec, so any
pynwb reader opens them with ``NWBHDF5IO(path, load_namespaces=True)`` without this package.

Types
-----
LearningTrajectory
    Per-trial GLM weights and p(right) of one session, linked to its trials table.
LearningRuleModel
    A fitted rule: name, hyperparameters (JSON), training animals, package version and its
    parameters in a :class:`RuleParameters` table.
ModelComparisonTable
    Held-out log-likelihood, bits per trial and accuracy per rule, animal and seed.
"""

from __future__ import annotations

from pynwb import get_class, load_namespaces

from .make_spec import NAMESPACE, SPEC_DIR

__all__ = ["NAMESPACE", "NAMESPACE_PATH", "LearningTrajectory", "LearningRuleModel",
           "RuleParameters", "ModelComparisonTable"]

NAMESPACE_PATH = SPEC_DIR / f"{NAMESPACE}.namespace.yaml"

load_namespaces(str(NAMESPACE_PATH))

LearningTrajectory = get_class("LearningTrajectory", NAMESPACE)
LearningRuleModel = get_class("LearningRuleModel", NAMESPACE)
RuleParameters = get_class("RuleParameters", NAMESPACE)
ModelComparisonTable = get_class("ModelComparisonTable", NAMESPACE)

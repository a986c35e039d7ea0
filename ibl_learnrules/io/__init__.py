"""Adapters between the package and the outside: data sources, model files, NWB.

Everything here imports the estimator; the estimator imports nothing from here.
"""

from .model_file import load_model, save_model

__all__ = ["save_model", "load_model"]

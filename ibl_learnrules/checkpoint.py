"""Checkpoint files of a fit: the whole training state at an epoch boundary, written atomically.

A checkpoint holds what :func:`~ibl_learnrules.engine.train_rule` needs to carry on exactly as
if it had never stopped: the rule's parameters, the optimiser's and the learning-rate
schedule's state, the next epoch, the history so far and the early-stopping bookkeeping.
Training draws no random numbers (the animals' own choices drive the rollout; the seeded draws
of the initialisation and of the validation split happen before it), so there is no random
number generator state to keep; the caller's ``meta`` (e.g. the validation split) rides along.

A fingerprint of the data and of the settings is stored with it: resuming with other data or
other settings is refused, because it would silently mix two fits.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from .io.files import atomic_write

__all__ = ["Checkpoint", "fingerprint", "read_checkpoint", "CHECKPOINT_FORMAT"]

#: Written into every checkpoint; files of another format are refused.
CHECKPOINT_FORMAT = "ibl_learnrules.checkpoint/1"


def fingerprint(*parts) -> str:
    """SHA-256 of arrays (their dtype, shape and bytes) and JSON-able values, in order.

    Examples
    --------
    >>> a = fingerprint(np.zeros(3), {"lr": 0.01})
    >>> a == fingerprint(np.zeros(3), {"lr": 0.01}), a == fingerprint(np.ones(3), {"lr": 0.01})
    (True, False)
    """
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, (np.ndarray, torch.Tensor)):
            array = np.ascontiguousarray(part.detach().cpu().numpy()
                                         if isinstance(part, torch.Tensor) else part)
            digest.update(f"{array.dtype.str}{array.shape}".encode())
            digest.update(array.tobytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def read_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint file: ``{"format", "fingerprint", "meta", "state"}``.

    Raises ValueError when the file is not a checkpoint. Loads with ``weights_only=True``: no
    pickled code is executed.
    """
    try:
        blob = torch.load(Path(path), map_location="cpu", weights_only=True)
        fmt = blob["format"]
    except (OSError, RuntimeError, KeyError, TypeError, ValueError, EOFError,
            pickle.UnpicklingError) as err:
        raise ValueError(f"{path} is not a training checkpoint: "
                         f"{type(err).__name__}: {err}") from None
    if fmt != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} has format {fmt!r}, expected {CHECKPOINT_FORMAT!r}")
    return blob


class Checkpoint:
    """Where and how often a fit saves its training state, and what it must match to resume.

    Parameters
    ----------
    path : str or Path
        The checkpoint file (rewritten in place, atomically).
    every : int
        Save after every ``every``-th epoch (and after the last one, and on Ctrl-C).
    fingerprint : str
        Identifies the data and settings; a file with another one is refused by :meth:`load`.
    meta : dict, optional
        Extra values of the caller saved with every state (tensors, numbers, strings, lists).

    Examples
    --------
    >>> import pathlib, tempfile
    >>> ckpt = Checkpoint(pathlib.Path(tempfile.mkdtemp()) / "fit.ckpt", fingerprint="abc")
    >>> ckpt.save({"epoch": 3})
    >>> ckpt.load()["state"]["epoch"]
    3
    >>> try:  # another fit's file
    ...     Checkpoint(ckpt.path, fingerprint="xyz").load()
    ... except ValueError as err:
    ...     print("other data or settings" in str(err))
    True
    """

    def __init__(self, path: str | Path, every: int = 1, fingerprint: str = "",
                 meta: Mapping | None = None):
        if not isinstance(every, (int, np.integer)) or isinstance(every, bool) or every < 1:
            raise ValueError(f"checkpoint_every must be a positive integer, got {every!r}")
        self.path, self.every, self.fingerprint = Path(path), int(every), fingerprint
        self.meta = dict(meta or {})

    def exists(self) -> bool:
        """Whether the checkpoint file is there."""
        return self.path.is_file()

    def load(self) -> dict:
        """Read the file and check that it belongs to this fit; return the whole blob."""
        blob = read_checkpoint(self.path)
        if blob["fingerprint"] != self.fingerprint:
            raise ValueError(
                f"checkpoint {self.path} was written by a fit with other data or settings; "
                "resume with the same trials and parameters, or delete the file (or give "
                "another path) to start afresh")
        self.meta = dict(blob["meta"])
        return blob

    def due(self, epoch: int, last: bool) -> bool:
        """Whether to save after ``epoch`` (0-based)."""
        return last or (epoch + 1) % self.every == 0

    def save(self, state: Mapping) -> None:
        """Write ``state`` (with the fingerprint and meta) atomically."""
        blob = {"format": CHECKPOINT_FORMAT, "fingerprint": self.fingerprint,
                "meta": self.meta, "state": dict(state)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, lambda tmp: torch.save(blob, tmp))


def fit_checkpoint(path: str | Path | None, every: int, resume: bool, arrays,
                   estimator_params: dict) -> tuple[Checkpoint | None, dict | None]:
    """Return the :class:`Checkpoint` of an estimator's fit and the state to resume (or None).

    Its key is a fingerprint of the data (``arrays``, :class:`~ibl_learnrules.trials.TrialArrays`)
    and of the estimator's parameters, so that another fit cannot resume from it.
    """
    if path is None:
        return None, None
    # verbosity and the device change neither the data nor the optimisation
    params = {k: v for k, v in estimator_params.items() if k not in ("verbose", "device")}
    params["covariates"] = list(params["covariates"])
    key = fingerprint(arrays.subjects, arrays.covariates, arrays.x, arrays.y, arrays.reward,
                      arrays.correct_side, arrays.new_session, arrays.valid, params)
    ckpt = Checkpoint(path, every, key)
    if not (resume and ckpt.exists()):
        return ckpt, None
    return ckpt, ckpt.load()["state"]

"""Writing files so that a failure never leaves a half-written target."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write"]


def atomic_write(target: str | Path, write: Callable[[Path], None],
                 copy_from: str | Path | None = None) -> Path:
    """Run ``write(tmp)`` on a temporary file beside ``target``, then move it into place.

    Until the final ``os.replace`` the target is untouched, so a failure anywhere in
    ``write`` leaves it byte-identical (or absent).

    Parameters
    ----------
    target : str or Path
        The file to (re)write.
    write : callable
        Writes the whole content to the path it is given.
    copy_from : str or Path, optional
        Start the temporary file as a copy of this file (to append to an existing one).

    Returns
    -------
    Path
        ``target``.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "note.txt"
    >>> _ = atomic_write(path, lambda tmp: tmp.write_text("done"))
    >>> path.read_text()
    'done'
    """
    target = Path(target)
    # some writers (pynwb) expect the suffix; the leading dot keeps the file out of globs
    tmp = target.with_name(f".{target.stem}.{uuid.uuid4().hex[:8]}.tmp{target.suffix}")
    try:
        if copy_from is not None:
            shutil.copy2(copy_from, tmp)
        write(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target

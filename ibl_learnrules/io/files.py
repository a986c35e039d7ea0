"""Writing files so that a failure never leaves a half-written target.

Every file the package writes goes through :func:`atomic_write`: the serialiser writes a
temporary file beside the target (by convention the writing function's argument is named
``tmp``; ``tests/test_atomic_writes.py`` checks every serialiser call in the package writes to
one), which replaces the target only when complete. The helpers below are the common cases.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "write_table", "write_text", "write_figure", "copy_file"]


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


def write_table(frame, target: str | Path, **kwargs) -> Path:
    """Write a DataFrame as CSV or parquet (by ``target``'s suffix), without its index.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> import pandas as pd
    >>> path = write_table(pd.DataFrame({"a": [1]}), pathlib.Path(tempfile.mkdtemp()) / "a.csv")
    >>> path.read_text().split()
    ['a', '1']
    """
    target = Path(target)
    if target.suffix == ".csv":
        return atomic_write(target, lambda tmp: frame.to_csv(tmp, index=False, **kwargs))
    if target.suffix in (".parquet", ".pqt"):
        return atomic_write(target, lambda tmp: frame.to_parquet(tmp, index=False, **kwargs))
    raise ValueError(f"a table is written as .csv or .parquet, got {target.name!r}")


def write_text(target: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``target``.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> write_text(pathlib.Path(tempfile.mkdtemp()) / "a.txt", "hi").read_text()
    'hi'
    """
    return atomic_write(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_figure(figure, target: str | Path, **kwargs) -> Path:
    """Save a matplotlib figure (format from ``target``'s suffix); ``kwargs`` go to savefig.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> path = write_figure(plt.figure(), pathlib.Path(tempfile.mkdtemp()) / "f.png")
    >>> path.read_bytes()[1:4]
    b'PNG'
    """
    return atomic_write(target, lambda tmp: figure.savefig(tmp, **kwargs))


def copy_file(source: str | Path, target: str | Path) -> Path:
    """Copy ``source`` onto ``target``.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = write_text(folder / "a.txt", "hi")
    >>> copy_file(folder / "a.txt", folder / "b.txt").read_text()
    'hi'
    """
    return atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))

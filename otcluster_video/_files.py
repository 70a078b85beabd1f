"""Find video files without opening them: the folder or CSV listing, and why a path cannot be
opened (only regular files ever are: opening a FIFO blocks until someone writes to it)."""

from __future__ import annotations

import csv
import errno
import os
import stat
from pathlib import Path
from typing import Any

__all__ = ["VIDEO_EXTENSIONS", "absolute", "file_problem", "index_videos"]

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".flv", ".ogv", ".3gp"}
)

def file_problem(path: str | Path) -> tuple[str, str] | None:
    """Why ``path`` cannot be opened as a video file, without opening it; ``None`` if it can.

    Only regular files are ever opened: opening a FIFO blocks until someone writes to it, and a
    device never ends. Returns ``(reason, detail)`` with reason ``"missing"``,
    ``"unreadable"`` (e.g. a symbolic link that points to itself) or ``"not_a_file"``.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ENOTDIR):
            return ("missing", str(err))
        if err.errno == errno.ELOOP:
            return ("unreadable", f"symbolic link loop: {err}")
        return ("unreadable", str(err))
    if stat.S_ISREG(mode):
        return None
    kind = (
        "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
        else "a directory" if stat.S_ISDIR(mode)
        else "a socket" if stat.S_ISSOCK(mode)
        else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "not a regular file"
    )
    return ("not_a_file", f"{kind}; only regular files are opened")


def absolute(path: Path) -> Path:
    """``path`` made absolute and resolved when possible (a symlink loop stays unresolved)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop on Python < 3.13
        return Path(os.path.abspath(path))



def index_videos(source: str | Path) -> list[tuple[Path, str]]:
    """List the videos of a folder tree or of a CSV file.

    Parameters
    ----------
    source : str or Path
        A folder, scanned recursively for video extensions (the name of a file's parent folder
        is its label, ``""`` for files directly in ``source``), or a CSV file with columns
        ``path`` (absolute or relative to the CSV's folder) and optionally ``label``.
        Every entry with a video extension that is not a folder is listed, FIFOs and broken
        links included: :func:`prepare` reports why it cannot use them.

    Returns
    -------
    list of (Path, str)
        Absolute paths and labels, sorted by path for a folder, in file order for a CSV.
    """
    source = Path(source)
    if source.is_dir():
        root = source.resolve()
        found = [
            p
            for p in root.rglob("*")
            if p.suffix.lower() in VIDEO_EXTENSIONS
            and not p.is_dir()
            and not any(part.startswith(".") for part in p.relative_to(root).parts)
        ]
        return [(p, "" if p.parent == root else p.parent.name) for p in sorted(found)]
    if source.is_file() and source.suffix.lower() == ".csv":
        with source.open(newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or "path" not in reader.fieldnames:
                raise ValueError(f"{source}: CSV needs a 'path' column, got {reader.fieldnames}")
            base = source.resolve().parent
            return [(absolute(base / row["path"]), row.get("label") or "") for row in reader]
    raise FileNotFoundError(f"{source}: not a folder or a .csv file")


def csv_cell(value: Any) -> Any:
    """A CSV cell that a spreadsheet will not run as a formula: text starting with ``= + - @``
    (or a tab / carriage return) gets a leading ``'`` (OWASP's advice against CSV injection).

    >>> csv_cell("@SUM(1+1)"), csv_cell("cats"), csv_cell(-3)
    ("'@SUM(1+1)", 'cats', -3)
    """
    if isinstance(value, str) and value[:1] in _FORMULA_STARTS:
        return "'" + value
    return value


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_value(cell: str) -> str:
    """The text :func:`csv_cell` escaped (its inverse; other cells unchanged).

    >>> csv_value(csv_cell("@SUM(1+1)")), csv_value("'quoted"), csv_value("cats")
    ('@SUM(1+1)', "'quoted", 'cats')
    """
    return cell[1:] if cell[:1] == "'" and cell[1:2] in _FORMULA_STARTS else cell

"""The one atomic file write of the project.

A reader (or a run killed mid-write) sees either the previous file or the new one, never a
partial file: the data goes to a temporary file in the destination's folder, is flushed and
fsynced, renamed over the destination with ``os.replace`` (atomic on POSIX and Windows), and the
folder itself is fsynced so that the rename survives a power cut.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_open", "atomic_write_bytes", "atomic_write_text", "atomic_torch_save",
           "fsync_dir"]


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename in it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows: folders cannot be opened; the rename is durable there already
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", *, encoding: str | None = None
                ) -> Iterator[IO[Any]]:
    """Open a temporary file that replaces ``path`` when the ``with`` block ends without error.

    Parameters
    ----------
    path : str or PathLike
        Destination; its folder is created if missing. On an error inside the block the
        destination is left as it was and the temporary file is removed.
    mode : {"wb", "w"}, default "wb"
    encoding : str, optional
        Text mode only (default ``"utf-8"``).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_open(folder / "a.bin") as f:
    ...     _ = f.write(b"data")
    >>> (folder / "a.bin").read_bytes(), sorted(p.name for p in folder.iterdir())
    (b'data', ['a.bin'])
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        text = mode == "w"
        with os.fdopen(fd, mode, encoding=(encoding or "utf-8") if text else None,
                       newline="" if text else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``Path(path)``."""
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (no newline translation); returns ``Path(path)``."""
    with atomic_open(path, "w", encoding=encoding) as f:
        f.write(text)
    return Path(path)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)``, atomically; returns ``Path(path)``."""
    import torch

    with atomic_open(path, "wb") as f:
        torch.save(obj, f)
    return Path(path)

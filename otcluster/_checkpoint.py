"""Checkpoint files: atomic writes, ``weights_only`` loads, and the random-number-generator states.

A checkpoint holds only tensors and primitive containers (dict, list, tuple, str, int, float,
bool, None), so it loads with ``torch.load(..., weights_only=True)``: opening a checkpoint
never runs code from the file. A file that cannot be read (empty, truncated, corrupt, or not a
weights file) raises :class:`CheckpointError`: one line naming the file and what to do.
"""

from __future__ import annotations

import os
import pickle
import random
import shutil
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._io import atomic_torch_save

__all__ = ["CHECKPOINT_NAME", "PREVIOUS_CHECKPOINT_NAME", "CheckpointError", "save_checkpoint",
           "load_checkpoint", "get_rng_state", "set_rng_state", "seed_global_generators"]

#: File name of the trainer's checkpoint in its ``checkpoint_dir`` (the one place it is spelled).
CHECKPOINT_NAME = "last.pt"
#: The checkpoint that ``CHECKPOINT_NAME`` replaced (kept, and loaded when the last one is bad).
PREVIOUS_CHECKPOINT_NAME = "previous.pt"

_PRIMITIVES = (str, int, float, bool, type(None))


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read (empty, truncated, corrupt or not a weights file)."""


def _check_storable(obj: Any, where: str = "state") -> None:
    """Raise ``TypeError`` naming the first entry a ``weights_only`` load would refuse."""
    if isinstance(obj, (torch.Tensor, *_PRIMITIVES)):
        return
    if isinstance(obj, (dict, OrderedDict)):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where} has a key of type {type(k).__name__}: use str or int")
            _check_storable(v, f"{where}[{k!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_storable(v, f"{where}[{i}]")
        return
    raise TypeError(f"{where} is a {type(obj).__name__}; a checkpoint may hold only tensors and "
                    "dict/list/tuple/str/int/float/bool/None")


def _keep_as_previous(path: Path, previous: Path) -> None:
    """Make ``previous`` a copy of ``path`` atomically (a hard link where possible).

    Only a complete torch file (a zip archive) is kept: a damaged ``path`` never replaces a good
    ``previous``."""
    if not path.is_file() or not zipfile.is_zipfile(path):
        return
    tmp = previous.with_name(f".{previous.name}.{os.getpid()}.tmp")
    try:
        tmp.unlink(missing_ok=True)
        try:
            os.link(path, tmp)
        except OSError:  # no hard links on this file system
            shutil.copyfile(path, tmp)
        os.replace(tmp, previous)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_checkpoint(state: dict, path: str | os.PathLike, *,
                    previous: str | os.PathLike | None = None) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file in the same folder + ``os.replace``,
    then the folder is fsynced).

    A reader (or a run killed mid-write) sees either the previous file or the new one, never a
    partial file.

    Parameters
    ----------
    state : dict
        Tensors and primitive containers only (checked; ``TypeError`` names the bad entry).
    path : str or PathLike
        Destination; its folder is created if missing.
    previous : str or PathLike, optional
        Keep the file that ``path`` held (if it is a complete checkpoint) here, so that
        :func:`load_checkpoint` can fall back to it. ``path`` exists at every moment.

    Returns
    -------
    Path
        ``path``.
    """
    _check_storable(state)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if previous is not None:
        _keep_as_previous(path, Path(previous))
    atomic_torch_save(state, path)  # fsyncs the file and the folder
    return path


def _read(path: Path, map_location: Any) -> dict:
    """``torch.load(weights_only=True)``; every way a file can be unreadable -> CheckpointError."""
    what = "delete it (training then starts over) or restore a good copy"
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (an interrupted copy?): {what}")
    complete = zipfile.is_zipfile(path)  # torch.save writes a zip archive
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's pickle-protocol notes on foreign files
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:  # torch's "Weights only load failed ... weights_only=False"
        if complete:
            raise CheckpointError(f"{path} is not a weights-only checkpoint (it holds Python "
                                  f"objects, which are never loaded, for safety): {what}") from None
        raise CheckpointError(f"{path} is not a checkpoint (not a file written by torch.save): "
                              f"{what}") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError,
            AttributeError, zipfile.BadZipFile):
        kind = "damaged" if complete else "damaged or truncated (not a complete torch file)"
        raise CheckpointError(f"checkpoint {path} is {kind}: {what}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a checkpoint dict: "
                              f"{what}")
    return state


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", *,
                    fallback: str | os.PathLike | None = None) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (``torch.load(weights_only=True)``).

    Parameters
    ----------
    path : str or PathLike
    map_location : default "cpu"
    fallback : str or PathLike, optional
        Read this one instead, with a ``UserWarning``, when ``path`` is missing or unreadable
        (the ``previous`` file of :func:`save_checkpoint`).

    Raises
    ------
    FileNotFoundError
        If neither ``path`` nor ``fallback`` exists.
    CheckpointError (a ValueError)
        If the file is empty, truncated, corrupt or not a weights-only dict (one line naming
        the file and what to do).
    """
    path = Path(path)
    fb = None if fallback is None else Path(fallback)
    try:
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint at {path}")
        return _read(path, map_location)
    except (FileNotFoundError, CheckpointError) as err:
        if fb is None or not fb.is_file():
            raise
        state = _read(fb, map_location)
        warnings.warn(f"{err}; loaded the previous checkpoint {fb} instead", UserWarning,
                      stacklevel=2)
        return state


def seed_global_generators(seed: int) -> None:
    """Seed the torch, numpy and python global generators (what :func:`get_rng_state` saves)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - the global generator, on purpose
    random.seed(seed)


def get_rng_state() -> dict:
    """States of the torch (CPU and CUDA), numpy and python global generators, as tensors."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 - global state
    version, py_state, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss_next": gauss_next},
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict) -> None:
    """Restore the generators saved by :func:`get_rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    legacy = (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    np.random.set_state(legacy)  # noqa: NPY002 - the global generator, on purpose
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)

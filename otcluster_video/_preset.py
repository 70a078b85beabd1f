"""Presets: read a TOML file (bundled name or path) into a :class:`VideoRecipeConfig`, and write
one back (``RUN/config.toml`` is itself a preset).

Reading checks every value against the dataclass type hints (unknown keys, wrong types and
non-finite numbers are errors naming the key), maps the old key names to the core's with a
``DeprecationWarning`` naming the new key, and reads a prior vector from a file
(``prior = "file:sizes.txt"``, relative to the preset's folder).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import math
import re
import types
import typing
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._config import VideoRecipeConfig

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ModuleNotFoundError:  # pragma: no cover - depends on the environment
        tomllib = None  # type: ignore[assignment]

__all__ = ["config_to_toml", "load_preset"]

#: Old key -> new key, per section (the video recipe's names before it took the core's).
_RENAMED_KEYS = {
    "heads": {"hidden": "hidden_dim", "groups": "head_groups"},
    "training": {"prior_std": "prior_sigma", "align_init": "align"},
    "clustering": {"power": "schedule_power"},
}
#: Old values of renamed keys -> new values.
_RENAMED_VALUES = {
    ("training", "prior"): {"gauss": "gaussian"},
    ("training", "align"): {True: "exact", False: "none"},
}
_FILE_PREFIX = "file:"


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check a TOML value against a field's type hint and convert lists to tuples."""
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ValueError(f"{where} must be a table, got {type(value).__name__}")
        return _build(hint, value, where)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number, got {value!r}")
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            raise ValueError(f"{where} must be one of {typing.get_args(hint)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(value, option, where)
            except ValueError:
                continue
        raise ValueError(f"{where}: {value!r} is not a valid value")
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where} must be a list, got {value!r}")
        if args and args[-1] is not Ellipsis and len(args) != len(value):
            raise ValueError(f"{where} must have {len(args)} items, got {len(value)}")
        item = args[0] if args else Any
        return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and (
        not isinstance(value, hint) or (hint is int and isinstance(value, bool))
    ):
        raise ValueError(f"{where} must be {hint.__name__}, got {value!r}")
    return value


def _build(cls: type, data: Mapping[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in [{where}]; allowed: {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def _rename_old_keys(tree: dict[str, Any], source: str) -> None:
    """Old key names and values -> the core's, in place, each with a DeprecationWarning."""
    for section, renames in _RENAMED_KEYS.items():
        table = tree.get(section)
        if not isinstance(table, dict):
            continue
        for old, new in renames.items():
            if old not in table:
                continue
            if new in table:
                raise ValueError(
                    f"{source}: both {section}.{old} (old name) and {section}.{new} are given; "
                    f"keep only {section}.{new}"
                )
            warnings.warn(
                f"{source}: {section}.{old} is deprecated; use {section}.{new}",
                DeprecationWarning,
                stacklevel=4,
            )
            table[new] = table.pop(old)
    for (section, key), values in _RENAMED_VALUES.items():
        table = tree.get(section)
        if not isinstance(table, dict) or key not in table:
            continue
        value = table[key]
        if isinstance(value, (str, bool)) and value in values:
            if isinstance(value, str):
                warnings.warn(
                    f"{source}: {section}.{key} = {value!r} is deprecated; use {values[value]!r}",
                    DeprecationWarning,
                    stacklevel=4,
                )
            table[key] = values[value]


def _read_prior_file(path: Path, where: str) -> list[float]:
    """Cluster shares from a text file: numbers separated by spaces, commas or new lines
    (``#`` starts a comment). Sizes or shares: they are normalised to sum to 1."""
    if not path.is_file():
        raise ValueError(f"{where}: prior file {path} does not exist")
    text = re.sub(r"#[^\n]*", "", path.read_text(encoding="utf-8"))
    words = [w for w in re.split(r"[\s,;]+", text) if w]
    try:
        values = [float(w) for w in words]
    except ValueError as err:
        raise ValueError(f"{where}: prior file {path}: {err}") from None
    if len(values) < 2 or any(not math.isfinite(v) or v < 0 for v in values) or sum(values) <= 0:
        raise ValueError(
            f"{where}: prior file {path} must hold >= 2 finite non-negative numbers with a "
            f"positive sum (one per cluster), got {values[:10]}"
        )
    return values


def _resolve_prior(tree: dict[str, Any], base: Path, source: str) -> None:
    """``training.prior``: a ``file:PATH`` (relative to ``base``) or a vector -> shares that sum
    to 1, in place (the run's ``config.toml`` then holds the vector itself)."""
    table = tree.get("training")
    if not isinstance(table, dict) or "prior" not in table:
        return
    prior = table["prior"]
    if isinstance(prior, str) and prior.startswith(_FILE_PREFIX):
        file = Path(prior[len(_FILE_PREFIX) :]).expanduser()
        values = _read_prior_file(file if file.is_absolute() else base / file,
                                  f"{source}: training.prior")
    elif isinstance(prior, list) and prior and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in prior
    ):
        values = [float(v) for v in prior]
        if any(not math.isfinite(v) for v in values):
            raise ValueError(f"training.prior must be a finite number, got {prior!r}")
    else:
        return  # a name (checked by TrainingConfig) or a wrong type (checked by _coerce)
    total = sum(values)
    if total > 0 and abs(total - 1.0) > 1e-9:  # shares already summing to 1 are kept exactly
        values = [v / total for v in values]  # (a run's config.toml reads back equal)
    table["prior"] = values


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {dotted!r}: {part!r} is not a table")
    node[leaf] = value


def _preset_text(name_or_path: str | Path) -> tuple[str, str, Path]:
    """(TOML text, default name, folder that relative paths in it are relative to)."""
    bundled = importlib.resources.files("otcluster_video") / "presets" / f"{name_or_path}.toml"
    path = Path(name_or_path)
    if str(name_or_path).endswith(".toml") or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"preset file {path} does not exist")
        return path.read_text(encoding="utf-8"), path.stem, path.resolve().parent
    if bundled.is_file():
        return bundled.read_text(encoding="utf-8"), str(name_or_path), Path.cwd()
    available = sorted(
        p.name[: -len(".toml")]
        for p in (importlib.resources.files("otcluster_video") / "presets").iterdir()
        if p.name.endswith(".toml")
    )
    raise ValueError(f"unknown preset {name_or_path!r}; bundled presets: {available}")


def load_preset(
    name_or_path: str | Path, overrides: Mapping[str, Any] | None = None
) -> VideoRecipeConfig:
    """Load a recipe preset: a bundled name (``"paper"``, ``"cpu"``) or a TOML file.

    Keys missing from the file take the paper's defaults; unknown keys, wrong types and
    non-finite numbers raise ``ValueError`` naming the key. Old key names (``heads.hidden``,
    ``heads.groups``, ``training.prior_std``, ``training.align_init``, ``clustering.power``,
    ``prior = "gauss"``) are read with a ``DeprecationWarning`` naming the new key.
    ``training.prior = "file:PATH"`` reads one share (or size) per cluster from a text file,
    relative to the preset's folder (to the working directory in ``overrides``).

    Parameters
    ----------
    name_or_path : str or Path
        Bundled preset name or path to a ``.toml`` file.
    overrides : mapping of str to value, optional
        Dotted keys replacing file values, e.g. ``{"training.epochs": 2,
        "encoder.video.widths": [8, 16, 32, 64]}``.

    Returns
    -------
    VideoRecipeConfig

    Examples
    --------
    >>> load_preset("paper").audio.n_frames
    199
    >>> load_preset("cpu", {"training.epochs": 1}).training.epochs
    1
    >>> load_preset("cpu", {"training.prior": [3, 1, 1, 1, 1, 1]}).training.prior[0]
    0.375
    """
    if tomllib is None:  # pragma: no cover
        raise ModuleNotFoundError("reading presets on Python 3.10 needs the 'tomli' package")
    text, default_name, base = _preset_text(name_or_path)
    try:
        tree = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"preset {name_or_path}: invalid TOML: {err}") from err
    _rename_old_keys(tree, str(name_or_path))
    _resolve_prior(tree, base, str(name_or_path))
    if overrides:
        over: dict[str, Any] = {}
        for dotted, value in overrides.items():
            _set_dotted(over, dotted, value)
        _rename_old_keys(over, "override")
        _resolve_prior(over, Path.cwd(), "override")
        for dotted, value in _flatten(over).items():
            _set_dotted(tree, dotted, value)
    tree.setdefault("name", default_name)
    return _build(VideoRecipeConfig, tree, "")


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):  # refused when read; never written
            raise ValueError(f"cannot write the non-finite number {value} to a preset")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _to_toml(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> list[str]:
    lines = []
    # None (an optional setting left out) has no TOML form: leaving the key out reads back as None
    scalars = [(k, v) for k, v in tree.items() if not isinstance(v, Mapping) and v is not None]
    tables = [(k, v) for k, v in tree.items() if isinstance(v, Mapping)]
    if prefix and scalars:
        lines += ["", f"[{'.'.join(prefix)}]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in scalars]
    for k, sub in tables:
        lines += _to_toml(sub, (*prefix, k))
    return lines


def config_to_toml(config: VideoRecipeConfig) -> str:
    """The configuration as TOML text that :func:`load_preset` reads back to an equal config.

    Parameters
    ----------
    config : VideoRecipeConfig

    Returns
    -------
    str
    """
    return "\n".join(_to_toml(config.to_dict())) + "\n"

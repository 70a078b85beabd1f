"""The video recipe's configuration as dataclasses, and the TOML preset loader."""

from __future__ import annotations

import dataclasses
import importlib.resources
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .models import EncoderConfig

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ModuleNotFoundError:  # pragma: no cover - depends on the environment
        tomllib = None  # type: ignore[assignment]

__all__ = [
    "AudioConfig",
    "ClipConfig",
    "ClusteringConfig",
    "DataConfig",
    "EncodersConfig",
    "HeadsConfig",
    "TrainingConfig",
    "VideoRecipeConfig",
    "VisualConfig",
    "load_preset",
]


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass(frozen=True)
class DataConfig:
    """Which files are usable and how samples are loaded.

    Attributes
    ----------
    min_duration : float
        Skip videos shorter than this (seconds); the public code uses 1.1.
    require_audio : bool
        Skip videos without an audio stream.
    cache_dir : str
        Folder for decoded-clip caches (``""``: no cache). Relative paths are relative to the
        working directory.
    num_workers : int
        DataLoader worker processes.
    max_retries : int
        A sample that fails to decode is replaced by the next one, at most this many times.
    """

    min_duration: float = 1.1
    require_audio: bool = True
    cache_dir: str = ""
    num_workers: int = 0
    max_retries: int = 10

    def __post_init__(self) -> None:
        _check(self.min_duration >= 0, f"data.min_duration must be >= 0, got {self.min_duration}")
        _check(self.num_workers >= 0, f"data.num_workers must be >= 0, got {self.num_workers}")
        _check(self.max_retries >= 0, f"data.max_retries must be >= 0, got {self.max_retries}")


@dataclass(frozen=True)
class ClipConfig:
    """Video clip sampling: ``n_frames`` consecutive frames at ``fps`` (paper: 30 at 30 fps)."""

    n_frames: int = 30
    fps: float = 30.0

    def __post_init__(self) -> None:
        _check(self.n_frames >= 1, f"clip.n_frames must be >= 1, got {self.n_frames}")
        _check(self.fps > 0, f"clip.fps must be > 0, got {self.fps}")

    @property
    def seconds(self) -> float:
        """Length of the clip window in seconds."""
        return self.n_frames / self.fps


@dataclass(frozen=True)
class AudioConfig:
    """Audio window and log-mel features (paper: 2 s at 48 kHz -> 1 x 257 x 199).

    ``volume_jitter`` is the training-time gain range (``[1, 1]`` disables it).
    """

    sample_rate: int = 48000
    seconds: float = 2.0
    n_mels: int = 257
    win_ms: float = 20.0
    hop_ms: float = 10.0
    n_fft: int = 1024
    preemphasis: float = 0.97
    window: str = "rect"
    volume_jitter: tuple[float, float] = (0.9, 1.1)

    def __post_init__(self) -> None:
        _check(self.sample_rate >= 1000, f"audio.sample_rate too low: {self.sample_rate}")
        _check(self.seconds * 1000 >= self.win_ms, "audio.seconds shorter than one window")
        _check(self.n_mels >= 1, f"audio.n_mels must be >= 1, got {self.n_mels}")
        lo, hi = self.volume_jitter
        _check(0 < lo <= hi, f"audio.volume_jitter must satisfy 0 < low <= high, got {lo}, {hi}")

    @property
    def n_frames(self) -> int:
        """Spectrogram frames per window: ``1 + (n_samples - win) // hop``."""
        win = round(self.win_ms * self.sample_rate / 1000)
        hop = round(self.hop_ms * self.sample_rate / 1000)
        return 1 + (round(self.seconds * self.sample_rate) - win) // hop


@dataclass(frozen=True)
class VisualConfig:
    """Frame transforms (paper: short side 128, random 112 crop, flip 0.5, mean 0.45 std 0.225).

    ``scale_jitter = (lo, hi)`` draws the training short side from ``[lo, hi]`` (the public code
    uses (128, 160)); ``(0, 0)`` resizes to ``resize``. ``grayscale`` and ``channel_shuffle``
    are probabilities of the colour augmentations (off in the paper).
    """

    resize: int = 128
    scale_jitter: tuple[int, int] = (128, 160)
    crop: int = 112
    hflip: float = 0.5
    grayscale: float = 0.0
    channel_shuffle: float = 0.0
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)

    def __post_init__(self) -> None:
        _check(self.crop >= 1, f"visual.crop must be >= 1, got {self.crop}")
        _check(self.resize >= self.crop, f"visual.resize {self.resize} < crop {self.crop}")
        lo, hi = self.scale_jitter
        _check(
            (lo, hi) == (0, 0) or self.crop <= lo <= hi,
            f"visual.scale_jitter must be (0, 0) or crop <= low <= high, got {(lo, hi)}",
        )
        for name in ("hflip", "grayscale", "channel_shuffle"):
            p = getattr(self, name)
            _check(0.0 <= p <= 1.0, f"visual.{name} must be a probability, got {p}")
        _check(min(self.std) > 0, f"visual.std must be positive, got {self.std}")

    @property
    def decode_short_side(self) -> int:
        """Largest short side the training transforms need (decoders downscale to it)."""
        return max(self.resize, self.scale_jitter[1])


@dataclass(frozen=True)
class EncodersConfig:
    """The visual and the audio encoder."""

    video: EncoderConfig = field(default_factory=EncoderConfig)
    audio: EncoderConfig = field(
        default_factory=lambda: EncoderConfig("resnet", (64, 128, 256, 512), (1, 1, 1, 1), 1)
    )


@dataclass(frozen=True)
class HeadsConfig:
    """Clustering heads (``MLPv2`` in the public code): ``n_heads`` heads of ``n_clusters``."""

    n_heads: int = 10
    n_clusters: int = 309
    hidden: int = 512
    dropout: float = 0.3
    groups: int = 2

    def __post_init__(self) -> None:
        _check(self.n_heads >= 1, f"heads.n_heads must be >= 1, got {self.n_heads}")
        _check(self.n_clusters >= 2, f"heads.n_clusters must be >= 2, got {self.n_clusters}")
        _check(1 <= self.groups <= self.n_heads, "heads.groups must be in [1, n_heads]")
        _check(0.0 <= self.dropout < 1.0, f"heads.dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation and Sinkhorn-Knopp settings (consumed by the trainer).

    ``batch_size`` is per device (paper: 16 on each of 64 GPUs); ``lam`` is the SK
    regularisation lambda; ``prior`` is ``"uniform"`` or ``"gauss"`` (sizes ``N(1, prior_std)``).
    """

    epochs: int = 200
    batch_size: int = 16
    lr: float = 0.01
    weight_decay: float = 1e-5
    momentum: float = 0.9
    warmup_epochs: int = 10
    lam: float = 20.0
    prior: str = "gauss"
    prior_std: float = 0.1
    align_init: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, f"training.epochs must be >= 1, got {self.epochs}")
        _check(self.batch_size >= 1, f"training.batch_size must be >= 1, got {self.batch_size}")
        _check(self.lr > 0, f"training.lr must be > 0, got {self.lr}")
        _check(self.lam > 0, f"training.lam must be > 0, got {self.lam}")
        _check(self.prior in ("uniform", "gauss"), "training.prior must be uniform or gauss")
        _check(self.warmup_epochs >= 0, "training.warmup_epochs must be >= 0")


@dataclass(frozen=True)
class ClusteringConfig:
    """When to re-label: ``n_clusterings`` times at steps ``T * linspace(0, 1, n) ** power``."""

    n_clusterings: int = 100
    power: float = 1.5

    def __post_init__(self) -> None:
        _check(self.n_clusterings >= 1, "clustering.n_clusterings must be >= 1")
        _check(self.power > 0, f"clustering.power must be > 0, got {self.power}")


@dataclass(frozen=True)
class VideoRecipeConfig:
    """Everything the SeLaVi video recipe needs, as data (see ``presets/*.toml``)."""

    name: str = "paper"
    data: DataConfig = field(default_factory=DataConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    visual: VisualConfig = field(default_factory=VisualConfig)
    encoder: EncodersConfig = field(default_factory=EncodersConfig)
    heads: HeadsConfig = field(default_factory=HeadsConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    clustering: ClusteringConfig = field(default_factory=ClusteringConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples become lists), e.g. to store beside a checkpoint."""
        return _plain(dataclasses.asdict(self))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check a TOML value against a field's type hint and convert lists to tuples."""
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ValueError(f"{where} must be a table, got {type(value).__name__}")
        return _build(hint, value, where)
    origin = typing.get_origin(hint)
    if origin in (typing.Literal,):
        if value not in typing.get_args(hint):
            raise ValueError(f"{where} must be one of {typing.get_args(hint)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        return value
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


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {dotted!r}: {part!r} is not a table")
    node[leaf] = value


def load_preset(
    name_or_path: str | Path, overrides: Mapping[str, Any] | None = None
) -> VideoRecipeConfig:
    """Load a recipe preset: a bundled name (``"paper"``, ``"cpu"``) or a TOML file.

    Keys missing from the file take the paper's defaults; unknown keys and wrong types raise.

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
    """
    if tomllib is None:  # pragma: no cover
        raise ModuleNotFoundError("reading presets on Python 3.10 needs the 'tomli' package")
    bundled = importlib.resources.files("otcluster_video") / "presets" / f"{name_or_path}.toml"
    path = Path(name_or_path)
    if str(name_or_path).endswith(".toml") or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"preset file {path} does not exist")
        text, default_name = path.read_text(), path.stem
    elif bundled.is_file():
        text, default_name = bundled.read_text(), str(name_or_path)
    else:
        available = sorted(
            p.name[: -len(".toml")]
            for p in (importlib.resources.files("otcluster_video") / "presets").iterdir()
            if p.name.endswith(".toml")
        )
        raise ValueError(f"unknown preset {name_or_path!r}; bundled presets: {available}")
    try:
        tree = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"preset {name_or_path}: invalid TOML: {err}") from err
    for dotted, value in (overrides or {}).items():
        _set_dotted(tree, dotted, value)
    tree.setdefault("name", default_name)
    return _build(VideoRecipeConfig, tree, "")

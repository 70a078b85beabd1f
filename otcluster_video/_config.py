"""The video recipe's configuration as frozen dataclasses (read and written by :mod:`._preset`).

One vocabulary with the core: ``[heads]``, ``[training]`` and ``[clustering]`` use the field
names of :class:`otcluster.HeadConfig` and :class:`otcluster.TrainerConfig`, so the trainer's
configuration is built by name, not translated. One validation style: every section declares
its allowed values as data (``_RULES`` and ``_CROSS``, of :mod:`._rules`), checked in
``__post_init__``.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

from otcluster._schedule import LR_SCHEDULES, OPTIMIZERS  # the core's TrainerConfig values
from otcluster._train.first_labels import INIT_LABELS  # the core's TrainerConfig.init_labels
from otcluster._train.weighting import WEIGHTINGS  # the core's TrainerConfig.modality_weights

from ._rules import _COUNT, _FRACTION, _PROBABILITY, Rule, _above, _at_least, _num, _pair, _renamed, _validate
from .models import EncoderConfig

__all__ = ["AudioConfig", "ClipConfig", "ClusteringConfig", "DataConfig", "EncodersConfig",
           "HeadsConfig", "PRIOR_KINDS", "TrainingConfig", "VideoRecipeConfig", "VisualConfig"]

#: Named cluster priors (the core's ``PRIOR_KINDS``); a vector of K shares is accepted too.
PRIOR_KINDS = ("uniform", "gaussian", "zipf")
ALIGN_KINDS = ("exact", "greedy", "none")
KERNEL_KINDS = ("fast", "portable")

def _prior_ok(p: Any) -> bool:
    if isinstance(p, str):
        return p in PRIOR_KINDS
    return isinstance(p, tuple) and len(p) >= 2 and all(_num(x) and x >= 0 for x in p) and sum(p) > 0


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
        A sample that fails to decode takes the next one's clip (keeping its own index), at
        most this many times.
    adapt_to_source : bool
        ``train`` lowers the clip frame rate, audio sample rate and frame size the preset asks
        for to what the videos have (median), for keys not set explicitly; see
        :func:`otcluster_video.adapt_to_source`. Never raises a value.
    """

    min_duration: float = 1.1
    require_audio: bool = True
    cache_dir: str = ""
    num_workers: int = 0
    max_retries: int = 10
    adapt_to_source: bool = True

    _SECTION: ClassVar[str] = "data"
    _RULES: ClassVar[dict[str, Rule]] = {
        "adapt_to_source": (lambda v: isinstance(v, bool), "true or false"),
        **dict.fromkeys(("min_duration", "num_workers", "max_retries"), _at_least(0)),
    }
    _CROSS: ClassVar[list] = []

    def __post_init__(self) -> None:
        _validate(self)


@dataclass(frozen=True)
class ClipConfig:
    """Video clip sampling: ``n_frames`` consecutive frames at ``fps`` (paper: 30 at 30 fps)."""

    n_frames: int = 30
    fps: float = 30.0

    _SECTION: ClassVar[str] = "clip"
    _RULES: ClassVar[dict[str, Rule]] = {"n_frames": _at_least(1), "fps": _above(0)}
    _CROSS: ClassVar[list] = []

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def seconds(self) -> float:
        """Length of the clip window in seconds."""
        return self.n_frames / self.fps


@dataclass(frozen=True)
class AudioConfig:
    """Audio window and log-mel features (paper: 2 s at 48 kHz -> 1 x 257 x 199).

    Training-time augmentations: ``volume_jitter``, the gain range (``[1, 1]`` disables it);
    ``freq_mask`` / ``time_mask``, the widest band of mel bins / frames that one SpecAugment
    mask hides per clip (0 = none); ``pitch_shift``, the largest pitch shift in semitones, drawn
    uniformly from ``[-pitch_shift, pitch_shift]`` per clip (0 = none); ``noise``, the share of
    clips given white noise at a signal-to-noise ratio drawn from ``noise_snr`` (dB; 0 = none).
    ``normalize = "clip"`` subtracts each clip's mean log-mel (training and inference), so that
    its loudness does not count; ``"none"``: the paper's.
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
    freq_mask: int = 0
    time_mask: int = 0
    pitch_shift: float = 0.0
    noise: float = 0.0
    noise_snr: tuple[float, float] = (-30.0, 10.0)
    normalize: str = "none"

    _SECTION: ClassVar[str] = "audio"
    _RULES: ClassVar[dict[str, Rule]] = {
        "sample_rate": (lambda v: _num(v) and v >= 1000, ">= 1000 (Hz)"),
        "seconds": _above(0),
        "n_mels": _at_least(1),
        **dict.fromkeys(("win_ms", "hop_ms"), _above(0)),
        "n_fft": _at_least(1),
        "volume_jitter": (lambda v: 0 < v[0] <= v[1], "0 < low <= high"),
        **dict.fromkeys(("freq_mask", "time_mask"), _COUNT),
        "pitch_shift": (lambda v: _num(v) and 0 <= v <= 24, "in [0, 24] (semitones)"),
        "noise": _PROBABILITY,
        "noise_snr": (lambda v: _pair(v, _num) and v[0] <= v[1], "[low, high] dB, low <= high"),
        "normalize": (lambda v: v in ("none", "clip"), "'none' or 'clip'"),
    }
    _CROSS: ClassVar[list] = [
        (lambda c: c.seconds * 1000 >= c.win_ms, "audio.seconds is shorter than one window"),
        (lambda c: c.freq_mask <= c.n_mels, "audio.freq_mask is wider than audio.n_mels"),
        (lambda c: c.time_mask <= c.n_frames, "audio.time_mask is wider than the clip's frames"),
    ]

    def __post_init__(self) -> None:
        _validate(self)

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
    are probabilities of the colour augmentations, ``vflip`` of a vertical flip (all off in the
    paper; a vertical flip only where no class depends on up and down), ``degrade`` of the
    paper's degraded picture (fig. 2: every frame down-sampled by 4, 8 or 16 and back, then
    Gaussian noise of standard deviation up to 0.25). ``normalize = "clip"``
    standardises each clip per colour channel (its own mean and standard deviation over frames
    and pixels, training and inference) instead of the fixed ``mean`` and ``std``: a clip's
    colours, brightness and contrast then say nothing of its class (off in the paper).
    """

    resize: int = 128
    scale_jitter: tuple[int, int] = (128, 160)
    crop: int = 112
    hflip: float = 0.5
    vflip: float = 0.0
    grayscale: float = 0.0
    channel_shuffle: float = 0.0
    degrade: float = 0.0
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)
    normalize: str = "none"

    _SECTION: ClassVar[str] = "visual"
    _RULES: ClassVar[dict[str, Rule]] = {
        "crop": _at_least(1),
        **dict.fromkeys(("hflip", "vflip", "grayscale", "channel_shuffle", "degrade"), _PROBABILITY),
        "std": (lambda v: min(v) > 0, "positive"),
        "normalize": (lambda v: v in ("none", "clip"), "'none' or 'clip'"),
    }
    _CROSS: ClassVar[list] = [
        (lambda c: c.resize >= c.crop, "visual.resize must be >= visual.crop"),
        (lambda c: tuple(c.scale_jitter) == (0, 0) or c.crop <= c.scale_jitter[0] <= c.scale_jitter[1],
         "visual.scale_jitter must be (0, 0) or crop <= low <= high"),
    ]

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def decode_short_side(self) -> int:
        """Largest short side the training transforms need (decoders downscale to it)."""
        return max(self.resize, self.scale_jitter[1])


@dataclass(frozen=True)
class EncodersConfig:
    """The visual and the audio encoder (:class:`EncoderConfig` validates itself)."""

    video: EncoderConfig = field(default_factory=EncoderConfig)
    audio: EncoderConfig = field(
        default_factory=lambda: EncoderConfig("resnet", (64, 128, 256, 512), (1, 1, 1, 1), 1)
    )


@dataclass(frozen=True)
class HeadsConfig:
    """Clustering heads (``MLPv2`` in the public code): ``n_heads`` heads of ``n_clusters``.

    The first four fields are :class:`otcluster.HeadConfig`'s; ``head_groups`` is
    :class:`otcluster.TrainerConfig`'s (decorrelated heads: groups clustered from separate
    augmentations). Old names ``hidden`` and ``groups`` are read with a ``DeprecationWarning``.
    ``overcluster`` > 1: heads trained at ``overcluster * n_clusters`` clusters, merged into
    ``n_clusters`` after training (:func:`otcluster.merge_clusters`).
    """

    n_heads: int = 10
    n_clusters: int = 309
    hidden_dim: int = 512
    dropout: float = 0.3
    head_groups: int = 2
    overcluster: int = 1

    _SECTION: ClassVar[str] = "heads"
    _RULES: ClassVar[dict[str, Rule]] = {
        **dict.fromkeys(("n_heads", "hidden_dim", "head_groups", "overcluster"), _at_least(1)),
        "n_clusters": _at_least(2), "dropout": _FRACTION}
    _CROSS: ClassVar[list] = [
        (lambda c: c.head_groups <= c.n_heads, "heads.head_groups must be in [1, n_heads]"),
    ]

    def __post_init__(self) -> None:
        _validate(self)

    hidden = _renamed("hidden", "hidden_dim")
    groups = _renamed("groups", "head_groups")


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation and Sinkhorn-Knopp settings, named as in :class:`otcluster.TrainerConfig`.

    ``batch_size`` is per device (paper: 16 on each of 64 GPUs); ``lam`` is the SK lambda.
    ``lr_schedule``: after the warm-up, ``"constant"`` (the paper's) or ``"cosine"`` (decaying
    to 0 at the last step). ``optimizer``: ``"sgd"`` (the paper's) or ``"adamw"``, or a pair
    ``[video, audio]`` (e.g. ``["adamw", "sgd"]``); ``lr`` a number or a pair ``[video, audio]``;
    either way ``lr`` is per process (the run's is ``lr`` x the number of processes).
    ``prior``: ``"uniform"``, ``"gaussian"`` (sizes ``N(1, prior_sigma)``, the paper's), ``"zipf"``
    (``p_k ∝ k ** -zipf_exponent``) or K shares (in a preset also ``"file:sizes.txt"``).
    ``align`` matches the audio heads to the video heads at initialisation (eq. 7): ``"exact"``,
    ``"greedy"`` or ``"none"``. Old names (``prior = "gauss"``, ``prior_std``, ``align_init``) are
    read with a ``DeprecationWarning``. ``prior_warmup`` / ``prior_warmup_tau``: see
    :class:`otcluster.TrainerConfig`. ``threads`` caps torch's threads while training (0: all
    cores; 1: the same labels on any thread count, and then ``eval_threads`` batches of the
    inference passes run at once, for the same labels on more cores); ``kernels``: ``"portable"``
    rounds the same way on any x86_64 CPU with AVX2 (:func:`otcluster.portable_kernels`),
    ``"fast"`` uses torch's per-CPU kernels (``docs/video.md``, "Reproducibility").
    """

    epochs: int = 200
    batch_size: int = 16
    lr: float | tuple[float, float] = 0.01
    weight_decay: float = 1e-5
    momentum: float = 0.9
    warmup_epochs: int = 10
    lr_schedule: str = "constant"
    optimizer: str | tuple[str, str] = "sgd"
    lam: float = 20.0
    prior: str | tuple[float, ...] = "gaussian"
    prior_sigma: float = 0.1
    zipf_exponent: float = 1.0
    prior_warmup: float = 0.0
    prior_warmup_tau: float | None = 1.0
    align: str = "exact"
    seed: int = 0
    threads: int = 0
    eval_threads: int = 1
    kernels: str = "fast"

    _SECTION: ClassVar[str] = "training"
    _RULES: ClassVar[dict[str, Rule]] = {
        "epochs": _at_least(1),
        "batch_size": _at_least(1),
        "lr": (lambda v: _pair(v, lambda x: _num(x) and x > 0) or (_num(v) and v > 0),
               "> 0 (or a pair [video, audio] of such numbers)"),
        "weight_decay": _at_least(0),
        "momentum": _FRACTION,
        "warmup_epochs": _at_least(0),
        "lr_schedule": (lambda v: v in LR_SCHEDULES, f"one of {LR_SCHEDULES}"),
        "optimizer": (lambda v: v in OPTIMIZERS or _pair(v, lambda x: x in OPTIMIZERS),
                      f"one of {OPTIMIZERS} or a pair [video, audio] of them"),
        "lam": _above(0),
        "prior": (_prior_ok, f"one of {PRIOR_KINDS}, 'file:PATH' or a list of >= 2 non-negative "
                  "shares with a positive sum"),
        "prior_sigma": _at_least(0),
        "zipf_exponent": _at_least(0),
        "prior_warmup": (lambda v: _num(v) and 0 <= v < 1, "a number in [0, 1)"),
        "prior_warmup_tau": (lambda v: v is None or (_num(v) and v >= 0),
                             "a non-negative number or None"),
        "align": (lambda v: v in ALIGN_KINDS, f"one of {ALIGN_KINDS}"),
        "seed": _at_least(0),
        "threads": (_COUNT[0], "a non-negative integer (0: torch's default)"),
        "eval_threads": (lambda v: _COUNT[0](v) and v >= 1, "a positive integer"),
        "kernels": (lambda v: v in KERNEL_KINDS, f"one of {KERNEL_KINDS}"),
    }
    _CROSS: ClassVar[list] = []

    def __post_init__(self) -> None:
        for name in ("prior", "lr", "optimizer"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        _validate(self)

    prior_std = _renamed("prior_std", "prior_sigma")

    @property
    def align_init(self) -> bool:
        """Deprecated: ``align != "none"``."""
        warnings.warn("training.align_init is deprecated; use training.align",
                      DeprecationWarning, stacklevel=2)
        return self.align != "none"


@dataclass(frozen=True)
class ClusteringConfig:
    """When and how to re-label: ``n_clusterings`` times at steps ``T * linspace(0, 1, n) **
    schedule_power`` (:class:`otcluster.TrainerConfig`'s names; ``power`` is deprecated).

    ``sinkhorn_tau``: semi-relaxed cluster sizes, a penalty ``tau * KL(sizes || prior)``
    (:func:`otcluster.sinkhorn`); left out: sizes fixed to the prior. ``sinkhorn_tol`` /
    ``sinkhorn_max_iter``: the solver's stopping rule (the trainer's defaults, 1e-2 and 1000; a
    warning at the end of ``train.log`` says when clusterings stopped short).
    ``sinkhorn_scaling_stages``: λ-scaling of each solve (:func:`otcluster.sinkhorn`'s
    ``scaling_stages``; 0 = off): fewer passes, the same problem. ``modality_weights``: how eq. 6
    weighs the video and audio heads: ``"equal"`` (the paper's mean), ``"information"`` (each
    stream by how well its heads predict the current labels), ``"stability"`` (each stream by how
    much its heads' clusters agree between two augmented clips of every video), both with
    ``modality_weights_floor``, ``_warmup`` and ``_momentum`` (:class:`otcluster.TrainerConfig`),
    or fixed weights ``[video, audio]``. ``stability_max_samples``: the videos (a random subset,
    fresh at every clustering) that ``"stability"`` measures on, to bound its two extra passes;
    ``stability_every``: measure at every n-th clustering only, keeping the weights between;
    ``stability_position``: where in each video its two clips are centred, from 0 (start) to 1
    (end), so they differ only by the other augmentations (left out: each clip as in training).
    ``init_labels``: the first labels, from the random heads (``"heads"``, the paper's) or from
    balanced k-means of the untrained encoders' features (``"kmeans"``). ``modality_veto``: a clip
    in a cluster of one stream that the other stream scatters (below ``modality_veto / K`` in any
    one of its clusters) is labelled by the other stream alone (experimental;
    :class:`otcluster.TrainerConfig`). ``label_weights``: how ``label`` and ``evaluate`` weigh
    them: ``"training"`` (as in training) or ``"confidence"`` (per head, by how confident each
    stream's heads are over the videos labelled: :func:`otcluster.confidence_weights`)."""

    n_clusterings: int = 100
    schedule_power: float = 1.5
    init_labels: str = "heads"
    sinkhorn_tau: float | None = None
    sinkhorn_tol: float = 1e-2
    sinkhorn_max_iter: int = 1000
    sinkhorn_scaling_stages: int = 0
    modality_weights: str | tuple[float, float] = "equal"
    modality_weights_floor: float = 0.2
    modality_weights_warmup: float = 0.0
    modality_weights_momentum: float = 0.0
    stability_max_samples: int = 4096
    stability_every: int = 1
    stability_position: float | None = None
    modality_veto: float | None = None
    label_weights: str = "training"

    _SECTION: ClassVar[str] = "clustering"
    _RULES: ClassVar[dict[str, Rule]] = {
        "n_clusterings": _at_least(1),
        "schedule_power": _above(0),
        "init_labels": (lambda v: v in INIT_LABELS, f"one of {INIT_LABELS}"),
        "sinkhorn_tau": (lambda v: v is None or (_num(v) and v > 0),
                         "a number > 0 (semi-relaxed cluster sizes), or left out (exact sizes)"),
        "sinkhorn_tol": _above(0),
        "sinkhorn_max_iter": _at_least(1),
        "sinkhorn_scaling_stages": _at_least(0),
        **dict.fromkeys(("modality_weights_floor", "modality_weights_warmup",
                         "modality_weights_momentum"), _FRACTION),
        "stability_max_samples": _at_least(1),
        "stability_every": _at_least(1),
        "modality_veto": (lambda v: v is None or (_num(v) and v > 0), "a number > 0, or left out"),
        "stability_position": (lambda v: v is None or (_num(v) and 0 <= v <= 1),
                               "a number in [0, 1], or left out (random, as in training)"),
        "label_weights": (lambda v: v in ("training", "confidence"), "'training' or 'confidence'"),
        "modality_weights": (
            lambda v: v in WEIGHTINGS or (_pair(v, lambda w: _num(w) and w >= 0) and sum(v) > 0),
            f"one of {', '.join(map(repr, WEIGHTINGS))} or [video, audio]: two non-negative "
            "weights with a positive sum"),
    }
    _CROSS: ClassVar[list] = []

    def __post_init__(self) -> None:
        if isinstance(self.modality_weights, list):
            object.__setattr__(self, "modality_weights", tuple(self.modality_weights))
        _validate(self)

    power = _renamed("power", "schedule_power")


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

    def __post_init__(self) -> None:
        prior, k = self.training.prior, self.heads.n_clusters
        if not isinstance(prior, str) and len(prior) != k:
            raise ValueError(
                f"training.prior has {len(prior)} values but heads.n_clusters = {k}: give one "
                f"share per cluster"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples become lists), e.g. to store beside a checkpoint."""
        return _plain(dataclasses.asdict(self))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value

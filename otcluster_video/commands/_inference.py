"""A trained run for inference: the model from its checkpoint (no optimiser, no training
dataset), pooled features of any videos, the heads' log-probabilities and labels.

Used by ``select``, ``label``, ``evaluate``, ``degrade`` and ``retrieval``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from otcluster import HeadConfig, MultiHead, SelfLabelModel, average_views, merge_clusters, merge_log_probs
from otcluster._checkpoint import load_checkpoint
from otcluster._threads import map_batches
from otcluster.metrics import select_head

from .._build import build_encoders, kernel_scope
from .._config import VideoRecipeConfig
from .._preset import load_preset
from .._probe import VideoInfo, load_manifest
from .._run import RunPaths, write_text
from ..dataset import AVDataset

__all__ = ["LoadedRun", "Features", "extract", "heads_log_probs", "load_run", "pass_threads",
           "predict", "stream_weights"]

_CHUNK = 4096  # rows of features per head evaluation


@dataclass
class LoadedRun:
    """A trained run: its configuration, training videos, model and last self-labels.

    Attributes
    ----------
    train_labels : LongTensor of shape (H, N) or None
        Labels of the last optimal-transport clustering of the training videos.
    primary : int
        The head chosen without ground truth: the one that agrees most with the others
        (:func:`otcluster.metrics.select_head` on ``train_labels``; 0 without them).
    """

    paths: RunPaths
    config: VideoRecipeConfig
    videos: list[VideoInfo]
    model: SelfLabelModel
    train_labels: torch.Tensor | None
    device: torch.device
    groups: torch.Tensor | None = None  # (H, M): merged group of each head's clusters

    def self_labels(self) -> torch.Tensor | None:
        """The last clustering's labels, as merged groups when the heads were overclustered."""
        if self.train_labels is None or self.groups is None:
            return self.train_labels
        return torch.stack([g[lab] for g, lab in zip(self.groups, self.train_labels.cpu())])

    @property
    def primary(self) -> int:
        return 0 if self.train_labels is None else select_head(self.train_labels)

    def batch_size(self, given: int | None) -> int:
        return given or self.config.training.batch_size


def _model(state: Mapping[str, Any], folder: Path, config: VideoRecipeConfig) -> SelfLabelModel:
    encoders = build_encoders(config)
    from_checkpoint = getattr(SelfLabelModel, "from_checkpoint", None)
    if from_checkpoint is not None:
        return from_checkpoint(folder, encoders)
    # the same, for an otcluster whose SelfLabelModel cannot load itself yet
    heads_cfg = HeadConfig(**state["config"]["heads"])
    dims = {"video": config.encoder.video.widths[-1], "audio": config.encoder.audio.widths[-1]}
    model = SelfLabelModel(encoders, {m: MultiHead(dims[m], heads_cfg) for m in encoders})
    model.load_state_dict(state["model"])
    return model.eval()


def load_run(run: str | Path, device: str | torch.device) -> LoadedRun:
    """The trained run in folder ``run`` (``FileNotFoundError`` saying how to make one)."""
    paths = RunPaths(Path(run))
    checkpoint = paths.require_checkpoint()
    config = load_preset(paths.config)
    if not paths.manifest.is_file():
        raise FileNotFoundError(f"{paths.manifest} is missing: the run folder is incomplete")
    videos = load_manifest(paths.manifest)
    state = load_checkpoint(checkpoint, fallback=paths.previous_checkpoint)
    if int(state.get("n_samples", len(videos))) != len(videos):
        raise ValueError(
            f"{paths.manifest} lists {len(videos)} videos but the checkpoint was trained on "
            f"{state['n_samples']}: the manifest was replaced after training; restore it or "
            f"train a new run"
        )
    device = torch.device(device)
    with kernel_scope(config):
        model = _model(state, paths.checkpoints, config).to(device)
    labels = state.get("labels")
    loaded = LoadedRun(paths, config, videos, model, labels, device)
    if config.heads.overcluster > 1:
        loaded.groups = _merged_groups(loaded)
    return loaded


def _merged_groups(loaded: LoadedRun) -> torch.Tensor:
    """``(H, M)`` groups of an overclustered run: read from ``RUN/merge.json`` when it belongs
    to this checkpoint's labels, else found (:func:`otcluster.merge_clusters` on the training
    videos' centre clips, each head's labels as :func:`predict` gives them) and written there."""
    path, k = loaded.paths.merge, loaded.config.heads.n_clusters
    labels = loaded.train_labels
    stamp = hashlib.sha256(b"" if labels is None else labels.cpu().numpy().tobytes()).hexdigest()
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("labels_sha256") == stamp and saved.get("n_groups") == k:
            return torch.tensor(saved["groups"], dtype=torch.long)
    feats = extract(loaded, eval_dataset(loaded.videos, loaded.config))
    log_probs = heads_log_probs(loaded, feats.z)  # at M: loaded.groups is not set yet
    m = next(iter(log_probs.values())).shape[-1]
    keep = torch.tensor([i not in feats.failed for i in range(len(loaded.videos))])
    x = torch.cat([torch.nn.functional.normalize(z, dim=1) for z in feats.z.values()], 1)[keep]
    fine = predict(log_probs, stream_weights(loaded, log_probs))[0][:, keep]
    groups = torch.stack([
        merge_clusters(x, f, min(k, int(f.unique().numel())), n_clusters=m).groups for f in fine
    ])
    write_text(path, json.dumps({"labels_sha256": stamp, "n_groups": k,
                                 "groups": groups.tolist()}) + "\n")
    return groups


def eval_dataset(videos: Sequence[VideoInfo], config: VideoRecipeConfig, **kw: Any) -> AVDataset:
    """Deterministic clips (the middle of each video, or ``position``) that report their source."""
    return AVDataset(list(videos), config, train=False, return_source=True, **kw)


@dataclass
class Features:
    """Pooled features of every video, in manifest order, and the videos that failed to decode
    (their rows hold a neighbour's features: leave them out of any result)."""

    z: dict[str, torch.Tensor]
    failed: set[int]


def pass_threads(config: VideoRecipeConfig, device: str | torch.device) -> int:
    """Batches of an inference pass computed at once (:func:`otcluster._threads.map_batches`):
    ``training.eval_threads`` on the CPU, one on a GPU."""
    return config.training.eval_threads if torch.device(device).type == "cpu" else 1


def extract(
    loaded: LoadedRun,
    dataset: AVDataset,
    *,
    modalities: Sequence[str] = ("video", "audio"),
    batch_size: int | None = None,
    transform: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
    progress: bool = False,
) -> Features:
    """Pooled encoder features ``(N, D_m)`` (float32, CPU) of each of ``modalities``.

    ``transform[m]`` is applied to each batch of modality ``m`` before the encoder (e.g. the
    degraded frames of ``degrade``). Model in eval mode, no gradients, mixed precision on CUDA
    (as the trainer's inference).
    """
    model, device = loaded.model, loaded.device
    loader = DataLoader(
        dataset,
        batch_size=loaded.batch_size(batch_size),
        shuffle=False,
        num_workers=loaded.config.data.num_workers,
        pin_memory=device.type == "cuda",
    )
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {m: [] for m in modalities}
    failed: set[int] = set()

    def inputs(batch: dict[str, Any]) -> dict[str, torch.Tensor]:  # in this thread, in order
        index, source = batch["index"], batch["source"]
        failed.update(index[index != source].tolist())
        xs = {m: batch[m] for m in modalities}
        for m, fn in (transform or {}).items():
            if m in xs:
                xs[m] = fn(xs[m])
        return {m: x.to(device, non_blocking=True) for m, x in xs.items()}

    def encode(xs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {m: model.encode(x, m).float().cpu() for m, x in xs.items()}

    threads = pass_threads(loaded.config, device)
    with kernel_scope(loaded.config), torch.no_grad(), \
            torch.autocast(device.type, enabled=device.type == "cuda"):
        batches = tqdm(loader, desc="extracting", disable=not progress, leave=False)
        for z in map_batches(encode, (inputs(b) for b in batches), threads):
            for m in modalities:
                parts[m].append(z[m])
    return Features({m: torch.cat(v) for m, v in parts.items()}, failed)


def heads_log_probs(loaded: LoadedRun, features: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Log-probabilities ``(H, N, K)`` of each modality's heads applied to pooled features."""
    model, out = loaded.model, {}
    model.eval()
    with kernel_scope(loaded.config), torch.no_grad():
        for m, z in features.items():
            head = model.heads[m]
            out[m] = torch.cat(
                [
                    torch.log_softmax(head(z[i : i + _CHUNK].to(loaded.device)).float(), -1).cpu()
                    for i in range(0, z.shape[0], _CHUNK)
                ],
                1,
            )
            if loaded.groups is not None:  # overclustered: log-probabilities of the groups
                k = loaded.config.heads.n_clusters
                out[m] = torch.stack([merge_log_probs(lp, g, k) for lp, g in zip(out[m], loaded.groups)])
    return out


def stream_weights(loaded: LoadedRun, log_probs: Mapping[str, torch.Tensor]) -> Any:
    """The weights of the streams in eq. 6 when labelling (``clustering.label_weights``):
    ``"confidence"``, or the model's training weights (None when equal)."""
    if loaded.config.clustering.label_weights == "confidence" and len(log_probs) > 1:
        return "confidence"
    return loaded.model.weights_of(log_probs)


def predict(log_probs: Mapping[str, torch.Tensor], weights: Any = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels ``(H, N)`` and confidences: argmax and probability under ``softmax`` of the mean
    of the modalities' log-probabilities (eq. 6, weighted by ``weights``: see
    :func:`stream_weights`; no optimal transport, any videos)."""
    mean = average_views(list(log_probs.values()), normalize=False,
                         weights=weights).log_softmax(-1)
    conf, labels = mean.max(-1)
    return labels, conf.exp()

"""Data passes: the collate function, DataLoaders over sample positions, and evaluation passes.

Items are dicts ``{"index": int, <modality>: tensor, ...}``; ``"index"`` is the stable sample
index (labels are stored by it). Every pass here runs without gradients, the model in eval mode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import default_collate as _default_collate
from tqdm import tqdm

from .._threads import map_batches

__all__ = ["Collate", "DataPasses", "Prefetch", "dataset_size", "feature_dims", "same_index"]

Fn = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


class Collate:
    """Check items and collate only ``"index"`` and the needed modalities (picklable)."""

    def __init__(self, modalities: list[str], collate_fn: Callable | None):
        self.modalities = modalities
        self.collate_fn = collate_fn

    def __call__(self, items: list) -> dict:
        kept = []
        for item in items:
            if not isinstance(item, Mapping):
                raise TypeError(f"dataset items must be dicts with 'index' and modality keys, got "
                                f"{type(item).__name__}")
            if "index" not in item:
                raise KeyError(f"a dataset item has no 'index' key "
                               f"(keys: {sorted(map(str, item))})")
            missing = [m for m in self.modalities if m not in item]
            if missing:
                raise KeyError(f"dataset item with index {item['index']!r} is missing modality "
                               f"{missing} (keys: {sorted(map(str, item))})")
            idx = item["index"]
            if isinstance(idx, torch.Tensor):
                idx = idx.item() if idx.numel() == 1 else idx
            if isinstance(idx, bool) or not isinstance(idx, (int, np.integer)):
                raise TypeError(f"dataset item 'index' must be an int, got {idx!r}")
            kept.append({"index": int(idx), **{m: item[m] for m in self.modalities}})
        out = (self.collate_fn or _default_collate)(kept)
        out["index"] = torch.as_tensor(out["index"], dtype=torch.int64)
        return out



class Prefetch:
    """Batches of ``batches``; :meth:`start` loads the next one on a background thread.

    For a training loop on one torch thread without DataLoader workers: called once the step's
    random numbers are drawn (its forward pass: dropout), the next batch loads (drawing its
    augmentations) while the step's backward pass and update run, which draw none. The random
    numbers are then drawn in the order of a loop without it, so the batches and the weights are
    the same bit for bit. Off (plain iteration) when ``enabled`` is false or torch runs on more
    than one thread (the loader would change torch's shared thread count mid-step).
    """

    _END = object()

    def __init__(self, batches: Iterable, enabled: bool = True):
        self._it: Iterator = iter(batches)
        on = enabled and torch.get_num_threads() == 1
        self._pool = ThreadPoolExecutor(1, initializer=torch.set_num_threads, initargs=(1,),
                                        thread_name_prefix="otcluster-prefetch") if on else None
        self._next: Future | None = None

    def start(self) -> None:
        """Start loading the next batch (once; no-op when off)."""
        if self._pool is not None and self._next is None:
            self._next = self._pool.submit(next, self._it, self._END)

    def __iter__(self) -> Prefetch:
        return self

    def __next__(self) -> Any:
        if self._next is None:
            item = next(self._it, self._END)
        else:
            item, self._next = self._next.result(), None
        if item is self._END:
            self.close()
            raise StopIteration
        return item

    def __enter__(self) -> Prefetch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the background thread (waits for a batch being loaded)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool, self._next = None, None


@dataclass
class DataPasses:
    """How batches are loaded and where they run (shared by training, clustering and inference).

    Attributes
    ----------
    device : torch.device
    batch_size : int
        Batch size of the evaluation passes (clustering, alignment, inference).
    num_workers : int
        DataLoader workers.
    collate_fn : callable or None
        Collates the checked items (default: ``default_collate``).
    amp : bool
        float16 autocast in the evaluation passes (CUDA only).
    show_progress : bool
        tqdm bars (pass ``False`` on every rank but the first).
    threads : int
        Batches of an evaluation pass computed at once on the CPU (:func:`map_batches`; the
        same outputs, bit for bit, as one at a time).
    """

    device: torch.device
    batch_size: int
    num_workers: int = 0
    collate_fn: Callable | None = None
    amp: bool = False
    show_progress: bool = False
    threads: int = 1

    def loader(self, dataset: Any, positions: torch.Tensor, batch_size: int,
               modalities: list[str]) -> DataLoader:
        """Batches of ``dataset[positions]`` in that order, each a dict of the ``modalities``."""
        return DataLoader(dataset, batch_size=batch_size, sampler=positions.tolist(),
                          num_workers=self.num_workers,
                          collate_fn=Collate(modalities, self.collate_fn),
                          pin_memory=self.device.type == "cuda", drop_last=False)

    def bar(self, it: Any, desc: str, total: int | None = None) -> Any:
        return tqdm(it, desc=desc, total=total, disable=not self.show_progress, leave=False,
                    dynamic_ncols=True)

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, non_blocking=True)

    def eval_pass(self, model: nn.Module, dataset: Any, positions: torch.Tensor,
                  modalities: list[str], fn: Fn, n: int, desc: str,
                  batch_size: int | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Run ``fn`` (no grad, ``model`` in eval mode) on ``positions``; rows in position order.

        Returns the sample indices (checked to lie in ``0..n-1``) and the outputs of ``fn``
        concatenated along their second-to-last dimension.
        """
        loader = self.loader(dataset, positions, batch_size or self.batch_size, modalities)
        was = model.training
        model.eval()
        idx_parts: list[torch.Tensor] = []
        outs: dict[str, list[torch.Tensor]] = {}

        def inputs(batch: dict) -> dict[str, torch.Tensor]:
            idx = batch["index"]
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
                raise ValueError(f"dataset item 'index' values must lie in 0..{n - 1} "
                                 f"(N={n} items), got {int(idx.min())}..{int(idx.max())}")
            idx_parts.append(idx)
            return {m: self.to_device(batch[m]) for m in modalities}

        threads = self.threads if self.device.type == "cpu" else 1
        try:
            with torch.no_grad(), torch.autocast(self.device.type, enabled=self.amp):
                batches = (inputs(batch) for batch in self.bar(loader, desc))
                for out in map_batches(fn, batches, threads):
                    for k, v in out.items():
                        outs.setdefault(k, []).append(v)
        finally:
            model.train(was)
        index = torch.cat(idx_parts) if idx_parts else torch.zeros(0, dtype=torch.int64)
        return index, {k: torch.cat(v, dim=-2) for k, v in outs.items()}

    def full_pass(self, model: nn.Module, dataset: Any, modalities: list[str], fn: Fn,
                  batch_size: int | None, desc: str) -> dict[str, torch.Tensor]:
        """:meth:`eval_pass` over every item of ``dataset``, rows in index order, on the CPU."""
        n = len(dataset)
        if n == 0:
            raise ValueError("dataset is empty")
        index, out = self.eval_pass(model, dataset, torch.arange(n), modalities, fn, n, desc,
                                    batch_size)
        counts = torch.bincount(index, minlength=n)
        if bool((counts != 1).any()):
            raise ValueError(f"the dataset's 'index' values must be a permutation of 0..{n - 1}")
        order = torch.empty(n, dtype=torch.int64)
        order[index] = torch.arange(n)
        return {k: v.index_select(-2, order.to(v.device)).cpu() for k, v in out.items()}


def same_index(index: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor:
    """``idx``, checked equal to ``index`` (the indices of an earlier pass over the same positions)."""
    if index is not None and not torch.equal(index, idx):
        raise ValueError("the dataset returned different 'index' values for the same positions "
                         "in two passes: 'index' must be a fixed property of each item")
    return idx


def dataset_size(dataset: Any, world_size: int, n_clusters: int) -> int:
    """N, checked: a map-style dataset with at least 2 samples per process and K <= N."""
    try:
        n = len(dataset)
    except TypeError:
        raise TypeError("dataset must have a length (a map-style torch Dataset)") from None
    if n < 2 * world_size:
        raise ValueError(f"dataset has N={n} samples: need at least 2 per process "
                         f"({world_size} processes)")
    if n_clusters > n:
        raise ValueError(f"n_clusters K={n_clusters} is more than the N={n} samples")
    return n


def feature_dims(encoders: Mapping[str, nn.Module], dataset: Any, collate_fn: Callable | None,
                 device: torch.device) -> dict[str, int]:
    """Feature dimension D of each encoder: ``encoder.feature_dim``, else a dry run on two items.

    Also checks the keys and ``"index"`` of the first item.
    """
    modalities = list(encoders)
    first = dataset[0]
    Collate(modalities, None)([first])  # checks keys and "index" of the first item
    dims: dict[str, int] = {}
    need_dry = [m for m, e in encoders.items() if getattr(e, "feature_dim", None) is None]
    for m, e in encoders.items():
        d = getattr(e, "feature_dim", None)
        if d is not None:
            dims[m] = int(d)
    if need_dry:
        items = [first, dataset[1]]
        batch = Collate(need_dry, collate_fn)(items)
        for m in need_dry:
            enc = encoders[m].to(device)
            was = enc.training
            enc.eval()
            with torch.no_grad():
                z = enc(batch[m].to(device))
            enc.train(was)
            if not isinstance(z, torch.Tensor) or z.dim() != 2:
                raise ValueError(f"encoder {m!r} must return features of shape (B, D), got "
                                 f"{getattr(z, 'shape', type(z).__name__)}")
            dims[m] = int(z.shape[1])
    return dims

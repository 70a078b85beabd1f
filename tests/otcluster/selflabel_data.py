"""Small synthetic multi-modal data and encoders for the trainer tests (CPU, seconds)."""

from __future__ import annotations

import torch
from torch import nn


class Blobs(torch.utils.data.Dataset):
    """N samples of ``k`` classes; each modality sees its own class centres plus noise.

    Every read adds fresh noise (``augment``) from the global torch generator, like a training
    dataset with random augmentations. ``index_of`` maps a position to the reported index.
    """

    def __init__(self, n=240, k=4, d=6, modalities=("a", "b"), seed=0, noise=0.4, augment=0.1,
                 index_of=None, slow=0.0):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.arange(n) % k
        self.d = d
        self.x = {m: 2.0 * torch.randn(k, d, generator=g)[self.y] + noise * torch.randn(n, d, generator=g)
                  for m in modalities}
        self.augment = augment
        self.index_of = index_of
        self.slow = slow
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if self.slow:
            import time

            time.sleep(self.slow)
        idx = i if self.index_of is None else self.index_of(i)
        out = {"index": idx, "note": "extra keys are ignored"}
        for m, x in self.x.items():
            v = x[idx]
            out[m] = v + self.augment * torch.randn(self.d) if self.augment else v.clone()
        return out


def encoder(d_in=6, d_out=8, feature_dim=True):
    enc = nn.Sequential(nn.Linear(d_in, 16), nn.ReLU(), nn.Linear(16, d_out))
    if feature_dim:
        enc.feature_dim = d_out
    return enc


def encoders(modalities=("a", "b"), seed=0, **kw):
    torch.manual_seed(seed)
    return {m: encoder(**kw) for m in modalities}


def single_threaded():
    """Pin torch and numba to one thread (the test machines are shared and small); returns undo."""
    import numba

    t, nb = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)

    def undo():
        torch.set_num_threads(t)
        numba.set_num_threads(nb)

    return undo

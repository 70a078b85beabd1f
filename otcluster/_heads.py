"""Clustering heads: several independent classifiers over K clusters on top of an encoder.

Each head is an ``nn.Sequential`` whose last module is the ``nn.Linear`` to K clusters, so
that alignment (:func:`otcluster.permute_linear_` on :meth:`MultiHead.last_linear`) and the
memory-bounded solver (:meth:`MultiHead.penultimate` plus the last layer) see the same
structure for single-layer and MLP heads. The MLP is the paper's ``MLPv2``:
``Dropout -> Linear(D, hidden, bias=False) -> BatchNorm1d -> ReLU -> Dropout -> Linear(hidden, K)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

__all__ = ["HeadConfig", "MultiHead", "make_head"]


@dataclass
class HeadConfig:
    """Architecture of the clustering heads (one set per modality).

    Attributes
    ----------
    n_heads : int, default 10
        Independent clusterings H.
    n_clusters : int, default 309
        Clusters K per head.
    hidden_dim : int or None, default 512
        Width of the MLP head's hidden layer; ``None`` for a single ``Linear(D, K)``.
    dropout : float, default 0.3
        Dropout before each linear layer (0 disables it).
    """

    n_heads: int = 10
    n_clusters: int = 309
    hidden_dim: int | None = 512
    dropout: float = 0.3

    def validate(self) -> HeadConfig:
        """Raise ``ValueError`` naming the first bad field; return ``self``."""
        for name in ("n_heads", "n_clusters"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"HeadConfig.{name} must be a positive integer, got {v!r}")
        if self.n_clusters < 2:
            raise ValueError(f"HeadConfig.n_clusters must be >= 2, got {self.n_clusters}")
        h = self.hidden_dim
        if h is not None and (isinstance(h, bool) or not isinstance(h, int) or h < 1):
            raise ValueError(f"HeadConfig.hidden_dim must be a positive integer or None, got {h!r}")
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise ValueError(f"HeadConfig.dropout must be in [0, 1), got {self.dropout!r}")
        return self


def make_head(in_dim: int, n_clusters: int, hidden_dim: int | None, dropout: float
              ) -> nn.Sequential:
    """One head: ``[Dropout] -> Linear`` or the ``MLPv2`` stack; the last module is the Linear.

    Parameters
    ----------
    in_dim : int
        Feature dimension D of the encoder.
    n_clusters : int
        K.
    hidden_dim : int or None
        Hidden width, or ``None`` for a single linear layer.
    dropout : float
        Dropout probability before each linear layer.

    Returns
    -------
    nn.Sequential
        Maps ``(B, D)`` to logits ``(B, K)``.
    """
    layers: list[nn.Module] = []
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    if hidden_dim is not None:
        layers += [nn.Linear(in_dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim),
                   nn.ReLU(inplace=True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        in_dim = hidden_dim
    layers.append(nn.Linear(in_dim, n_clusters))
    return nn.Sequential(*layers)


class MultiHead(nn.Module):
    """H clustering heads on the same features.

    Parameters
    ----------
    in_dim : int
        Feature dimension D.
    config : HeadConfig

    Examples
    --------
    >>> heads = MultiHead(16, HeadConfig(n_heads=3, n_clusters=5, hidden_dim=8)).eval()
    >>> heads(torch.randn(4, 16)).shape
    torch.Size([3, 4, 5])
    >>> x = torch.randn(4, 16)
    >>> z = heads.penultimate(x, 1)
    >>> torch.allclose(heads.last_linear(1)(z), heads(x)[1])
    True
    """

    def __init__(self, in_dim: int, config: HeadConfig):
        super().__init__()
        config.validate()
        if isinstance(in_dim, bool) or int(in_dim) != in_dim or in_dim < 1:
            raise ValueError(f"in_dim must be a positive integer, got {in_dim!r}")
        self.in_dim = int(in_dim)
        self.n_heads = config.n_heads
        self.n_clusters = config.n_clusters
        self.heads = nn.ModuleList(
            make_head(self.in_dim, config.n_clusters, config.hidden_dim, config.dropout)
            for _ in range(config.n_heads)
        )

    def forward(self, x: torch.Tensor, heads: list[int] | torch.Tensor | None = None
                ) -> torch.Tensor:
        """Logits of every head (or of the listed heads).

        Parameters
        ----------
        x : Tensor of shape (B, D)
        heads : sequence of int, optional
            Indices of the heads to evaluate (default: all, in order).

        Returns
        -------
        Tensor of shape (H', B, K)
        """
        idx = range(self.n_heads) if heads is None else [int(h) for h in heads]
        return torch.stack([self.heads[h](x) for h in idx])

    def _stack(self, head: int) -> nn.Sequential:
        return cast(nn.Sequential, self.heads[head])

    def last_linear(self, head: int) -> nn.Linear:
        """The final ``nn.Linear(·, K)`` of head ``head`` (permute it to relabel the clusters)."""
        return cast(nn.Linear, self._stack(head)[-1])

    def penultimate(self, x: torch.Tensor, head: int) -> torch.Tensor:
        """Input of head ``head``'s last linear layer, shape (B, D') (``D' = hidden_dim or D``)."""
        return self._stack(head)[:-1](x)

    @property
    def is_linear(self) -> bool:
        """True when every head is a single linear map of the features (up to dropout)."""
        return all(not any(isinstance(m, nn.Linear) for m in self._stack(h)[:-1])
                   for h in range(self.n_heads))

"""The hybrid Mult-VAE: a torch module for training, a numpy :class:`~models.runtime.ModelRuntime` for serving.

Encoder (exactly what :func:`models.state.encode` computes, so fold-in equals
re-encoding)::

    x_i   = rating_weight(r_i)                       (0 for unrated movies)
    W_in  = E_in + S P_in                            item i's effective row: free + side projection
    h     = tanh(W_in^T x / ||x|| + b_in)
    mu    = h W_mu + b_mu,   log sigma^2 = h W_logvar + b_logvar

Decoder (multinomial likelihood over the catalogue)::

    logits = z (E_dec + S P_dec)^T + b_item + S p_bias

``S`` is the item side-feature matrix (genres, decade, tag tokens). Movies nobody
rated before the split keep zero free rows and are left out of the training
softmax, so their rows come from their content alone, the same rows
:meth:`ModelRuntime.add_item` gives a brand-new movie. Input dropout happens
*before* the normalisation and only in training, so training and serving see
the same function of the (sub-sampled) input vector.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F

from models.runtime import ModelRuntime
from models.state import FoldInWeights

__all__ = ["HybridVAEModule", "SideFeatures"]


class SideFeatures:
    """The item side-feature matrix as the flat CSR arrays ``embedding_bag`` takes (on ``device``)."""

    def __init__(self, m: sp.csr_matrix, device: torch.device) -> None:
        m = sp.csr_matrix(m, dtype=np.float32)
        m.sort_indices()
        self.matrix, self.device = m, device
        self.shape = m.shape
        self.indices = torch.from_numpy(m.indices.astype(np.int64)).to(device)
        self.offsets = torch.from_numpy(m.indptr[:-1].astype(np.int64)).to(device)
        self.values = torch.from_numpy(m.data.astype(np.float32)).to(device)

    def project(self, table: torch.Tensor) -> torch.Tensor:
        """``S @ table`` as [n_items, table.shape[1]]."""
        return F.embedding_bag(self.indices, table, self.offsets, mode="sum", per_sample_weights=self.values)

    def rows(self, items: np.ndarray) -> SideFeatures:
        """The side features of ``items`` only (the candidates of a sampled softmax), on the same device."""
        return SideFeatures(self.matrix[items], self.device)


def bag(table: torch.Tensor, items: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``x @ table`` for a batch of sparse rows (``items``/``weights`` flat, ``offsets`` row starts)."""
    return F.embedding_bag(items, table, offsets, mode="sum", per_sample_weights=weights)


class HybridVAEModule(nn.Module):
    """The torch network; :class:`models.hybrid_vae.HybridVAE` is the learner that trains and wraps it."""

    def __init__(self, n_items: int, n_side: int, hidden: int, latent: int, *, generator: torch.Generator) -> None:
        super().__init__()
        self.n_items, self.n_side, self.hidden, self.latent = n_items, n_side, hidden, latent

        def init(*shape: int, scale: float) -> nn.Parameter:
            return nn.Parameter(torch.randn(*shape, generator=generator) * scale)

        self.item_in = init(n_items, hidden, scale=0.01)
        self.side_in = init(n_side, hidden, scale=1.0 / math.sqrt(max(n_side, 1)))
        self.b_in = nn.Parameter(torch.zeros(hidden))
        self.w_mu = init(hidden, latent, scale=1.0 / math.sqrt(hidden))
        self.b_mu = nn.Parameter(torch.zeros(latent))
        self.w_logvar = init(hidden, latent, scale=0.01)
        self.b_logvar = nn.Parameter(torch.zeros(latent))
        self.item_dec = init(n_items, latent, scale=0.01)
        self.side_dec = init(n_side, latent, scale=1.0 / math.sqrt(max(n_side, 1)))
        self.item_bias = nn.Parameter(torch.zeros(n_items))
        self.side_bias = nn.Parameter(torch.zeros(n_side))

    # --- effective item rows ------------------------------------------------------------
    def effective(self, side: SideFeatures) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(W_in [n, hidden], D [n, latent], bias [n])``: free rows plus side projections."""
        w_in = self.item_in + side.project(self.side_in)
        dec = self.item_dec + side.project(self.side_dec)
        bias = self.item_bias + side.project(self.side_bias[:, None]).squeeze(1)
        return w_in, dec, bias

    def encode(
        self, w_in: torch.Tensor, items: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)`` of sparse input rows: ``tanh(x W_in / ||x|| + b_in)`` and the two heads."""
        pre = bag(w_in, items, offsets, weights)
        norm2 = bag(torch.ones(w_in.shape[0], 1, device=w_in.device), items, offsets, weights * weights)
        z = pre / torch.where(norm2 > 0, norm2, torch.ones_like(norm2)).sqrt()
        h = torch.tanh(z + self.b_in)
        return h @ self.w_mu + self.b_mu, h @ self.w_logvar + self.b_logvar

    def forward(
        self,
        side: SideFeatures,
        items: torch.Tensor,
        offsets: torch.Tensor,
        weights: torch.Tensor,
        *,
        sample: bool,
        generator: torch.Generator | None = None,
        candidates: np.ndarray | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logits, mu, logvar)`` for a batch of sparse input rows.

        ``candidates`` (item indexes) limits the logits to those columns, and the encoder and decoder to the
        rows they touch: what a sampled softmax needs (``models/training.py``), at a fraction of the
        full catalogue's cost. ``None`` scores every movie.
        """
        if candidates is None:
            w_in, dec, bias = self.effective(side)
            mu, logvar = self.encode(w_in, items, offsets, weights)
        else:
            used, local = torch.unique(items, return_inverse=True)  # the input movies' rows only
            used_np = used.cpu().numpy()
            w_in = self.item_in[used] + side.rows(used_np).project(self.side_in)
            mu, logvar = self.encode(w_in, local, offsets, weights)
            cand = torch.from_numpy(candidates).to(self.item_dec.device)
            cand_side = side.rows(candidates)
            dec = self.item_dec[cand] + cand_side.project(self.side_dec)
            bias = self.item_bias[cand] + cand_side.project(self.side_bias[:, None]).squeeze(1)
        z = mu
        if sample:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device)
            z = mu + eps * torch.exp(0.5 * logvar)
        return z @ dec.T + bias, mu, logvar

    # --- export ---------------------------------------------------------------------------
    @torch.no_grad()
    def to_runtime(self, side: SideFeatures, movie_ids: np.ndarray, metadata: dict[str, object]) -> ModelRuntime:
        """The numpy serving model (encoder for fold-in, effective decoder rows, side projections)."""
        w_in, dec, bias = self.effective(side)

        def f32(t: torch.Tensor) -> np.ndarray:
            return np.ascontiguousarray(t.detach().float().cpu().numpy(), dtype=np.float32)

        weights = FoldInWeights(f32(w_in), f32(self.b_in), f32(self.w_mu), f32(self.b_mu),
                                f32(self.w_logvar), f32(self.b_logvar))  # fmt: skip
        return ModelRuntime(
            weights=weights, item_decoder=f32(dec), item_bias=f32(bias),
            movie_ids=np.asarray(movie_ids, dtype=np.int64), side_in=f32(self.side_in),
            side_dec=f32(self.side_dec), side_bias=f32(self.side_bias), metadata=dict(metadata),
        )  # fmt: skip

"""The training loop of the hybrid VAE: batches, KL annealing, early stopping, determinism.

Determinism: every random draw (batch order, input dropout, prefix cuts, the
reparameterisation noise, the initial weights) comes from generators seeded
with ``seed``; torch runs with ``use_deterministic_algorithms``, so the same seed
gives bit-identical weights on the same machine and thread count.

Two kinds of training rows are mixed (``prefix_prob``):

* *denoising* (Mult-VAE): the input is the user's whole vector with input
  dropout, the target all of their positives;
* *prefix -> future*: the input is the user's first ``c`` ratings in time order
  (``c`` uniform), the target the positives that came after. This is the
  situation of the prequential protocol, where most users have a handful of
  ratings and the task is the next movie.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from models.data import POSITIVE, Events
from models.state import rating_weights
from models.vae import SideFeatures

__all__ = ["Batch", "EpochReport", "TrainingRows", "fit_module", "make_batch", "rows_from_events"]


@dataclass(frozen=True)
class TrainingRows:
    """Each user's ratings as CSR-like arrays in time order (the last rating of each movie)."""

    users: np.ndarray  #: int64 [n_rows], user_idx of each row
    indptr: np.ndarray  #: int64 [n_rows + 1]
    items: np.ndarray  #: int64 [nnz]
    weight: np.ndarray  #: float32 [nnz], encoder input weight
    target: np.ndarray  #: float32 [nnz], target weight (0 for non-positives)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def subset(self, rows: np.ndarray) -> TrainingRows:
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        take = _ranges(starts, ends)
        indptr = np.concatenate([[0], np.cumsum(ends - starts)])
        return TrainingRows(self.users[rows], indptr, self.items[take], self.weight[take], self.target[take])


def _ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, e)`` for each pair, vectorised."""
    lengths = ends - starts
    if lengths.sum() == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return np.arange(lengths.sum(), dtype=np.int64) + offsets


def rows_from_events(
    events: Events, *, recency_half_life_days: float | None = None, lukewarm_target: float = 0.0
) -> TrainingRows:
    """Group events by user in time order, keeping each (user, movie)'s last rating."""
    n_items = int(events.item.max()) + 1 if len(events) else 1
    key = events.user.astype(np.int64) * n_items + events.item
    order = np.lexsort((np.arange(len(key)), key))  # by key, then time (events are time-sorted)
    last = np.ones(len(key), dtype=bool)
    last[:-1] = key[order][1:] != key[order][:-1]
    keep = np.sort(order[last])  # back to time order
    user, item = events.user[keep].astype(np.int64), events.item[keep].astype(np.int64)
    rating, ts = events.rating[keep], events.ts[keep]
    by_user = np.argsort(user, kind="stable")  # stable: time order within each user
    user, item, rating, ts = user[by_user], item[by_user], rating[by_user], ts[by_user]
    users, starts = np.unique(user, return_index=True)
    indptr = np.concatenate([starts, [len(user)]]).astype(np.int64)
    target = np.where(rating >= POSITIVE, 1.0, np.where(rating >= 3.0, lukewarm_target, 0.0)).astype(np.float32)
    if recency_half_life_days is not None and len(ts):
        age_days = (ts.max() - ts) / 86400.0
        target *= np.power(0.5, age_days / recency_half_life_days).astype(np.float32)
    return TrainingRows(users.astype(np.int64), indptr, item, rating_weights(rating), target)


@dataclass(frozen=True)
class Batch:
    """Sparse input rows (``embedding_bag`` layout) and the (row, item, weight) triples of their targets."""

    items: torch.Tensor
    offsets: torch.Tensor
    weights: torch.Tensor
    target_rows: torch.Tensor
    target_items: torch.Tensor
    target_weights: torch.Tensor
    size: int


def _batch(rows: TrainingRows, take: np.ndarray, row_of: np.ndarray, is_input: np.ndarray,
           is_target: np.ndarray, size: int, device: torch.device,
           target_scale: np.ndarray | None = None) -> Batch:  # fmt: skip
    counts = np.bincount(row_of[is_input], minlength=size)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(device)

    target = rows.target[take] if target_scale is None else rows.target[take] * target_scale.astype(np.float32)
    return Batch(
        t(rows.items[take][is_input]),
        t(offsets),
        t(rows.weight[take][is_input]),
        t(row_of[is_target].astype(np.int64)),
        t(rows.items[take][is_target]),
        t(target[is_target]),
        size,
    )


def make_batch(
    rows: TrainingRows,
    batch: np.ndarray,
    rng: np.random.Generator,
    *,
    dropout: float,
    prefix_prob: float,
    device: torch.device,
    future_half_life: float | None = None,
) -> Batch:
    """Dropped-out (prefix) inputs and their targets for the training rows ``batch``."""
    starts, ends = rows.indptr[batch], rows.indptr[batch + 1]
    lengths = ends - starts
    take = _ranges(starts, ends)
    row_of = np.repeat(np.arange(len(batch)), lengths)
    position = np.arange(len(take)) - np.repeat(np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    prefix = rng.random(len(batch)) < prefix_prob
    cut = np.where(prefix, rng.integers(1, np.maximum(lengths, 1) + 1), lengths)
    cut_of = np.repeat(cut, lengths)
    is_input = position < cut_of
    in_prefix_row = np.repeat(prefix, lengths)
    is_target = np.where(in_prefix_row, ~is_input, True) & (rows.target[take] > 0)
    is_input &= rng.random(len(take)) >= dropout
    scale = None
    if future_half_life is not None:  # the next ratings matter most: decay with distance from the cut
        after = np.maximum(position - cut_of, 0)
        scale = np.where(in_prefix_row, np.power(0.5, after / future_half_life), 1.0)
    return _batch(rows, take, row_of, is_input, is_target, len(batch), device, scale)


def validation_batch(rows: TrainingRows, device: torch.device, cuts_per_user: int = 8, seed: int = 0) -> Batch:
    """Held-out users, as the prequential protocol sees them: next-positive prediction after a cut.

    Each user gives ``cuts_per_user`` rows; a row's input is the user's first ``c``
    ratings (``c`` drawn once, uniform over the positions before a positive, so the
    draw is fixed across epochs) and its one target the first positive at or after ``c``.
    """
    rng = np.random.default_rng(seed)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (take, is_input, is_target) per row
    for u in range(len(rows.users)):
        start, end = int(rows.indptr[u]), int(rows.indptr[u + 1])
        positives = np.flatnonzero(rows.target[start:end] > 0)
        positives = positives[positives >= 1]
        if len(positives) == 0:
            continue
        for p in rng.choice(positives, size=min(cuts_per_user, len(positives)), replace=False):
            take = np.arange(start, end)
            position = take - start
            parts.append((take, position < p, position == p))
    if not parts:
        return _batch(rows, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool), np.zeros(0, bool), 0,
                      device)  # fmt: skip
    take = np.concatenate([t for t, _, _ in parts])
    row_of = np.concatenate([np.full(len(t), j) for j, (t, _, _) in enumerate(parts)])
    is_input = np.concatenate([i for _, i, _ in parts])
    is_target = np.concatenate([t for _, _, t in parts])
    return _batch(rows, take, row_of, is_input, is_target, len(parts), device)


@dataclass(frozen=True)
class EpochReport:
    epoch: int
    max_epochs: int
    loss: float
    val_recall: float  #: HR@20 of the held-out users' next positive (see :func:`validation_batch`)
    best_epoch: int
    seconds: float


def fit_module(
    module: torch.nn.Module,
    side: SideFeatures,
    train: TrainingRows,
    val: TrainingRows | None,
    trainable: torch.Tensor,
    *,
    n_items: int,
    seed: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    max_epochs: int,
    patience: int,
    beta: float,
    anneal_steps: int,
    dropout: float,
    prefix_prob: float,
    future_half_life: float | None,
    max_seconds: float | None,
    device: torch.device,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> list[EpochReport]:
    """Train ``module`` in place; on return it holds the weights of the best validation epoch."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    opt = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay)
    mask = torch.where(trainable, 0.0, float("-inf")).to(device)  # softmax over HISTORY movies only
    val_batch = validation_batch(val, device, seed=seed) if val is not None and len(val.users) else None
    if val_batch is not None and val_batch.size == 0:
        val_batch = None
    best, best_state, best_epoch, step = -1.0, None, 0, 0
    reports: list[EpochReport] = []
    started = time.perf_counter()
    for epoch in range(1, max_epochs + 1):
        module.train()
        order = rng.permutation(len(train.users))
        total, count = 0.0, 0
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            b = make_batch(train, batch, rng, dropout=dropout, prefix_prob=prefix_prob, device=device,
                           future_half_life=future_half_life)  # fmt: skip
            logits, mu, logvar = module(side, b.items, b.offsets, b.weights, sample=True, generator=gen)
            logp = torch.log_softmax(logits + mask, dim=1)
            nll = -(logp[b.target_rows, b.target_items] * b.target_weights).sum() / b.size
            kl = 0.5 * (-logvar + logvar.exp() + mu.pow(2) - 1.0).sum(1).mean()
            step += 1
            anneal = beta * min(1.0, step / max(anneal_steps, 1))
            loss = nll + anneal * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(batch)
            count += len(batch)
        val_recall = _validate(module, side, val_batch, mask) if val_batch is not None else -total / count
        if val_recall > best:
            best, best_epoch = val_recall, epoch
            best_state = copy.deepcopy(module.state_dict())
        elapsed = time.perf_counter() - started
        report = EpochReport(epoch, max_epochs, total / max(count, 1), val_recall, best_epoch, elapsed)
        reports.append(report)
        if on_epoch is not None:
            on_epoch(report)
        if epoch - best_epoch >= patience or (max_seconds is not None and elapsed >= max_seconds):
            break
    if best_state is not None:
        module.load_state_dict(best_state)
    return reports


@torch.no_grad()
def _validate(module: torch.nn.Module, side: SideFeatures, b: Batch, mask: torch.Tensor, k: int = 20) -> float:
    """Recall@k (normalised by min(k, n)) of the validation rows' targets (HR@k for one target per row)."""
    module.eval()
    logits, _, _ = module(side, b.items, b.offsets, b.weights, sample=False)
    logits = logits + mask
    rows_in = torch.repeat_interleave(
        torch.arange(b.size, device=logits.device), torch.diff(b.offsets, append=b.offsets.new_tensor([len(b.items)]))
    )
    logits[rows_in, b.items] = float("-inf")
    y = torch.zeros_like(logits, dtype=torch.bool)
    y[b.target_rows, b.target_items] = True
    top = logits.topk(k, dim=1).indices
    hits = y.gather(1, top).sum(1).float()
    n = y.sum(1).float()
    ok = n > 0
    return float((hits[ok] / n[ok].clamp(max=k)).mean()) if ok.any() else 0.0

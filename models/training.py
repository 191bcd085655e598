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

__all__ = [
    "Batch",
    "CandidateSampler",
    "EpochReport",
    "TrainingRows",
    "fit_module",
    "make_batch",
    "rows_from_events",
    "validation_batches",
]


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


def validation_batches(rows: TrainingRows, device: torch.device, cuts_per_user: int = 8, seed: int = 0,
                       max_rows: int = 20_000, chunk: int = 1024) -> list[Batch]:  # fmt: skip
    """Held-out users, as the prequential protocol sees them: next-positive prediction after a cut.

    Each user gives ``cuts_per_user`` rows; a row's input is the user's first ``c`` ratings (``c`` drawn once,
    uniform over the positions before a positive, so the draw is fixed across epochs) and its one target the
    first positive at or after ``c``. At most ``max_rows`` rows (a seeded sample of the users beyond that:
    ML-32M's 10% would be 160,000 rows x 87,585 logits, 56 GB at once), in batches of ``chunk`` rows.
    """
    rng = np.random.default_rng(seed)
    users = np.arange(len(rows.users))
    if len(users) * cuts_per_user > max_rows:
        users = np.sort(rng.choice(users, size=max(1, max_rows // cuts_per_user), replace=False))
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (take, is_input, is_target) per row
    for u in users.tolist():
        start, end = int(rows.indptr[u]), int(rows.indptr[u + 1])
        positives = np.flatnonzero(rows.target[start:end] > 0)
        positives = positives[positives >= 1]
        if len(positives) == 0:
            continue
        for p in rng.choice(positives, size=min(cuts_per_user, len(positives)), replace=False):
            take = np.arange(start, end)
            position = take - start
            parts.append((take, position < p, position == p))
    batches = []
    for lo in range(0, len(parts), chunk):
        group = parts[lo : lo + chunk]
        take = np.concatenate([t for t, _, _ in group])
        row_of = np.concatenate([np.full(len(t), j) for j, (t, _, _) in enumerate(group)])
        is_input = np.concatenate([i for _, i, _ in group])
        is_target = np.concatenate([t for _, _, t in group])
        batches.append(_batch(rows, take, row_of, is_input, is_target, len(group), device))
    return batches


class CandidateSampler:
    """The columns of a sampled softmax: every positive of the batch, plus ``size`` negatives drawn from ``q``.

    The softmax normaliser of a row, ``Z = sum_j exp(o_j)`` over the catalogue, is the exact sum over the
    batch's positives ``P`` plus an importance-sampled estimate of the rest: ``sum_s exp(o_s - log(size * q_s))``
    over draws ``s`` not in ``P``. So a drawn column's logit is shifted by ``log(count_s) - log(size * q_s)``
    (``count_s``: how often it was drawn), the positives' by nothing, and the loss is the full softmax's in
    expectation of ``Z``. ``q`` is proportional to ``(ratings + 1) ** 0.75`` over the trainable movies
    (popular movies are the hard negatives; the power keeps the tail drawn).
    """

    def __init__(self, train: TrainingRows, trainable: np.ndarray, size: int, power: float = 0.75) -> None:
        counts = np.bincount(train.items, minlength=len(trainable)).astype(np.float64) + 1.0
        q = np.where(trainable, counts**power, 0.0)
        self.q = q / q.sum()
        self.cdf = np.cumsum(self.q)
        self.size = size

    def draw(self, targets: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(candidates, logit shift, position of each target among the candidates)``."""
        positives = np.unique(targets)
        drawn = np.minimum(np.searchsorted(self.cdf, rng.random(self.size), side="right"), len(self.q) - 1)
        drawn, counts = np.unique(drawn, return_counts=True)
        negative = ~np.isin(drawn, positives, assume_unique=True)
        drawn, counts = drawn[negative], counts[negative]
        candidates = np.concatenate([positives, drawn])
        shift = np.concatenate([np.zeros(len(positives)), np.log(counts) - np.log(self.size * self.q[drawn])])
        return candidates, shift.astype(np.float32), np.searchsorted(positives, targets)


@dataclass(frozen=True)
class EpochReport:
    epoch: int
    max_epochs: int
    loss: float
    val_recall: float  #: HR@20 of the held-out users' next positive (see :func:`validation_batches`)
    best_epoch: int
    seconds: float


def fit_module(
    module: torch.nn.Module,
    side: SideFeatures,
    train: TrainingRows,
    val: TrainingRows | None,
    trainable: torch.Tensor,
    *,
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
    sampled_softmax: int = 0,
    val_max_rows: int = 20_000,
    on_epoch: Callable[[EpochReport], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> list[EpochReport]:
    """Train ``module`` in place; on return it holds the weights of the best validation epoch.

    ``sampled_softmax`` > 0 draws that many negative columns per batch (:class:`CandidateSampler`) instead of
    the softmax over every movie; 0, or a catalogue no larger, is the exact softmax. Validation always
    scores the whole catalogue. ``max_seconds`` is also checked between batches, so a budget holds within
    one batch even when an epoch is long. ``on_step(done, total)`` reports batches within the epoch.
    """
    rng = np.random.default_rng(seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    opt = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay)
    mask = torch.where(trainable, 0.0, float("-inf")).to(device)  # softmax over HISTORY movies only
    trainable_np = trainable.cpu().numpy()
    sampler = (CandidateSampler(train, trainable_np, sampled_softmax)
               if 0 < sampled_softmax < int(trainable_np.sum()) else None)  # fmt: skip
    val_batches = validation_batches(val, device, seed=seed, max_rows=val_max_rows) if val is not None else []
    best, best_state, best_epoch, step = -1.0, None, 0, 0
    reports: list[EpochReport] = []
    started = time.perf_counter()
    out_of_time = False
    for epoch in range(1, max_epochs + 1):
        module.train()
        order = rng.permutation(len(train.users))
        total, count = 0.0, 0
        n_steps = -(-len(order) // batch_size)
        for k, start in enumerate(range(0, len(order), batch_size)):
            batch = order[start : start + batch_size]
            b = make_batch(train, batch, rng, dropout=dropout, prefix_prob=prefix_prob, device=device,
                           future_half_life=future_half_life)  # fmt: skip
            if sampler is None:
                logits, mu, logvar = module(side, b.items, b.offsets, b.weights, sample=True, generator=gen)
                logp = torch.log_softmax(logits + mask, dim=1)
                picked = logp[b.target_rows, b.target_items]
            else:
                cand, shift, column = sampler.draw(b.target_items.cpu().numpy(), rng)
                logits, mu, logvar = module(side, b.items, b.offsets, b.weights, sample=True, generator=gen,
                                            candidates=cand)  # fmt: skip
                logp = torch.log_softmax(logits + torch.from_numpy(shift).to(device), dim=1)
                picked = logp[b.target_rows, torch.from_numpy(column).to(device)]
            nll = -(picked * b.target_weights).sum() / b.size
            kl = 0.5 * (-logvar + logvar.exp() + mu.pow(2) - 1.0).sum(1).mean()
            step += 1
            anneal = beta * min(1.0, step / max(anneal_steps, 1))
            loss = nll + anneal * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(batch)
            count += len(batch)
            if on_step is not None:
                on_step(k + 1, n_steps)
            if max_seconds is not None and time.perf_counter() - started >= max_seconds:
                out_of_time = True
                break
        val_recall = _validate(module, side, val_batches, mask) if val_batches else -total / max(count, 1)
        if val_recall > best:
            best, best_epoch = val_recall, epoch
            best_state = copy.deepcopy(module.state_dict())
        elapsed = time.perf_counter() - started
        report = EpochReport(epoch, max_epochs, total / max(count, 1), val_recall, best_epoch, elapsed)
        reports.append(report)
        if on_epoch is not None:
            on_epoch(report)
        if out_of_time or epoch - best_epoch >= patience or (max_seconds is not None and elapsed >= max_seconds):
            break
    if best_state is not None:
        module.load_state_dict(best_state)
    return reports


@torch.no_grad()
def _validate(module: torch.nn.Module, side: SideFeatures, batches: list[Batch], mask: torch.Tensor,
              k: int = 20) -> float:  # fmt: skip
    """Recall@k (normalised by min(k, n)) of the validation rows' targets (HR@k for one target per row)."""
    module.eval()
    total, rows = 0.0, 0
    for b in batches:
        logits, _, _ = module(side, b.items, b.offsets, b.weights, sample=False)
        logits = logits + mask
        counts = torch.diff(b.offsets, append=b.offsets.new_tensor([len(b.items)]))
        rows_in = torch.repeat_interleave(torch.arange(b.size, device=logits.device), counts)
        logits[rows_in, b.items] = float("-inf")
        y = torch.zeros_like(logits, dtype=torch.bool)
        y[b.target_rows, b.target_items] = True
        top = logits.topk(k, dim=1).indices
        hits = y.gather(1, top).sum(1).float()
        n = y.sum(1).float()
        ok = n > 0
        total += float((hits[ok] / n[ok].clamp(max=k)).sum())
        rows += int(ok.sum())
    return total / rows if rows else 0.0

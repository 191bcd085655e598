"""The hybrid VAE learner: train with torch, then serve and fold in with numpy."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Self

import numpy as np

from models.artifacts import load_tensors, read_json, save_tensors
from models.base import Recommender
from models.data import Events, Interactions
from models.runtime import ModelRuntime, trending_increment
from models.sequence import CoRatedItems, push_recent
from models.state import UserState, cold_state, encode, fold_in
from models.training import EpochReport
from models.vae_combine import combine_runtimes
from reelstream.errors import ModelError
from schemas.side_features import side_metadata

__all__ = ["HybridVAE"]


class HybridVAE(Recommender):
    """Mult-VAE with item side features in the encoder's input rows and the decoder's item rows.

    After :meth:`fit` the learner serves from :attr:`runtime_` (numpy): a user's
    state is a :class:`~models.state.UserState`, :meth:`learn_one` is
    :func:`~models.state.fold_in` (exact, O(hidden) per event) and
    :meth:`score_one` decodes the posterior mean. ``encode`` also gives
    ``log sigma^2``, the per-user uncertainty.

    Parameters
    ----------
    hidden, latent
        Widths of the encoder's hidden layer and of the latent code (the decoder's item rows).
    beta
        Final KL weight; it grows linearly from 0 over ``anneal_steps`` steps.
    dropout
        Share of input ratings dropped per training row.
    prefix_prob
        Share of training rows that are "first ratings -> later positives" rather than denoising rows.
    future_half_life
        In those rows, a later positive's target weight halves every this many ratings after the
        cut, so the next movies count most (``None``: all later positives count alike).
    lr, weight_decay, batch_size
        AdamW settings.
    max_epochs, patience, max_seconds
        Early stopping on the validation users' Recall@20, and a wall-clock budget.
    val_fraction
        Share of HISTORY users held out for early stopping.
    recency_half_life_days
        Targets are down-weighted by age with this half-life (``None``: no decay). Only
        the training targets change, so fold-in stays exact.
    lukewarm_target
        Target weight of a 3-3.5 star rating (positives weigh 1): what a user watches
        next is informative even when they do not love it.
    use_side
        Whether to use item side features (False gives a plain Mult-VAE).
    members
        Number of VAEs trained with different seeds and served as one: their hidden and latent
        units are concatenated (block-diagonal heads) and their decoders averaged, which is
        again exactly the encoder of :mod:`models.state`, so fold-in stays exact. Latent width
        (and scoring cost) is ``members * latent``.
    prior_beta, prior_half_life_days
        The streaming item prior: ``prior_beta * log(1 + c_i)`` is added to movie ``i``'s logit, where
        ``c_i`` counts the rating events on ``i`` (any rating), each decayed with this half-life in event
        time: the worker's trending zset (:mod:`models.runtime`). Only scoring changes (fold-in and
        training do not); :meth:`observe` keeps the counts, :meth:`prime` starts them from HISTORY.
        ``prior_beta=0`` gives the plain decoder. Chosen on the HISTORY-only validation walk
        (:mod:`models.tuning`, ``docs/evaluation.md``).
    seq_gamma, seq_decay, seq_length, seq_window, seq_top_k
        The co-rating item-neighbour component (:mod:`models.sequence`): ``seq_gamma * log(1 + v / tau)``
        is added to every logit, where ``v`` sums the ``seq_top_k`` co-rating neighbours (pairs at most
        ``seq_window`` ratings apart in HISTORY) of the user's ``seq_length`` latest movies, the ``k``-th
        newest weighted ``seq_decay ** k``. Only scoring changes; its state is the list of latest movies,
        so fold-in stays exact. ``seq_gamma=0`` turns it off.
    sampled_softmax
        Negative movies drawn per batch for a sampled softmax (:class:`~models.training.CandidateSampler`);
        0 is the exact softmax over the catalogue. At ML-32M's 87,585 movies a few thousand cut an epoch's
        cost several times; validation and serving always score every movie.
    val_max_rows
        Upper bound on the validation rows scored after each epoch (a seeded sample of the held-out users).
    seed
        Seeds every random draw: same seed, same weights.
    device
        ``"cpu"`` or ``"cuda"``.

    Attributes
    ----------
    runtime_
        The numpy :class:`~models.runtime.ModelRuntime`.
    modules_
        The trained torch modules, one per member (empty after a numpy-only :meth:`load`).
    history_
        One :class:`~models.training.EpochReport` per epoch.

    References
    ----------
    Dawen Liang, Rahul G. Krishnan, Matthew D. Hoffman, Tony Jebara. Variational
    Autoencoders for Collaborative Filtering. WWW 2018.

    Examples
    --------
    >>> from models.data import Events, Interactions
    >>> import scipy.sparse as sp
    >>> users, items = np.repeat(np.arange(4), 2), np.array([0, 1, 0, 1, 2, 3, 2, 3])
    >>> ev = Events(users, items, np.full(8, 5.0, np.float32), np.arange(8))
    >>> side = sp.csr_matrix(np.eye(4, dtype=np.float32))
    >>> data = Interactions(ev, ev.select(np.zeros(8, bool)), 4, 4, side, list("abcd"),
    ...                     np.arange(4), [[], [], [], []])
    >>> model = HybridVAE(hidden=8, latent=4, max_epochs=60, val_fraction=0.0, lr=0.05, seed=1).fit(data)
    >>> scores = model.score_one(model.learn_one(model.new_state(), 0, 5.0))
    >>> bool(scores[1] > scores[3])
    True
    """

    def __init__(
        self,
        hidden: int = 256,
        latent: int = 64,
        beta: float = 0.2,
        anneal_steps: int = 2000,
        dropout: float = 0.5,
        prefix_prob: float = 0.0,
        future_half_life: float | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        batch_size: int = 128,
        max_epochs: int = 100,
        patience: int = 25,
        max_seconds: float | None = None,
        val_fraction: float = 0.1,
        recency_half_life_days: float | None = None,
        lukewarm_target: float = 0.0,
        use_side: bool = True,
        members: int = 1,
        prior_beta: float = 1.25,
        prior_half_life_days: float = 365.0,
        seq_gamma: float = 1.0,
        seq_decay: float = 0.7,
        seq_length: int = 10,
        seq_window: int = 3,
        seq_top_k: int = 100,
        sampled_softmax: int = 0,
        val_max_rows: int = 20_000,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        self.hidden = hidden
        self.latent = latent
        self.beta = beta
        self.anneal_steps = anneal_steps
        self.dropout = dropout
        self.prefix_prob = prefix_prob
        self.future_half_life = future_half_life
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.max_seconds = max_seconds
        self.val_fraction = val_fraction
        self.recency_half_life_days = recency_half_life_days
        self.lukewarm_target = lukewarm_target
        self.use_side = use_side
        self.members = members
        self.prior_beta = prior_beta
        self.prior_half_life_days = prior_half_life_days
        self.seq_gamma = seq_gamma
        self.seq_decay = seq_decay
        self.seq_length = seq_length
        self.seq_window = seq_window
        self.seq_top_k = seq_top_k
        self.sampled_softmax = sampled_softmax
        self.val_max_rows = val_max_rows
        self.seed = seed
        self.device = device

    # --- training -------------------------------------------------------------------------
    def fit(self, data: Interactions, on_epoch: Callable[[EpochReport], None] | None = None,
            on_step: Callable[[int, int], None] | None = None,
            warm_start: HybridVAE | None = None) -> Self:  # fmt: skip
        """Train on ``data.history``; ``on_epoch`` gets each epoch's report, ``on_step(done, total)`` each batch.

        ``warm_start`` (a fitted model with the same shapes: same catalogue, side features and widths) starts
        each member from its weights instead of at random: the final fit on all of HISTORY can continue the
        validation fit on its first 80% instead of starting over, which halves training at ML-32M scale.
        """
        import torch

        from models.training import fit_module, rows_from_events
        from models.vae import HybridVAEModule, SideFeatures

        started = time.perf_counter()  # after the imports: torch's first import is not training
        device = torch.device(self.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ModelError("--device cuda: no CUDA device is available (torch.cuda.is_available() is False)")
        torch.manual_seed(self.seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
        side_m = data.item_side if self.use_side else data.item_side[:, :0]
        n_side = max(side_m.shape[1], 1)
        if side_m.shape[1] == 0:  # keep one all-zero column so shapes stay valid
            import scipy.sparse as sp

            side_m = sp.csr_matrix((data.n_items, 1), dtype=np.float32)
        side = SideFeatures(side_m, device)
        rows = rows_from_events(data.history, recency_half_life_days=self.recency_half_life_days,
                                lukewarm_target=self.lukewarm_target)  # fmt: skip
        rng = np.random.default_rng(self.seed)
        eligible = np.flatnonzero((np.add.reduceat(rows.target > 0, rows.indptr[:-1]) >= 2)
                                  & (rows.lengths > 0))  # fmt: skip
        n_val = round(self.val_fraction * len(eligible))
        val_rows = np.sort(rng.choice(eligible, size=n_val, replace=False)) if n_val else np.zeros(0, np.int64)
        train_rows = np.setdiff1d(np.arange(len(rows.users)), val_rows)
        trainable = np.zeros(data.n_items, dtype=bool)
        trainable[data.history.item] = True

        self.modules_: list[Any] = []
        self.history_: list[Any] = []
        for member in range(self.members):
            seed = self.seed + 1000 * member
            gen = torch.Generator().manual_seed(seed)
            module = HybridVAEModule(data.n_items, n_side, self.hidden, self.latent, generator=gen)
            with torch.no_grad():  # never-rated movies: rows from content only
                cold = torch.from_numpy(~trainable)
                module.item_in[cold] = 0.0
                module.item_dec[cold] = 0.0
            if warm_start is not None:
                try:
                    module.load_state_dict(warm_start.modules_[member].state_dict())
                except (IndexError, RuntimeError) as exc:
                    raise ModelError(f"warm start: the model does not match this fit ({exc})") from None
            module.to(device)
            offset = member * self.max_epochs
            report = None if on_epoch is None else _offset_reports(on_epoch, offset, self.members * self.max_epochs)
            self.history_ += fit_module(
                module, side, rows.subset(train_rows), rows.subset(val_rows) if n_val else None,
                torch.from_numpy(trainable), seed=seed, lr=self.lr,
                weight_decay=self.weight_decay, batch_size=self.batch_size, max_epochs=self.max_epochs,
                patience=self.patience, beta=self.beta, anneal_steps=self.anneal_steps, dropout=self.dropout,
                prefix_prob=self.prefix_prob, future_half_life=self.future_half_life,
                max_seconds=self.max_seconds, device=device, sampled_softmax=self.sampled_softmax,
                val_max_rows=self.val_max_rows, on_epoch=report, on_step=on_step,
            )  # fmt: skip
            self.modules_.append(module.cpu().eval())
        self.training_seconds_ = time.perf_counter() - started
        looped = time.perf_counter()
        best = max(self.history_, key=lambda r: r.val_recall) if self.history_ else None
        metadata = {
            "learner": "HybridVAE",
            "params": self._get_params(),
            "data_version": data.version,
            **side_metadata(data.side_names if self.use_side else [], data.side_year_range if self.use_side else None),
            "training_seconds": self.training_seconds_,
            "epochs": len(self.history_),
            "best_epoch": best.epoch if best else None,
            "val_hr_at_20": best.val_recall if best else None,
            "item_prior": self._prior_metadata(),
        }
        cpu_side = SideFeatures(side_m, torch.device("cpu"))
        self.runtime_ = combine_runtimes([m.to_runtime(cpu_side, data.movie_ids, metadata) for m in self.modules_])
        self.set_sequence(self.seq_gamma, self.seq_decay, self.seq_length, self.seq_window, self.seq_top_k,
                          data.history)  # fmt: skip
        self.training_seconds_ = time.perf_counter() - started
        #: seconds after the batches: runtimes, the co-rating table (a budget must leave room for them)
        self.finish_seconds_ = time.perf_counter() - looped
        self.runtime_.metadata["training_seconds"] = self.training_seconds_
        self.prime(data.history)
        return self

    # --- the co-rating component ---------------------------------------------------------
    def set_sequence(self, gamma: float, decay: float, length: int, window: int, top_k: int,
                     events: Events) -> Self:  # fmt: skip
        """Set the co-rating component's parameters (metadata included); recount it from ``events`` (HISTORY)
        when the window or top-k changed."""
        self.seq_gamma, self.seq_decay, self.seq_length = float(gamma), float(decay), int(length)
        co = self.runtime_.sequence
        if co is None or co.window != window or co.top_k != top_k:
            co = CoRatedItems.build(events, self.runtime_.n_items, window=int(window), top_k=int(top_k))
        self.seq_window, self.seq_top_k = int(window), int(top_k)
        self.runtime_.sequence = co
        self.runtime_.metadata["sequence"] = {
            "gamma": self.seq_gamma, "decay": self.seq_decay, "length": self.seq_length, "window": co.window,
            "top_k": co.top_k, "tau": co.tau, "neighbours": len(co.data),
            "state": "latest rated movies, newest first (rs:user:{uid}:rated ordered by event time, movie id)",
        }  # fmt: skip
        self.runtime_.metadata["params"] = self._get_params()
        return self

    # --- the streaming item prior --------------------------------------------------------
    def _prior_metadata(self) -> dict[str, Any]:
        return {
            "beta": float(self.prior_beta), "half_life_s": float(self.prior_half_life_days) * 86400.0,
            "counts": "every rating event, decayed in event time (rs:items:prior)",
        }  # fmt: skip

    def prime(self, events: Events) -> Self:
        """Start the prior's decayed counts from ``events`` (HISTORY); the clock is their last timestamp."""
        half_life = float(self.prior_half_life_days) * 86400.0
        self.trending_ = np.full(self.runtime_.n_items, -np.inf)
        np.logaddexp.at(self.trending_, events.item.astype(np.int64), trending_increment(events.ts, half_life))
        self.now_ = float(events.ts.max()) if len(events) else 0.0
        return self

    def set_item_prior(self, beta: float, half_life_days: float, events: Events) -> Self:
        """Change the prior's parameters (model metadata included) and re-prime from ``events``."""
        self.prior_beta, self.prior_half_life_days = float(beta), float(half_life_days)
        self.runtime_.metadata["item_prior"] = self._prior_metadata()
        self.runtime_.metadata["params"] = self._get_params()
        return self.prime(events)

    def observe(self, item: int, rating: float, previous_rating: float | None = None, ts: float | None = None) -> None:
        """Count the event in the prior (as the worker's trending zset does) and move the clock to ``ts``."""
        if ts is None or getattr(self, "trending_", None) is None:
            return
        inc = float(trending_increment(ts, float(self.prior_half_life_days) * 86400.0))
        self.trending_[item] = np.logaddexp(self.trending_[item], inc)
        self.now_ = max(self.now_, float(ts))

    # --- serving --------------------------------------------------------------------------
    def new_state(self) -> UserState:
        return cold_state(self.runtime_.weights)

    def learn_one(self, state: UserState, item: int, rating: float, previous_rating: float | None = None) -> UserState:
        folded = fold_in(self.runtime_.weights, state, item, rating, previous_rating)
        return replace(folded, recent=push_recent(state.recent, item, max(self.seq_length, 1)))

    def score_one(self, state: UserState) -> np.ndarray:
        mu, _ = encode(self.runtime_.weights, state)
        trending = getattr(self, "trending_", None)
        if trending is None or self.prior_beta == 0.0:
            scores = self.runtime_.scores(mu)
        else:
            scores = self.runtime_.scores(mu, trending, self.now_)
        seq = self.runtime_.sequence_logits(state.recent)
        if seq is not None:
            scores += seq
        return scores

    # --- persistence ----------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """``weights.safetensors`` (the torch state dict), ``runtime.npz``, ``metadata.json``, ``item_prior.npz``.

        ``item_prior.npz`` holds the prior's decayed counts (as trending scores) and clock; the gateway
        uses the worker's live ``rs:items:prior`` zset instead, and these until that zset exists.
        """
        folder.mkdir(parents=True, exist_ok=True)
        if getattr(self, "modules_", None):
            tensors = {
                f"member{k}.{name}": t for k, m in enumerate(self.modules_) for name, t in m.state_dict().items()
            }
            save_tensors(folder / "weights.safetensors", tensors,
                         metadata={"learner": "HybridVAE", "members": str(len(self.modules_))})  # fmt: skip
        self.runtime_.save(folder)
        if getattr(self, "trending_", None) is not None:  # the prior's counts where fitting or priming left them
            np.savez(folder / "item_prior.npz", trending=self.trending_, now=np.float64(self.now_))

    @classmethod
    def load(cls, folder: Path, *, expect_data_version: int | None = None, with_torch: bool = False) -> Self:
        """Serve from ``runtime.npz``; ``with_torch`` also restores the torch module from safetensors."""
        runtime = ModelRuntime.load(folder, expect_data_version=expect_data_version)
        params: dict[str, Any] = read_json(folder / "metadata.json").get("params", {})
        model = cls(**params)
        model.runtime_ = runtime
        model.modules_ = []
        if runtime.primed_prior is not None:  # item_prior.npz, read (and checked) by ModelRuntime.load
            model.trending_, model.now_ = runtime.primed_prior[0].copy(), runtime.primed_prior[1]
        if with_torch:
            import torch

            from models.vae import HybridVAEModule

            tensors = load_tensors(folder / "weights.safetensors")
            try:
                for k in range(model.members):
                    prefix = f"member{k}."
                    state = {name[len(prefix) :]: t for name, t in tensors.items() if name.startswith(prefix)}
                    n_items, hidden = state["item_in"].shape
                    module = HybridVAEModule(n_items, state["side_in"].shape[0], hidden, state["b_mu"].shape[0],
                                             generator=torch.Generator().manual_seed(0))  # fmt: skip
                    module.load_state_dict(state)
                    model.modules_.append(module.eval())
            except (KeyError, RuntimeError, ValueError) as exc:
                raise ModelError(f"{folder / 'weights.safetensors'}: does not match the model ({exc})") from None
        return model


def _offset_reports(on_epoch: Callable[[EpochReport], None], offset: int, total: int) -> Callable[[EpochReport], None]:
    """Number one member's epochs after the previous members' (one progress bar for the ensemble)."""

    def report(r: EpochReport) -> None:
        on_epoch(EpochReport(r.epoch + offset, total, r.loss, r.val_recall, r.best_epoch + offset, r.seconds))

    return report

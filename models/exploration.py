"""Exploration from the hybrid VAE's latent posterior: Thompson sampling and an upper confidence bound.

The encoder gives each user a Gaussian posterior ``z ~ N(mu, diag(sigma^2))`` with
``sigma = exp(logvar / 2)`` (:func:`models.state.encode`). The exploit list ranks the logits of
the mean, ``W @ mu + b (+ prior)``. Two arms rank something else:

* **Thompson sampling** draws one ``z = mu + scale * sigma * eps`` (``eps ~ N(0, I)``) per list and
  ranks ``W @ z + b (+ prior)``. Since the logits are linear in ``z`` this is the exploit scores
  plus ``W @ (z - mu)``, so the decoder, bias and item prior are exactly the exploit ones.
* **UCB** ranks the exploit scores plus ``scale`` times each logit's posterior standard deviation,
  ``std_i = sqrt(sum_k W_ik^2 sigma_k^2)``, computed as ``sqrt((W * W) @ sigma^2)``: items the model
  is unsure about for this user move up.

``scale`` is the knob: 0 gives the exploit list back, 1 the posterior as trained. A draw is
reproducible: its Generator is seeded from integers (:func:`draw_rng`); the gateway uses
``(seed, user id, state version)`` so a list is the same until the user's state moves, and
:class:`Exploring` (the prequential harness's learner) uses ``(seed, n-th list)``.

numpy only: the gateway imports this without torch.

>>> import numpy as np
>>> W = np.array([[1.0, 0.0], [3.0, 4.0]], np.float32)     # two items, latent 2
>>> mu, logvar = np.zeros(2, np.float32), np.zeros(2, np.float32)  # sigma = 1
>>> logit_std(W * W, logvar).tolist()                         # sqrt(1), sqrt(9 + 16)
[1.0, 5.0]
>>> explore_scores(np.zeros(2, np.float32), W, mu, logvar, "ucb", 2.0).tolist()
[2.0, 10.0]
>>> a = explore_scores(np.zeros(2, np.float32), W, mu, logvar, "thompson", 1.0, draw_rng(0, 7, 3))
>>> b = explore_scores(np.zeros(2, np.float32), W, mu, logvar, "thompson", 1.0, draw_rng(0, 7, 3))
>>> bool((a == b).all()), bool((a == explore_scores(np.zeros(2, np.float32), W, mu, logvar,
...                                                "thompson", 1.0, draw_rng(1, 7, 3))).all())
(True, False)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Self, get_args

import numpy as np

from models.base import Recommender
from models.data import Interactions
from models.state import UserState, encode
from reelstream.errors import ModelError

__all__ = [
    "KINDS",
    "ExploreKind",
    "Exploring",
    "draw_rng",
    "explore_scores",
    "logit_std",
    "posterior_sigma",
    "thompson_latent",
]

ExploreKind = Literal["thompson", "ucb"]
#: The exploration arms (the rules add ``"none"``: exploit).
KINDS: tuple[str, ...] = get_args(ExploreKind)
#: ``logvar`` is clipped to this range before ``exp``: a corrupt value cannot overflow float32.
LOGVAR_CLIP = 30.0


def draw_rng(seed: int, *identity: int) -> np.random.Generator:
    """A Generator determined by ``seed`` and the identity of the draw (non-negative integers).

    >>> float(draw_rng(0, 5, 2).standard_normal()) == float(draw_rng(0, 5, 2).standard_normal())
    True
    """
    return np.random.default_rng(np.random.SeedSequence([int(seed), *(int(i) for i in identity)]))


def posterior_sigma(logvar: np.ndarray) -> np.ndarray:
    """float64 ``exp(logvar / 2)``, the posterior's standard deviation per latent unit.

    >>> posterior_sigma(np.log(np.array([4.0, 0.25]))).round(6).tolist()
    [2.0, 0.5]
    """
    lv = np.clip(np.asarray(logvar, dtype=np.float64), -LOGVAR_CLIP, LOGVAR_CLIP)
    return np.exp(0.5 * lv)


def thompson_latent(mu: np.ndarray, logvar: np.ndarray, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    """One posterior draw ``mu + scale * exp(logvar / 2) * eps``, float32 [latent]."""
    eps = rng.standard_normal(np.shape(mu))
    return (np.asarray(mu, np.float64) + scale * posterior_sigma(logvar) * eps).astype(np.float32)


def logit_std(decoder_sq: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """float32 [n_items] posterior standard deviation of each logit, ``sqrt(decoder_sq @ sigma^2)``.

    ``decoder_sq`` is ``decoder * decoder`` (float32 [n_items, latent]); callers keep it per model.
    """
    var = np.exp(np.clip(np.asarray(logvar, np.float64), -LOGVAR_CLIP, LOGVAR_CLIP)).astype(np.float32)
    return np.sqrt(decoder_sq @ var)


def explore_scores(
    exploit: np.ndarray,
    decoder: np.ndarray,
    mu: np.ndarray,
    logvar: np.ndarray,
    kind: str,
    scale: float,
    rng: np.random.Generator | None = None,
    *,
    decoder_sq: np.ndarray | None = None,
) -> np.ndarray:
    """The arm's scores from the exploit ones (``decoder @ mu``, plus any bias and prior), float32 [n_items].

    ``thompson`` needs ``rng``; ``ucb`` uses ``decoder_sq`` when given (else squares ``decoder``).
    ``exploit`` is not modified.
    """
    if kind == "thompson":
        if rng is None:
            raise ModelError("Thompson sampling needs a Generator (draw_rng)")
        delta = thompson_latent(mu, logvar, rng, scale) - np.asarray(mu, np.float32)
        return exploit + decoder @ delta
    if kind == "ucb":
        sq = decoder * decoder if decoder_sq is None else decoder_sq
        return exploit + np.float32(scale) * logit_std(sq, logvar)
    raise ModelError(f"unknown exploration kind {kind!r}; known: {list(KINDS)}")


class Exploring(Recommender):
    """A hybrid VAE whose lists explore: delegates learning, explores in :meth:`score_one`.

    ``model`` must expose ``runtime_`` (a :class:`~models.runtime.ModelRuntime`, as
    :class:`~models.hybrid_vae.HybridVAE` does) and score a :class:`~models.state.UserState`;
    its own :meth:`score_one` gives the exploit scores, so the item prior and anything else it adds
    are kept. The ``n``-th call of :meth:`score_one` draws from ``draw_rng(seed, n)``: a walk over
    the same events gives the same lists (copy or :meth:`clone` before each walk: the count lives
    in the instance). ``observe``, ``learn_one`` and ``new_state`` are the model's, so a shared model
    moves as the exploit one does.

    Parameters
    ----------
    model
        The fitted (or to-be-fitted) learner.
    kind
        ``"thompson"`` or ``"ucb"``.
    scale
        Thompson: multiplies sigma; UCB: the bonus weight ``c``.
    seed
        Seeds the Thompson draws.
    """

    def __init__(self, model: Recommender, kind: str = "thompson", scale: float = 1.0, seed: int = 0) -> None:
        if kind not in KINDS:
            raise ModelError(f"unknown exploration kind {kind!r}; known: {list(KINDS)}")
        if not (np.isfinite(scale) and scale >= 0.0):
            raise ModelError(f"exploration scale must be a finite number >= 0, got {scale!r}")
        self.model = model
        self.kind = kind
        self.scale = scale
        self.seed = seed
        self.draws_ = 0
        self._sq: tuple[np.ndarray, np.ndarray] | None = None  # (decoder, decoder ** 2)

    def clone(self) -> Self:
        return type(self)(self.model.clone(), self.kind, self.scale, self.seed)

    # --- delegated learning -----------------------------------------------------------------
    def fit(self, data: Interactions) -> Self:
        self.model.fit(data)
        return self

    def new_state(self) -> Any:
        return self.model.new_state()

    def learn_one(self, state: Any, item: int, rating: float, previous_rating: float | None = None) -> Any:
        return self.model.learn_one(state, item, rating, previous_rating)

    def observe(self, item: int, rating: float, previous_rating: float | None = None, ts: float | None = None) -> None:
        self.model.observe(item, rating, previous_rating, ts=ts)

    # --- exploring ---------------------------------------------------------------------------
    def score_one(self, state: UserState) -> np.ndarray:
        runtime = getattr(self.model, "runtime_", None)
        if runtime is None:
            raise ModelError(f"{type(self.model).__name__} has no runtime_: fit or load it before exploring")
        exploit = self.model.score_one(state)
        mu, logvar = encode(runtime.weights, state)
        decoder = runtime.item_decoder
        rng = draw_rng(self.seed, self.draws_)
        self.draws_ += 1
        if self.kind == "ucb" and (self._sq is None or self._sq[0] is not decoder):
            self._sq = (decoder, decoder * decoder)
        sq = self._sq[1] if self.kind == "ucb" and self._sq is not None else None
        return explore_scores(exploit, decoder, mu, logvar, self.kind, self.scale, rng, decoder_sq=sq)

    # --- persistence -------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """The model under ``folder/model`` and the arm's parameters in ``params.json``."""
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save(folder / "model")
        params = {"learner": "Exploring", "kind": self.kind, "scale": self.scale, "seed": self.seed}
        (folder / "params.json").write_text(json.dumps(params, indent=2))

    @classmethod
    def load(cls, folder: Path) -> Self:
        """An arm :meth:`save` wrote over a hybrid VAE."""
        from models.hybrid_vae import HybridVAE  # imports torch: only loading a saved arm needs it

        try:
            params = json.loads((folder / "params.json").read_text())
        except (OSError, ValueError) as exc:
            raise ModelError(f"{folder / 'params.json'}: unreadable ({exc})") from None
        if params.pop("learner", None) != "Exploring":
            raise ModelError(f"{folder}: params.json holds another learner, not Exploring")
        return cls(HybridVAE.load(folder / "model"), **params)

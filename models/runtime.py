"""The serving-side model: numpy arrays only, loaded once by the worker and the gateway.

``reelstream train`` writes a model folder; this module reads its ``runtime.npz``
and ``metadata.json`` without importing torch::

    var/models/CURRENT            -> "m0001"
    var/models/m0001/metadata.json  model_version, data_version, hyper-parameters, metrics, timings
    var/models/m0001/weights.safetensors   the torch state dict (training side only)
    var/models/m0001/runtime.npz    the arrays below

``runtime.npz`` holds the encoder (:class:`~models.state.FoldInWeights` fields),
the item decoder ``item_decoder`` [n_items, latent] and ``item_bias`` [n_items],
``movie_ids`` [n_items] (item_idx -> MovieLens id), and the side-feature
projections ``side_in`` [n_side, hidden] / ``side_dec`` [n_side, latent] /
``side_bias`` [n_side] that give a never-rated movie its rows from its content.

**Streaming item prior.** ``metadata["item_prior"] = {"beta": b, "half_life_s": h}`` adds
``b * log(1 + c_i(now))`` to every logit, where ``c_i(now) = sum_e 0.5 ** ((now - ts_e) / h)`` is the
time-decayed number of rating events on movie ``i`` (any rating). That count is exactly what the worker
keeps in its trending-style zsets (``rs:items:trending``, ``rs:items:prior``): a zset stores
``t_i = log sum_e exp(d * ts_e)`` with ``d = ln 2 / h`` (``streams/processor.py``), so ``log c_i(now) = t_i - d * now``
(:func:`decayed_log_counts`). Pass the zset's scores to :meth:`ModelRuntime.scores` as ``trending``
(aligned with the item index, ``-inf`` for a movie without events) together with ``now_s``; without
them the scores are the plain decoder logits. The scores must have been kept with the prior's
``half_life_s`` (:meth:`ModelRuntime.prior_logits` refuses another one): the worker therefore keeps a
second zset, ``rs:items:prior``, with the same definition at the model's half-life, and its clock
(the latest event time it applied) in ``rs:items:prior:clock``; the gateway adds the prior from them.

``item_prior.npz`` (written by :meth:`models.hybrid_vae.HybridVAE.save`) holds the counts primed on
HISTORY and their clock; :meth:`ModelRuntime.load` reads it into :attr:`ModelRuntime.primed_prior`
(what the gateway serves before the worker's zset exists).
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.sequence import CoRatedItems
from models.state import FoldInWeights
from reelstream.errors import ModelError

__all__ = ["ModelRuntime", "current_model_dir", "decayed_log_counts", "trending_increment"]


def trending_increment(ts_s: float | np.ndarray, half_life_s: float) -> float | np.ndarray:
    """What one event at ``ts_s`` (seconds) adds, by ``logaddexp``, to its movie's trending score.

    The same ``d * ts`` as the worker's trending zset (``streams/processor.py``, ``d = ln 2 / half-life``).
    """
    return (math.log(2.0) / half_life_s) * np.asarray(ts_s, dtype=np.float64)


def decayed_log_counts(trending: np.ndarray, now_s: float, half_life_s: float) -> np.ndarray:
    """float32 ``log(1 + c_i(now))`` from trending scores ``t_i = log sum_e exp(d * ts_e)`` (float64 [n]).

    >>> t = np.array([-np.inf, float(trending_increment(0.0, 10.0)), float(trending_increment(10.0, 10.0))])
    >>> [round(float(v), 4) for v in decayed_log_counts(t, 10.0, 10.0)]  # no event; one 10 s ago; one now
    [0.0, 0.4055, 0.6931]
    """
    # subtract in float64 (scores are about d * ts, large), then exp/log1p in float32: 10x faster than
    # logaddexp; a log count never nears float32's exp limit (88), the clip only guards corrupt input
    x = np.subtract(trending, float(trending_increment(now_s, half_life_s)), dtype=np.float64).astype(np.float32)
    np.minimum(x, 80.0, out=x)
    np.exp(x, out=x)
    return np.log1p(x, out=x)


def _load_primed_prior(path: Path, n_items: int) -> tuple[np.ndarray, float] | None:
    """``item_prior.npz`` as ``(trending, now_s)``; None when the file is absent, ModelError when corrupt."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as arrays:
            trending, now = arrays["trending"].astype(np.float64), float(arrays["now"])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ModelError(f"{path}: corrupt artifact ({exc})") from None
    if trending.shape != (n_items,):
        raise ModelError(f"{path}: corrupt artifact, {trending.shape[0]} counts for {n_items} movies")
    return trending, now


_ENCODER_KEYS = ("w_in", "b_in", "w_mu", "b_mu", "w_logvar", "b_logvar")
_REQUIRED = (*_ENCODER_KEYS, "item_decoder", "item_bias", "movie_ids", "side_in", "side_dec", "side_bias")


def current_model_dir(models_dir: Path) -> Path:
    """The folder named by ``models_dir/CURRENT``; ModelError when no model was trained yet."""
    pointer = models_dir / "CURRENT"
    try:
        name = pointer.read_text().strip()
    except OSError:
        raise ModelError(f"no trained model in {models_dir}: run `reelstream train` first") from None
    path = models_dir / name
    if not path.is_dir():
        raise ModelError(f"{pointer} names {name!r}, which is not a folder")
    return path


@dataclass
class ModelRuntime:
    """Encoder weights, item decoder and id mappings; cheap to query, no torch."""

    weights: FoldInWeights
    item_decoder: np.ndarray  #: float32 [n_items, latent]
    item_bias: np.ndarray  #: float32 [n_items]
    movie_ids: np.ndarray  #: int64 [n_items]
    side_in: np.ndarray  #: float32 [n_side, hidden]
    side_dec: np.ndarray  #: float32 [n_side, latent]
    side_bias: np.ndarray  #: float32 [n_side]
    metadata: dict[str, Any] = field(default_factory=dict)
    #: ``(trending float64 [n_items], now_s)`` from ``item_prior.npz``: the prior's HISTORY counts, or None
    primed_prior: tuple[np.ndarray, float] | None = None
    #: the co-rating item-neighbour component (``sequence.npz``, :mod:`models.sequence`), or None
    sequence: CoRatedItems | None = None
    index_of: dict[int, int] = field(init=False)

    def __post_init__(self) -> None:
        self.index_of = {int(m): i for i, m in enumerate(self.movie_ids.tolist())}

    # --- identity -----------------------------------------------------------------------
    @property
    def version(self) -> str:
        return str(self.metadata.get("model_version", "unversioned"))

    @property
    def data_version(self) -> int | None:
        value = self.metadata.get("data_version")
        return int(value) if value is not None else None

    @property
    def n_items(self) -> int:
        return int(self.movie_ids.shape[0])

    def item_index(self, movie_id: int) -> int | None:
        """Dense index of a MovieLens id, or None for a movie the model has never seen."""
        return self.index_of.get(int(movie_id))

    # --- scoring ------------------------------------------------------------------------
    @property
    def item_prior(self) -> dict[str, float]:
        """``{"beta", "half_life_s"}`` of the streaming item prior (beta 0: none); see the module docstring."""
        prior = self.metadata.get("item_prior") or {}
        return {"beta": float(prior.get("beta", 0.0)), "half_life_s": float(prior.get("half_life_s", 7 * 86400.0))}

    @property
    def has_item_prior(self) -> bool:
        """True when the metadata names an item prior with a non-zero beta (the worker then keeps its zset)."""
        return bool(self.metadata.get("item_prior")) and self.item_prior["beta"] != 0.0

    def prior_logits(
        self, trending: np.ndarray, now_s: float, *, half_life_s: float | None = None, catalogue: bool = False
    ) -> np.ndarray:
        """float32 [n_items]: ``beta * log(1 + decayed count)`` from the trending scores (see the module docstring).

        ``half_life_s`` is the half-life the trending scores were kept with; ModelError when it is
        not the prior's (the scores would mean another count). ``catalogue=True`` accepts scores for a
        serving catalogue that extends the model's items (side-feature-only rows appended after them,
        gateway/catalog.py); the same formula applies to every row.
        """
        prior = self.item_prior
        if half_life_s is not None and not math.isclose(half_life_s, prior["half_life_s"], rel_tol=1e-9):
            raise ModelError(
                f"trending scores kept with a {half_life_s:g} s half-life, but model {self.version}'s item prior "
                f"uses {prior['half_life_s']:g} s: set trending_half_life_s to match"
            )
        if len(trending) != self.n_items and not (catalogue and len(trending) > self.n_items):
            raise ModelError(f"trending has {len(trending)} scores, the model {self.n_items} movies")
        out = decayed_log_counts(trending, now_s, prior["half_life_s"])
        out *= np.float32(prior["beta"])
        return out

    def scores(self, mu: np.ndarray, trending: np.ndarray | None = None, now_s: float | None = None) -> np.ndarray:
        """Logits over the whole catalogue for one latent vector (float32 [n_items]).

        ``trending`` (the trending zset's scores by item index, ``-inf`` where absent) and ``now_s`` add the
        streaming item prior; without them (or with beta 0) these are the plain decoder logits.
        """
        logits = self.item_decoder @ mu.astype(np.float32, copy=False) + self.item_bias
        if trending is not None and self.item_prior["beta"] != 0.0:
            if now_s is None:
                raise ModelError("scores(mu, trending): now_s is needed to decay the trending counts")
            logits += self.prior_logits(trending, now_s)
        return logits

    @property
    def sequence_params(self) -> dict[str, float]:
        """``{"gamma", "decay", "length"}`` of the co-rating component (gamma 0: none; ``metadata["sequence"]``)."""
        seq = self.metadata.get("sequence") or {}
        gamma = float(seq.get("gamma", 0.0)) if self.sequence is not None else 0.0
        return {"gamma": gamma, "decay": float(seq.get("decay", 0.0)), "length": int(seq.get("length", 0))}

    def sequence_logits(self, recent: list[int] | tuple[int, ...], n: int | None = None) -> np.ndarray | None:
        """float32 [n or n_items]: the co-rating term for the recent items (newest first); None without one."""
        p = self.sequence_params
        if self.sequence is None or p["gamma"] == 0.0 or not recent:
            return None
        return self.sequence.logits(list(recent)[: int(p["length"])], decay=p["decay"], gamma=p["gamma"], n=n)

    def sequence_touched(self, recent: list[int] | tuple[int, ...]) -> tuple[np.ndarray, np.ndarray] | None:
        """:meth:`sequence_logits`' nonzero entries (item indices, values); None without the component."""
        p = self.sequence_params
        if self.sequence is None or p["gamma"] == 0.0 or not recent:
            return None
        return self.sequence.touched(list(recent)[: int(p["length"])], decay=p["decay"], gamma=p["gamma"])

    def add_item(self, movie_id: int, side: np.ndarray) -> int:
        """Give a never-rated movie encoder and decoder rows from its side features; returns its index.

        ``side`` is a dense float32 vector over the model's side features. An
        already-known movie keeps its learned rows and its index.
        """
        known = self.item_index(movie_id)
        if known is not None:
            return known
        side = side.astype(np.float32, copy=False)
        w_row = side @ self.side_in
        d_row = side @ self.side_dec
        bias = float(side @ self.side_bias)
        w = self.weights
        self.weights = FoldInWeights(
            np.vstack([w.w_in, w_row[None, :]]), w.b_in, w.w_mu, w.b_mu, w.w_logvar, w.b_logvar
        )
        self.item_decoder = np.vstack([self.item_decoder, d_row[None, :]])
        self.item_bias = np.append(self.item_bias, np.float32(bias))
        self.movie_ids = np.append(self.movie_ids, np.int64(movie_id))
        index = self.n_items - 1
        self.index_of[int(movie_id)] = index
        return index

    # --- persistence --------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """Write ``runtime.npz`` and ``metadata.json`` into ``folder`` (no pickles)."""
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {k: getattr(self.weights, k) for k in _ENCODER_KEYS}
        arrays.update(
            item_decoder=self.item_decoder, item_bias=self.item_bias, movie_ids=self.movie_ids,
            side_in=self.side_in, side_dec=self.side_dec, side_bias=self.side_bias,
        )  # fmt: skip
        np.savez(folder / "runtime.npz", **arrays)
        if self.primed_prior is not None:
            np.savez(folder / "item_prior.npz", trending=self.primed_prior[0], now=np.float64(self.primed_prior[1]))
        if self.sequence is not None:
            self.sequence.save(folder / "sequence.npz")
        (folder / "metadata.json").write_text(json.dumps(self.metadata, indent=2, sort_keys=True))

    @classmethod
    def load(cls, folder: Path, *, expect_data_version: int | None = None, scoring: bool = True) -> ModelRuntime:
        """Load a model folder; ModelError names what is missing, corrupt or mismatched.

        ``scoring=False`` leaves out what only scoring reads, the co-rating component (70 MB at ML-32M
        shape): a process that only folds users in (the stream worker) does not hold it.
        """
        npz_path, meta_path = folder / "runtime.npz", folder / "metadata.json"
        try:
            metadata = json.loads(meta_path.read_text())
        except FileNotFoundError:
            raise ModelError(f"{meta_path}: missing; is {folder} a model folder?") from None
        except json.JSONDecodeError as exc:
            raise ModelError(f"{meta_path}: corrupt JSON ({exc})") from None
        try:
            with np.load(npz_path, allow_pickle=False) as data:
                missing = [k for k in _REQUIRED if k not in data.files]
                if missing:
                    raise ModelError(f"{npz_path}: corrupt artifact, missing arrays {missing}")
                arrays = {k: data[k] for k in _REQUIRED}
        except FileNotFoundError:
            raise ModelError(f"{npz_path}: missing") from None
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise ModelError(f"{npz_path}: corrupt artifact ({exc})") from None
        primed = _load_primed_prior(folder / "item_prior.npz", len(arrays["movie_ids"]))
        # copy=False: the arrays are already of these types; a copy doubled the load's peak memory (the
        # encoder alone is 90 MB at 87,585 movies x 256), which a worker's RSS budget counts
        runtime = cls(
            weights=FoldInWeights(*(arrays[k].astype(np.float32, copy=False) for k in _ENCODER_KEYS)),
            item_decoder=arrays["item_decoder"].astype(np.float32, copy=False),
            item_bias=arrays["item_bias"].astype(np.float32, copy=False),
            movie_ids=arrays["movie_ids"].astype(np.int64, copy=False),
            side_in=arrays["side_in"].astype(np.float32, copy=False),
            side_dec=arrays["side_dec"].astype(np.float32, copy=False),
            side_bias=arrays["side_bias"].astype(np.float32, copy=False),
            metadata=metadata,
            primed_prior=primed,
            sequence=CoRatedItems.load(folder / "sequence.npz", len(arrays["movie_ids"])) if scoring else None,
        )
        runtime._check_shapes(npz_path)
        if expect_data_version is not None and runtime.data_version != expect_data_version:
            raise ModelError(
                f"{folder}: model was trained on data version {runtime.data_version}, "
                f"but the feature store is at version {expect_data_version}; run `reelstream train`"
            )
        return runtime

    def _check_shapes(self, where: Path) -> None:
        w, n = self.weights, self.n_items
        problems = []
        if w.w_in.shape != (n, w.hidden):
            problems.append(f"w_in {w.w_in.shape} != ({n}, {w.hidden})")
        if self.item_decoder.shape != (n, w.latent):
            problems.append(f"item_decoder {self.item_decoder.shape} != ({n}, {w.latent})")
        if self.item_bias.shape != (n,):
            problems.append(f"item_bias {self.item_bias.shape} != ({n},)")
        if w.w_mu.shape != (w.hidden, w.latent) or w.w_logvar.shape != (w.hidden, w.latent):
            problems.append("encoder heads do not match hidden x latent")
        if self.side_in.shape[1:] != (w.hidden,) or self.side_dec.shape[1:] != (w.latent,):
            problems.append("side projections do not match hidden/latent")
        if problems:
            raise ModelError(f"{where}: corrupt artifact, " + "; ".join(problems))

    # --- test support -------------------------------------------------------------------
    @classmethod
    def random(
        cls, movie_ids: np.ndarray, *, hidden: int = 16, latent: int = 8, n_side: int = 4, seed: int = 0
    ) -> ModelRuntime:
        """A small random model over ``movie_ids`` (unit tests and demos without training).

        >>> rt = ModelRuntime.random(np.array([10, 20, 30]), seed=1)
        >>> rt.n_items, rt.item_index(20), rt.item_index(99)
        (3, 1, None)
        """
        rng = np.random.default_rng(seed)
        n = len(movie_ids)

        def f32(*shape: int) -> np.ndarray:
            return (rng.standard_normal(shape) * 0.3).astype(np.float32)

        return cls(
            weights=FoldInWeights(f32(n, hidden), f32(hidden), f32(hidden, latent), f32(latent),
                                  f32(hidden, latent), f32(latent)),
            item_decoder=f32(n, latent), item_bias=f32(n), movie_ids=np.asarray(movie_ids, dtype=np.int64),
            side_in=f32(n_side, hidden), side_dec=f32(n_side, latent), side_bias=f32(n_side),
            metadata={"model_version": f"random-{seed}", "data_version": None},
        )  # fmt: skip

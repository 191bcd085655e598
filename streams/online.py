"""The worker's online model: river's biased matrix factorisation, scored prequentially, with ADWIN on its error.

**Its job.** Nothing serves its predictions: the VAE ranks. It is the system's live check on how well the
ratings users give can be foreseen. Its prequential MAE/RMSE go to ``rs:online``, and an ADWIN alarm on its
absolute error asks for a challenger (``rs:challenger``, :mod:`streams.processor`), which
``reelstream retrain`` answers. Its predictions earn their cost: on the bundled data's STREAM, after
learning HISTORY in time order, BiasedMF's prequential MAE is 0.604 against 0.666 for the same walk's
shrunk user + item mean and 0.702 for the user mean (``docs/models.md``), so a drop in its accuracy says
more than a drift of the mean rating would.

**Checkpointed.** :meth:`OnlineRatingModel.save` writes the model, its optimisers' step counts and the ADWIN
window to one file (pickle: river's own format for its models; the file lives in the worker's own
``var/online/`` and is written only by it), atomically; :meth:`OnlineRatingModel.load` resumes from it, so a
restarted worker goes on learning where it stopped instead of from zero. River's per-user and per-movie
tables travel as a few arrays (:meth:`OnlineRatingModel.__getstate__`), not as one pickled object per key.
"""

from __future__ import annotations

import collections
import copy
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from river import drift, optim, reco

__all__ = ["OnlineRatingModel", "OnlineStep"]


@dataclass(frozen=True, slots=True)
class OnlineStep:
    """What one event did to the online model."""

    prediction: float
    abs_error: float
    drift: bool


class OnlineRatingModel:
    """Predict-then-learn rating model (prequential evaluation) with a drift detector on its absolute error.

    Parameters
    ----------
    n_factors
        Latent factors of :class:`river.reco.BiasedMF`.
    learning_rate
        SGD step size; the optimizer is built here, never shared.
    delta
        ADWIN confidence: smaller means fewer, surer drift alarms.
    seed
        Seeds the factor initialisation.

    Attributes
    ----------
    n, abs_sum, sq_sum, drifts
        Running prequential totals since this process started.

    Examples
    --------
    >>> m = OnlineRatingModel(seed=0)
    >>> step = m.learn_one(1, 10, 4.0)
    >>> (m.n, step.drift, round(step.prediction, 3))
    (1, False, 0.034)
    """

    def __init__(self, n_factors: int = 10, learning_rate: float = 0.02, delta: float = 0.002, seed: int = 0):
        self.n_factors = n_factors
        self.learning_rate = learning_rate
        self.delta = delta
        self.seed = seed
        self.model = reco.BiasedMF(
            n_factors=n_factors,
            bias_optimizer=copy.deepcopy(optim.SGD(learning_rate)),
            latent_optimizer=copy.deepcopy(optim.SGD(learning_rate)),
            l2_bias=0.0,
            l2_latent=0.0,
            seed=seed,
        )
        self.detector = drift.ADWIN(delta=delta)
        self.n = 0
        self.abs_sum = 0.0
        self.sq_sum = 0.0
        self.drifts = 0

    def __repr__(self) -> str:
        return (
            f"OnlineRatingModel(n_factors={self.n_factors}, learning_rate={self.learning_rate}, "
            f"delta={self.delta}, seed={self.seed})"
        )

    #: BiasedMF's per-key tables, pickled as arrays (:meth:`__getstate__`).
    _TABLES = ("u_biases", "i_biases", "u_latents", "i_latents")

    def __getstate__(self) -> dict[str, Any]:
        """The model with river's per-key tables as a few arrays: pickling ~260k small arrays one by one (ML-32M
        shape) held a memo of every object and added ~110 MB to the worker's peak RSS for each checkpoint."""
        state = self.__dict__.copy()
        model = state["model"] = copy.copy(self.model)  # shallow: the tables are replaced, the rest shared
        packed = {}
        for name in self._TABLES:
            table = getattr(self.model, name)
            keys = list(table)
            values = np.array([table[k] for k in keys], dtype=np.float64)
            packed[name] = (keys, values.reshape(len(keys), -1) if "latents" in name else values)
            setattr(model, name, collections.defaultdict(table.default_factory))
        state["_packed_tables"] = packed
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Rebuild the tables (a checkpoint written before they were packed loads as it was)."""
        packed = state.pop("_packed_tables", None)
        self.__dict__.update(state)
        for name, (keys, values) in (packed or {}).items():
            table = getattr(self.model, name)
            rows = values.tolist() if values.ndim == 1 else list(values)  # latents: one row view per key
            table.update(zip(keys, rows, strict=True))

    def save(self, path: Path) -> None:
        """Write this model to ``path`` atomically (a temporary file, then a rename): a crash mid-write
        leaves the previous checkpoint."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with tmp.open("wb") as f:
            pickle.dump(self, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> OnlineRatingModel:
        """The model saved at ``path``; ValueError naming the file when it is not one."""
        try:
            with path.open("rb") as f:
                model = pickle.load(f)
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError) as exc:
            raise ValueError(f"{path}: not an online model checkpoint ({type(exc).__name__}: {exc})") from None
        if not isinstance(model, cls):
            raise ValueError(f"{path}: holds a {type(model).__name__}, not an {cls.__name__}")
        return model

    def predict_one(self, user: int, item: int) -> float:
        return float(self.model.predict_one(user, item))

    def learn_one(self, user: int, item: int, rating: float) -> OnlineStep:
        """Score the event first (prequential), then learn from it.

        The step is river's ``BiasedMF.predict_one`` then ``learn_one``, written out on the model's own tables
        (:meth:`_learn_biased_mf`): the same arithmetic in the same order (``tests/test_stream_online.py`` checks
        every prediction and weight against river's own methods), at about half to two thirds of the cost
        (``bench/online_step.py``), because river's ``learn_one`` predicts a second time and builds four gradient
        dicts per event.
        """
        pred, err = self._learn_biased_mf(user, item, rating)
        self.detector.update(err)
        self.n += 1
        self.abs_sum += err
        self.sq_sum += err * err
        drifted = bool(self.detector.drift_detected)
        self.drifts += drifted
        return OnlineStep(pred, err, drifted)

    def _learn_biased_mf(self, user: int, item: int, y: float) -> tuple[float, float]:
        """``(prequential prediction, its absolute error)``, then river's ``BiasedMF.learn_one(user, item, y)``.

        Each table is touched in river's order (``defaultdict`` initialisers draw random latents on first use,
        so the order decides the values) and every optimizer counts its step, as ``Optimizer.step`` does.
        """
        m = self.model
        ub, ib, ul, il = m.u_biases, m.i_biases, m.u_latents, m.i_latents
        mean = m.global_mean
        bu, bi = ub[user], ib[item]
        vu, vi = ul[user], il[item]
        dot = float(np.dot(vu, vi))  # Python floats from here: the same IEEE sums as river's numpy scalars
        pred = float(((mean.get() + bu) + bi) + dot)
        err = abs(y - pred)
        mean.update(y)
        g = m.loss.gradient(y, float(((mean.get() + bu) + bi) + dot))
        g = max(min(g, m.clip_gradient), -m.clip_gradient)
        if m.l2_bias or m.l2_latent:
            g_bu, g_bi = g + m.l2_bias * bu, g + m.l2_bias * bi
            g_vu, g_vi = g * vi + m.l2_latent * vu, g * vu + m.l2_latent * vi
        else:  # adding 0 * w changes no finite weight: skipped (this model is built with no L2)
            g_bu = g_bi = g
            g_vu, g_vi = g * vi, g * vu
        for opt, table, key, grad in (
            (m.u_bias_optimizer, ub, user, g_bu),
            (m.i_bias_optimizer, ib, item, g_bi),
            (m.u_latent_optimizer, ul, user, g_vu),
            (m.i_latent_optimizer, il, item, g_vi),
        ):
            table[key] -= opt.learning_rate * grad
            opt.n_iterations += 1
        return pred, err

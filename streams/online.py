"""The worker's online model: river's biased matrix factorisation, scored prequentially, with ADWIN on its error."""

from __future__ import annotations

import copy
from dataclasses import dataclass

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

    def predict_one(self, user: int, item: int) -> float:
        return float(self.model.predict_one(user, item))

    def learn_one(self, user: int, item: int, rating: float) -> OnlineStep:
        """Score the event first (prequential), then learn from it."""
        pred = self.predict_one(user, item)
        err = abs(rating - pred)
        self.model.learn_one(user, item, rating)
        self.detector.update(err)
        self.n += 1
        self.abs_sum += err
        self.sq_sum += err * err
        drifted = bool(self.detector.drift_detected)
        self.drifts += drifted
        return OnlineStep(pred, err, drifted)

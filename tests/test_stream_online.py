"""The worker's online model: its written-out BiasedMF step is river's own, number for number."""

from __future__ import annotations

import numpy as np

from streams.online import OnlineRatingModel


def test_learn_one_gives_rivers_predictions_and_weights_exactly() -> None:
    rng = np.random.default_rng(7)
    fast, ref = OnlineRatingModel(seed=3), OnlineRatingModel(seed=3)
    for _ in range(3000):  # 40 users x 60 movies: every table entry is created, then re-learned many times
        user, item, y = int(rng.integers(40)), int(rng.integers(60)), float(rng.integers(1, 11)) / 2
        step = fast.learn_one(user, item, y)
        expected = ref.predict_one(user, item)  # river's path: predict, then BiasedMF.learn_one
        ref.model.learn_one(user, item, y)
        assert step.prediction == expected
        assert step.abs_error == abs(y - expected)
    a, b = fast.model, ref.model
    assert a.global_mean.get() == b.global_mean.get()
    assert dict(a.u_biases) == dict(b.u_biases) and dict(a.i_biases) == dict(b.i_biases)
    for mine, theirs in ((a.u_latents, b.u_latents), (a.i_latents, b.i_latents)):
        assert mine.keys() == theirs.keys()
        assert all(np.array_equal(mine[k], theirs[k]) for k in mine)
    assert a.u_latent_optimizer.n_iterations == b.u_latent_optimizer.n_iterations == 3000
    assert fast.predict_one(3, 5) == ref.predict_one(3, 5)


def test_a_checkpoint_resumes_the_model_and_its_drift_detector_exactly(tmp_path) -> None:
    import pytest

    rng = np.random.default_rng(4)
    events = [(int(rng.integers(30)), int(rng.integers(80)), float(rng.integers(1, 11)) / 2) for _ in range(1500)]
    events += [(int(rng.integers(45)), int(rng.integers(100)), float(rng.integers(1, 11)) / 2) for _ in range(1500)]
    straight, first = OnlineRatingModel(seed=2), OnlineRatingModel(seed=2)
    for e in events[:1500]:
        straight.learn_one(*e)
        first.learn_one(*e)
    path = tmp_path / "online" / "w1.pkl"
    first.save(path)
    resumed = OnlineRatingModel.load(path)  # a restarted worker
    assert (resumed.n, resumed.abs_sum, resumed.drifts) == (straight.n, straight.abs_sum, straight.drifts)
    for e in events[1500:]:  # users and movies first seen after the checkpoint too
        step = straight.learn_one(*e)
        assert resumed.learn_one(*e) == step  # predictions, errors and alarms alike
        assert first.learn_one(*e) == step  # saving left the saved model as it was
    assert resumed.detector.width == straight.detector.width
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"w1\.pkl: not an online model checkpoint"):
        OnlineRatingModel.load(path)

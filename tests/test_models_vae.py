"""The hybrid VAE: exact fold-in, item cold start, determinism, artifacts and bad inputs."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from models.artifacts import publish
from models.hybrid_vae import HybridVAE
from models.runtime import ModelRuntime, current_model_dir
from models.state import encode, rating_weight
from models.vae import SideFeatures
from reelstream.errors import ModelError
from tests.models_support import taste_data

TINY = dict(hidden=16, latent=8, max_epochs=40, lr=0.02, batch_size=16, val_fraction=0.0, members=2, seed=3)


@pytest.fixture(scope="module")
def data():
    return taste_data()


@pytest.fixture(scope="module")
def model(data) -> HybridVAE:
    return HybridVAE(**TINY).fit(data)


def _torch_encode(model: HybridVAE, data, ratings: dict[int, float]) -> tuple[np.ndarray, np.ndarray]:
    """Re-encode the whole rating vector with the torch module (the training-side code path)."""
    side = SideFeatures(data.item_side, torch.device("cpu"))
    items = torch.tensor(list(ratings), dtype=torch.int64)
    weights = torch.tensor([rating_weight(r) for r in ratings.values()], dtype=torch.float32)
    mus, logvars = [], []
    with torch.no_grad():
        for module in model.modules_:  # an ensemble serves its members' latents side by side
            w_in, _, _ = module.effective(side)
            mu, logvar = module.encode(w_in, items, torch.tensor([0]), weights)
            mus.append(mu[0].numpy()), logvars.append(logvar[0].numpy())
    return np.concatenate(mus), np.concatenate(logvars)


def test_fold_in_equals_re_encoding_including_re_ratings(model: HybridVAE, data) -> None:
    rng = np.random.default_rng(0)
    state, ratings = model.new_state(), {}
    for step in range(300):
        item = int(rng.integers(0, data.n_items))
        rating = float(rng.choice([0.5, 2.0, 3.0, 3.5, 4.0, 5.0]))
        state = model.learn_one(state, item, rating, ratings.get(item))
        ratings[item] = rating
        if step % 25 == 0 or step == 299:
            mu, logvar = encode(model.runtime_.weights, state)
            mu_ref, logvar_ref = _torch_encode(model, data, ratings)
            np.testing.assert_allclose(mu, mu_ref, atol=1e-5)
            np.testing.assert_allclose(logvar, logvar_ref, atol=1e-5)
    assert state.n_events == len(ratings)


def test_fold_in_same_rating_twice_is_idempotent(model: HybridVAE) -> None:
    once = model.learn_one(model.new_state(), 3, 5.0)
    twice = model.learn_one(once, 3, 5.0, previous_rating=5.0)
    np.testing.assert_array_equal(once.pre, twice.pre)
    assert once.norm2 == twice.norm2


def test_cold_movie_scores_follow_its_content(model: HybridVAE, data) -> None:
    anim_movie, horror_movie = data.n_items - 2, data.n_items - 1  # never rated by anyone
    assert not data.known_items()[anim_movie] and not data.known_items()[horror_movie]
    anim_lover = horror_lover = model.new_state()
    for i in range(3):  # a user cold start: three ratings each
        anim_lover = model.learn_one(anim_lover, i, 5.0)
        horror_lover = model.learn_one(horror_lover, 9 + i, 5.0)
    a, h = model.score_one(anim_lover), model.score_one(horror_lover)
    assert a[anim_movie] != 0.0 and h[horror_movie] != 0.0
    assert a[anim_movie] > h[anim_movie]
    assert h[horror_movie] > a[horror_movie]
    assert a[anim_movie] - a[horror_movie] > 0 > h[anim_movie] - h[horror_movie]


def test_add_item_gives_a_new_movie_the_rows_of_its_content(model: HybridVAE, data) -> None:
    runtime = copy.deepcopy(model.runtime_)
    anim_movie = data.n_items - 2  # never rated: its rows come from its content alone
    idx = runtime.add_item(999_999, data.item_side[anim_movie].toarray().ravel())
    assert idx == data.n_items and runtime.item_index(999_999) == idx
    np.testing.assert_allclose(runtime.item_decoder[idx], runtime.item_decoder[anim_movie], atol=1e-6)
    np.testing.assert_allclose(runtime.weights.w_in[idx], runtime.weights.w_in[anim_movie], atol=1e-6)
    assert runtime.item_bias[idx] == pytest.approx(runtime.item_bias[anim_movie], abs=1e-6)


def test_same_seed_same_weights_other_seed_other_weights(data) -> None:
    params = dict(TINY, max_epochs=3)
    a = HybridVAE(**params).fit(data).modules_[1].state_dict()
    b = HybridVAE(**params).fit(data).modules_[1].state_dict()
    c = HybridVAE(**dict(params, seed=4)).fit(data).modules_[1].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_latent_variance_is_exposed_per_user(model: HybridVAE) -> None:
    cold = model.new_state()
    warm = model.learn_one(model.learn_one(cold, 0, 5.0), 1, 5.0)
    _, logvar_cold = encode(model.runtime_.weights, cold)
    _, logvar_warm = encode(model.runtime_.weights, warm)
    assert logvar_cold.shape == logvar_warm.shape == (TINY["latent"] * TINY["members"],)
    assert np.isfinite(logvar_warm).all() and not np.array_equal(logvar_cold, logvar_warm)


# --- artifacts ----------------------------------------------------------------------------


def _publish(model: HybridVAE, models_dir: Path, data_version: int | None) -> Path:
    def write(folder: Path, name: str) -> None:
        model.runtime_.metadata.update(model_version=name, data_version=data_version)
        model.save(folder)

    return publish(models_dir, write)


def test_artifact_round_trip_gives_the_same_scores(model: HybridVAE, data, tmp_path: Path) -> None:
    folder = _publish(model, tmp_path / "models", data.version)
    assert folder.name == "m0001" and current_model_dir(tmp_path / "models") == folder
    assert {p.name for p in folder.iterdir()} == {"metadata.json", "runtime.npz", "weights.safetensors",
                                                  "item_prior.npz", "sequence.npz"}  # fmt: skip
    runtime = ModelRuntime.load(folder, expect_data_version=data.version)
    state = model.learn_one(model.learn_one(model.new_state(), 1, 5.0), 4, 3.0)
    mu, _ = encode(runtime.weights, state)
    seq = runtime.sequence_logits(state.recent)
    assert seq is not None and state.recent == (4, 1)  # the co-rating term travels with the folder
    np.testing.assert_allclose(runtime.scores(mu, model.trending_, model.now_) + seq, model.score_one(state),
                               atol=1e-6)  # fmt: skip
    loaded = HybridVAE.load(folder, with_torch=True)
    np.testing.assert_allclose(loaded.score_one(state), model.score_one(state), atol=1e-6)
    assert loaded._get_params() == model._get_params()
    assert len(loaded.modules_) == len(model.modules_) == TINY["members"]
    for mine, theirs in zip(model.modules_, loaded.modules_, strict=True):
        assert all(torch.equal(v, theirs.state_dict()[k]) for k, v in mine.state_dict().items())
    assert _publish(model, tmp_path / "models", data.version).name == "m0002"
    assert (tmp_path / "models" / "CURRENT").read_text().strip() == "m0002"


def test_model_from_another_data_version_is_refused(model: HybridVAE, data, tmp_path: Path) -> None:
    folder = _publish(model, tmp_path / "models", data.version)
    with pytest.raises(ModelError, match=r"data version 7.*store is at version 8.*reelstream train"):
        ModelRuntime.load(folder, expect_data_version=8)


@pytest.mark.parametrize("victim", ["runtime.npz", "weights.safetensors", "metadata.json"])
def test_corrupt_artifact_gives_a_clear_error(model: HybridVAE, data, tmp_path: Path, victim: str) -> None:
    folder = _publish(model, tmp_path / "models", data.version)
    (folder / victim).write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelError, match=victim.replace(".", r"\.")):
        HybridVAE.load(folder, with_torch=True)


def test_failed_publish_leaves_no_folder_and_keeps_current(model: HybridVAE, tmp_path: Path) -> None:
    models_dir = tmp_path / "models"
    _publish(model, models_dir, 7)

    def broken(folder: Path, name: str) -> None:
        (folder / "half-written").write_text("x")
        raise OSError("disk full")

    with pytest.raises(OSError):
        publish(models_dir, broken)
    assert sorted(p.name for p in models_dir.iterdir()) == ["CURRENT", "m0001"]
    assert current_model_dir(models_dir).name == "m0001"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: --device cuda is valid here (bench/train.py)")
def test_cuda_device_without_gpu_is_a_model_error(data) -> None:
    with pytest.raises(ModelError, match="no CUDA device"):
        HybridVAE(**dict(TINY, device="cuda")).fit(data)

"""Continual training (models/continual.py, ``reelstream retrain``): only a better challenger is promoted.

The judge walks the held-out window prequentially with both models; the oracle is what each model is:
a trained model against an untrained (random) one, an equal model, a margin larger than the advantage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from bootstrap.store import load_store
from models.continual import judge, with_events
from models.hybrid_vae import HybridVAE
from models.runtime import ModelRuntime
from models.state import encode, refold
from reelstream.settings import Settings
from reelstream.shell.commands.retrain import retrain_once
from schemas import redis_keys as keys
from schemas.challenger import decode_challenger
from schemas.user_record import decode_rated, decode_user
from schemas.wire import codec_for
from streams.archive import ArchivedRecord, write_segment
from streams.events import rating_event, user_key
from streams.processor import Message
from streams.store import RedisFeatureTables
from streams.swap import model_pointer
from tests.live_system import install_var
from tests.models_support import taste_data
from tests.swap_support import processor


def tiny_vae(data: Any) -> ModelRuntime:
    return HybridVAE(hidden=16, latent=8, max_epochs=10, val_fraction=0.0, lr=0.02, seed=1, prior_beta=0.0).fit(
        data).runtime_  # fmt: skip


@pytest.fixture(scope="module")
def windowed() -> Any:
    d = taste_data(n_users=120, n_items=90)
    cols = [np.concatenate([getattr(d.history, k), getattr(d.stream, k)]) for k in ("user", "item", "rating", "ts")]
    return with_events(d, cols[0], d.movie_ids[cols[1]], cols[2], cols[3], window=0.2)


def test_the_window_is_the_latest_events_and_the_challenger_trains_before_it(windowed: Any) -> None:
    h, s = windowed.history, windowed.stream
    assert len(s) == pytest.approx(0.2 * (len(h) + len(s)), abs=2)
    assert h.ts.max() < s.ts.min()
    seen: list[int] = []
    judge(ModelRuntime.random(windowed.movie_ids), lambda d: seen.append(len(d.history)) or tiny_vae(d), windowed)
    assert seen == [len(h)]


def test_a_better_challenger_is_promoted_and_a_worse_or_equal_one_is_not(windowed: Any) -> None:
    untrained = ModelRuntime.random(windowed.movie_ids, hidden=16, latent=8, seed=3)
    better, trained = judge(untrained, tiny_vae, windowed)
    assert better.challenger_hr > better.champion_hr and better.promote
    worse, _ = judge(trained, lambda d: ModelRuntime.random(d.movie_ids, hidden=16, latent=8, seed=4), windowed)
    assert worse.challenger_hr < worse.champion_hr and not worse.promote
    equal, _ = judge(trained, lambda d: trained, windowed)
    assert equal.challenger_hr == equal.champion_hr and not equal.promote  # a tie keeps the champion
    gap = better.challenger_hr - better.champion_hr
    assert not judge(untrained, lambda d: trained, windowed, margin=gap + 0.01)[0].promote


class Fixed:
    """A 'learner' that returns a given runtime (retrain's fit seam)."""

    def __init__(self, runtime: ModelRuntime) -> None:
        self.runtime_ = runtime

    def save(self, folder: Path) -> None:
        self.runtime_.save(folder)


def _archive(settings: Settings, rows: list[tuple[int, int, float, int]]) -> None:
    """The archive holding ``rows`` as replayed, one copy of the first again, and one record that does not decode."""
    codec = codec_for("RatingEvent")
    values = [(user_key(u), codec.encode(rating_event(u, m, r, ts * 1000, "replay"))) for u, m, r, ts in rows]
    values += [values[0], (b"1", b"not avro")]
    records = [ArchivedRecord(i, 0, k, v) for i, (k, v) in enumerate(values)]
    write_segment(settings.archive_dir, settings.topic_ratings, 0, 0, records)


def test_retrain_keeps_an_equal_challenger_and_promotes_a_better_one_with_a_hot_swap(
    live_settings: Settings, built_var: Path
) -> None:
    champion = install_var(live_settings, built_var)
    store = load_store(live_settings.store_dir)
    rows = list(store.stream.select("user_id", "movie_id", "rating", "ts").head(3000).iter_rows())
    _archive(live_settings, rows)
    client = redis.Redis.from_url(live_settings.redis_url)
    codec = codec_for("RatingEvent")
    msgs = [Message(live_settings.topic_ratings, 0, i, codec.encode(rating_event(u, m, r, ts * 1000, "replay")),
                    key=user_key(u)) for i, (u, m, r, ts) in enumerate(rows[:300])]  # fmt: skip
    processor(champion, RedisFeatureTables(client), topic=live_settings.topic_ratings).run(msgs)
    users = sorted({u for u, *_ in rows[:300]})

    client.hset(keys.CHALLENGER, mapping={"requested": 2, "reason": "drift"})  # two alarms ask for a challenger
    kept = retrain_once(live_settings, client, window=0.05, fit=lambda params, data: Fixed(champion))
    assert not kept.verdict.promote and kept.published is None
    asked = decode_challenger(client.hgetall(keys.CHALLENGER))
    assert (asked.answered, asked.pending) == (2, 0)
    assert asked.answer.startswith(f"kept {kept.verdict.champion}: challenger HR@20")
    client.hincrby(keys.CHALLENGER, "requested", 1)  # an alarm after that round: pending again
    assert kept.archived == 3000 and kept.data_events == store.history.height + 3000
    assert (live_settings.models_dir / "CURRENT").read_text().strip() == "m0001"
    assert not (live_settings.models_dir / "m0002").exists() and model_pointer(client) == {}

    params_seen: list[dict] = []

    def fit(params: dict, data: Any) -> HybridVAE:
        params_seen.append(params)
        return HybridVAE(**params).fit(data)

    promoted = retrain_once(live_settings, client, window=0.05, fit=fit,
                            overrides={"hidden": 16, "latent": 8, "max_epochs": 3})  # fmt: skip
    v = promoted.verdict
    assert v.promote and v.challenger_hr > v.champion_hr and promoted.published == "m0002"
    asked = decode_challenger(client.hgetall(keys.CHALLENGER))
    assert (asked.answered, asked.pending) == (3, 0) and asked.answer.startswith("promoted m0002")
    # the champion's item prior half-life is kept (the swap needs it), the overrides applied
    assert params_seen[0]["prior_half_life_days"] == champion.item_prior["half_life_s"] / 86400.0
    assert params_seen[0]["hidden"] == 16 and len(params_seen) == 2  # judged, then trained on everything
    new = ModelRuntime.load(live_settings.models_dir / "m0002")
    assert new.metadata["retrain"]["promoted"] and new.metadata["trained_events"] == kept.data_events
    assert (live_settings.models_dir / "CURRENT").read_text().strip() == "m0002"
    assert model_pointer(client)["swap"] == "done" and promoted.swap.users == len(users)
    for uid in users[:20]:
        rec = decode_user(client.hgetall(keys.user(uid)))
        rated = decode_rated(client.hgetall(keys.user_rated(uid)))
        state = refold(new.weights, [(new.index_of[m], r) for m, r in sorted(rated.items())])
        assert rec.model_version == "m0002" and np.allclose(rec.mu, encode(new.weights, state)[0], atol=1e-5)
    client.close()


def test_up_schedules_retrain_only_when_asked(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from reelstream.shell import live_system, local_services

    assert "retrain" not in live_system.child_specs(settings, live_system.SystemPlan())
    spawned: list[list[str]] = []
    monkeypatch.setattr(local_services, "spawn", lambda run_dir, name, argv, env: spawned.append(argv) or 4242)
    spec = live_system.child_specs(settings, live_system.SystemPlan(retrain_every_hours=6))["retrain"]
    assert spec.start() == 4242 and spec.restart_on_success  # a scheduler that exits is restarted
    assert spawned[0][-3:] == ["retrain", "--every-hours", "6"]


def test_retrain_prints_the_verdict_table(live_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from models.continual import Verdict
    from reelstream.shell.cli import app
    from reelstream.shell.commands import retrain as cmd

    verdict = Verdict("m0001", "unversioned", 0.25, 0.2, 0.1, 0.08, 1234, 0.0)
    monkeypatch.setattr(cmd, "retrain_once", lambda *a, **kw: cmd.RetrainResult(verdict, 5000, 1000))
    result = CliRunner().invoke(app, ["retrain", "--window", "0.2"])
    assert result.exit_code == 0, result.output
    assert "0.2500" in result.output and "0.2000" in result.output and "window 20% = 1,234" in result.output
    assert "kept m0001" in result.output

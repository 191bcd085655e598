"""``reelstream train`` and ``reelstream evaluate`` end to end on a tiny MovieLens folder."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from reelstream.settings import Settings
from reelstream.shell.cli import app
from tests.models_support import GENRES, taste_data


def write_movielens(folder: Path) -> None:
    data = taste_data()
    folder.mkdir(parents=True)
    events = [data.history, data.stream]
    pl.DataFrame({
        "userId": [int(u) + 1 for ev in events for u in ev.user],
        "movieId": [int(data.movie_ids[i]) for ev in events for i in ev.item],
        "rating": [float(r) for ev in events for r in ev.rating],
        "timestamp": [int(t) for ev in events for t in ev.ts],
    }).write_csv(folder / "ratings.csv")  # fmt: skip
    genres = [GENRES[int(data.item_side[i].indices[0])] for i in range(data.n_items)]
    pl.DataFrame({
        "movieId": data.movie_ids.tolist(),
        "title": [f"Movie {m} (199{m % 10})" for m in data.movie_ids.tolist()],
        "genres": genres,
    }).write_csv(folder / "movies.csv")  # fmt: skip


def test_train_then_evaluate(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "ml-tiny"
    write_movielens(folder)
    runner = CliRunner()
    trained = runner.invoke(app, ["train", "--data", str(folder), "--max-epochs", "3", "--hidden", "16",
                                  "--latent", "8", "--no-tune"])  # fmt: skip
    assert trained.exit_code == 0, trained.output
    assert "model m0001 written" in trained.output
    meta = json.loads((settings.models_dir / "m0001" / "metadata.json").read_text())
    assert meta["model_version"] == "m0001" and meta["epochs"] == 3
    assert "prequential_overall_hr_at_20" in meta["metrics"] and meta["side_names"][0] == "genre=Animation"
    assert (settings.models_dir / "CURRENT").read_text().strip() == "m0001"

    evaluated = runner.invoke(app, ["evaluate", "--data", str(folder)])
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads((settings.reports_dir / "evaluation.json").read_text())
    flavours = {(r["model"].split(" ")[0], r["flavour"]) for r in report["prequential"]}
    assert ("popularity", "static") in flavours and ("hybrid", "streaming") in flavours
    assert all(r["groups"]["overall"]["events"] == report["prequential"][0]["groups"]["overall"]["events"]
               for r in report["prequential"])  # fmt: skip


def test_evaluate_without_a_model_says_to_train(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "ml-tiny"
    write_movielens(folder)
    result = CliRunner().invoke(app, ["evaluate", "--data", str(folder)])
    assert result.exit_code != 0
    assert "reelstream train" in str(result.exception)


def test_train_configures_itself_and_records_the_choice(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "ml-tiny"
    write_movielens(folder)
    trained = CliRunner().invoke(app, ["train", "--data", str(folder), "--max-epochs", "3", "--hidden", "16",
                                       "--latent", "8", "--no-evaluate"])  # fmt: skip
    assert trained.exit_code == 0, trained.output
    assert "validation walk" in trained.output
    meta = json.loads((settings.models_dir / "m0001" / "metadata.json").read_text())
    config = meta["self_configuration"]
    chosen = config["chosen"]
    assert set(chosen) == {"prior_beta", "prior_half_life_days", "seq_gamma", "seq_decay", "seq_length", "seq_window"}
    assert all(meta["params"][k] == v for k, v in chosen.items())  # the final fit used the choice
    assert meta["item_prior"]["beta"] == chosen["prior_beta"]
    assert meta["item_prior"]["half_life_s"] == chosen["prior_half_life_days"] * 86400.0
    assert meta["sequence"]["gamma"] == chosen["seq_gamma"] and meta["sequence"]["window"] == chosen["seq_window"]
    assert set(config["interior"]) == set(chosen) and config["trials"]
    best = max(t["groups"]["overall"]["hr"] for t in config["trials"])
    assert config["hr"] == best  # the choice is the best setting it scored

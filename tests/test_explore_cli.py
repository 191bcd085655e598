"""``reelstream explore-eval`` end to end on a tiny MovieLens folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reelstream.errors import ConfigError
from reelstream.settings import Settings
from reelstream.shell.cli import app
from tests.test_models_cli import write_movielens


def test_explore_eval_compares_exploit_with_each_arm(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "ml-tiny"
    write_movielens(folder)
    runner = CliRunner()
    trained = runner.invoke(app, ["train", "--data", str(folder), "--max-epochs", "5", "--hidden", "16",
                                  "--latent", "8"])  # fmt: skip
    assert trained.exit_code == 0, trained.output
    args = ["explore-eval", "--data", str(folder), "--arm", "thompson:2", "--arm", "ucb:1", "--arm", "thompson:0"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "exploration arms" in result.output
    report = json.loads((settings.reports_dir / "exploration.json").read_text())
    rows = {r["arm"]: r for r in report["arms"]}
    assert list(rows) == ["exploit", "thompson x2", "ucb x1", "thompson x0"]
    assert report["model_version"] == "m0001" and report["seed"] == 0
    # the exploit row is the model `train` evaluated (in memory, before saving) on the same walk
    meta = json.loads((settings.models_dir / "m0001" / "metadata.json").read_text())
    assert rows["exploit"]["hr"] == pytest.approx(meta["metrics"]["prequential_overall_hr_at_20"])
    assert rows["exploit"]["ndcg"] == pytest.approx(meta["metrics"]["prequential_overall_ndcg_at_20"])
    assert len({r["events"] for r in rows.values()}) == 1 and rows["exploit"]["events"] > 0
    # scale 0 ranks by the mean: the exploit figures exactly
    assert {k: v for k, v in rows["thompson x0"].items() if k not in ("arm", "kind", "seconds")} == {
        k: v for k, v in rows["exploit"].items() if k not in ("arm", "kind", "seconds")
    }
    # a wide draw ranks otherwise (30 movies: every arm's lists cover the catalogue, so compare the ranks' figures)
    figures = ("hr", "ndcg", "mrr", "novelty", "diversity")
    assert [rows["thompson x2"][f] for f in figures] != [rows["exploit"][f] for f in figures]
    # the same seed reproduces the report's figures
    again = runner.invoke(app, [*args, "--output", str(tmp_path / "again.json")])
    assert again.exit_code == 0, again.output
    rerun = json.loads((tmp_path / "again.json").read_text())["arms"]
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in report["arms"]]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in rerun] == strip


@pytest.mark.parametrize(
    ("spec", "message"),
    [("greedy:1", "KIND one of"), ("thompson", "KIND one of"), ("ucb:x", "not a number"), ("ucb:11", "from 0 to 10")],
)
def test_a_bad_arm_is_refused_before_anything_loads(settings: Settings, spec: str, message: str) -> None:
    result = CliRunner().invoke(app, ["explore-eval", "--arm", spec])  # no store, no model: the spec fails first
    assert isinstance(result.exception, ConfigError) and message in str(result.exception)

"""The ``reelstream`` command line: one entry point, one sub-command per job.

Every :class:`~reelstream.errors.ReelstreamError` becomes a one-line message on
stderr and exit code 2; nothing is printed as a traceback for bad input.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from reelstream.errors import ReelstreamError
from reelstream.shell.commands import archive as archive_cmd
from reelstream.shell.commands import bootstrap as bootstrap_cmd
from reelstream.shell.commands import evaluate as evaluate_cmd
from reelstream.shell.commands import experiments as experiments_cmd
from reelstream.shell.commands import explore as explore_cmd
from reelstream.shell.commands import gateway as gateway_cmd
from reelstream.shell.commands import infra
from reelstream.shell.commands import lag as lag_cmd
from reelstream.shell.commands import movie as movie_cmd
from reelstream.shell.commands import rate as rate_cmd
from reelstream.shell.commands import replay as replay_cmd
from reelstream.shell.commands import retrain as retrain_cmd
from reelstream.shell.commands import seed as seed_cmd
from reelstream.shell.commands import synth as synth_cmd
from reelstream.shell.commands import system as system_cmd
from reelstream.shell.commands import topics as topics_cmd
from reelstream.shell.commands import train as train_cmd
from reelstream.shell.commands import walk as walk_cmd
from reelstream.shell.commands import worker as worker_cmd

app = typer.Typer(
    name="reelstream",
    help="Event-driven streaming movie recommender: MovieLens -> Kafka -> Faust -> Redis -> FastAPI.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(infra.app, name="infra")

# One line per command; each function is named as its command. A command lives in the module of its job:
# ``commands/X.py`` for most, but ``rebuild`` with ``archive``, ``swap`` with ``retrain``, ``explore-eval`` in
# ``explore.py``, and the lifecycle commands (last) in ``system.py``; ``infra`` above is a group.
# The jobs are in alphabetical order.
app.command("archive")(archive_cmd.archive)
app.command("bootstrap")(bootstrap_cmd.bootstrap)
app.command("evaluate")(evaluate_cmd.evaluate)
app.command("experiments")(experiments_cmd.experiments)
app.command("explore-eval")(explore_cmd.explore_eval)
app.command("gateway")(gateway_cmd.gateway)
app.command("lag")(lag_cmd.lag)
app.add_typer(movie_cmd.app, name="movie")
app.command("rate")(rate_cmd.rate)
app.command("rebuild")(archive_cmd.rebuild)
app.command("replay")(replay_cmd.replay)
app.command("retrain")(retrain_cmd.retrain)
app.command("seed")(seed_cmd.seed)
app.command("swap")(retrain_cmd.swap)
app.command("synth")(synth_cmd.synth)
app.add_typer(topics_cmd.app, name="topics")
app.command("train")(train_cmd.train)
app.command("walk")(walk_cmd.walk)
app.command("worker")(worker_cmd.worker)
app.command("up")(system_cmd.up)
app.command("prepare")(system_cmd.prepare)
app.command("down")(system_cmd.down)


def main() -> None:
    """Console-script entry point: maps our errors to a clean message and exit code 2."""
    try:
        app()
    except ReelstreamError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()

"""The `supportflow` root command: one Typer app, each group and command from its own module.

Commands only parse their arguments and call the code that does the work (services, devstack,
evaluation, ml); they print its outcome and turn its errors into exit codes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pipelines.cli import (
    analytics,
    email,
    evaluation,
    kb,
    llm,
    nlu,
    profiles,
    services,
    stack,
    store,
    topology,
    workspace,
)
from pipelines.cli._common import cli_state

app = typer.Typer(
    help=(
        "supportflow: an AI customer-support agent as a streaming dataflow on Kafka.\n\n"
        "`supportflow run` starts everything on this machine (embedded broker, workers, HTTP ingress); "
        "set KAFKA_BOOTSTRAP_SERVERS to use a real cluster instead."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(
    config: Annotated[
        Optional[Path], typer.Option("--config", "-c", help="YAML file of settings (see `config show`).")
    ] = None,
) -> None:
    cli_state["config"] = config


# Top-level commands, in the order `--help` lists them.
app.command()(stack.run)
app.command()(stack.status)
app.command()(services.worker)
app.command()(services.ingress)
app.command()(stack.chat)
app.command()(stack.demo)
app.command()(evaluation.bench)
app.command()(services.sink)
app.command()(services.senders)
app.command()(store.outbox)
app.command()(store.deliveries)
app.command()(store.replay)
app.command()(store.seed)

# Command groups.
app.add_typer(evaluation.eval_app, name="eval")
app.add_typer(topology.topology_app, name="topology")
app.add_typer(topology.schemas_app, name="schemas")
app.add_typer(topology.config_app, name="config")
app.add_typer(profiles.profiles_app, name="profiles")
app.add_typer(store.db_app, name="db")
app.add_typer(analytics.analytics_app, name="analytics")
app.add_typer(store.feedback_app, name="feedback")
app.add_typer(email.email_app, name="email")
app.add_typer(nlu.nlu_app, name="nlu")
app.add_typer(workspace.workspace_app, name="workspace")
app.add_typer(kb.kb_app, name="kb")
app.add_typer(llm.llm_app, name="llm")


def entrypoint() -> None:
    app(prog_name="supportflow")

"""`supportflow workspace`: the human agents' page and the escalation router."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipelines.cli._common import (
    cluster_settings,
    err,
    print_demo_agents,
    refuse_open_doors,
)

workspace_app = typer.Typer(
    help=(
        "The agent workspace: a web page where human agents sign in, take escalated conversations from a live "
        "queue, reply, approve or reject prepared actions, transfer and resolve.\n\n"
        "Without a subcommand it serves the page and runs the escalation router (needs KAFKA_BOOTSTRAP_SERVERS; "
        "`supportflow run` starts it for you). Agents come from settings.workspace_agents_file (YAML: agent_id, "
        "display_name, role agent|supervisor, skills, languages, capacity, queues, password_hash); unset, a demo "
        "team with random passwords is written to the data dir on first start and the passwords are printed once."
    ),
    invoke_without_command=True,
)


@workspace_app.callback()
def workspace(
    ctx: typer.Context,
    port: Annotated[
        Optional[int], typer.Option(help="HTTP port (default: settings.workspace_port; 0 picks a free one).")
    ] = None,
    ready_file: Annotated[Optional[Path], typer.Option(help="Written once the page and the router serve.")] = None,
) -> None:
    """Serve the workspace page (http://<workspace_host>:<workspace_port>/workspace) and run the router."""
    if ctx.invoked_subcommand is not None:
        return
    from pipelines.services.workspace import agents_file_for, serve_workspace

    s = cluster_settings("workspace")
    refuse_open_doors(s, workspace=True)
    path, passwords = agents_file_for(s)
    if passwords:
        print_demo_agents(path, passwords)
    serve_workspace(s, ready_file, port)


@workspace_app.command("hash-password")
def workspace_hash_password(
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input instead of a prompt.")
    ] = False,
) -> None:
    """Print the scrypt hash of a password, for an agent's `password_hash` in the agents file."""
    from pipelines.handover.auth import hash_password

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    if len(password) < 8:
        err.print("[red]a password needs at least 8 characters[/red]")
        raise typer.Exit(2)
    print(hash_password(password))

"""`supportflow profiles`: customer profiles onto sf.profiles."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from pipelines.cli._common import (
    broker_settings,
    console,
    err,
)

profiles_app = typer.Typer(help="Customer profiles, published to sf.profiles.", no_args_is_help=True)


@profiles_app.command("import")
def profiles_import(
    file: Annotated[Path, typer.Argument(help="JSON Lines: one CustomerProfile per line (see `schemas export`).")],
) -> None:
    """Validate a file of profiles, then publish them to sf.profiles (the latest per customer wins)."""
    from rich.progress import Progress

    from pipelines.runtime.topology import load_topology
    from pipelines.services.profiles import publish_profiles, read_profiles
    from schemas import CustomerProfile

    if not file.is_file():
        err.print(f"[red]{file} does not exist[/red]")
        raise typer.Exit(2)
    profiles, problems = read_profiles(file)
    if problems:
        for problem in problems[:20]:
            err.print(f"[red]{file}:{problem.line}[/red] {escape(problem.message)}")
        err.print(f"{len(problems)} invalid profile(s); nothing was published")
        raise typer.Exit(1)
    s = broker_settings("profiles import")
    topic = load_topology(s.topology_file).topic_for(CustomerProfile)
    if topic is None:
        err.print("[red]the topology has no topic carrying CustomerProfile records[/red]")
        raise typer.Exit(2)
    with Progress(console=err) as progress:
        task = progress.add_task(f"publishing to {topic}", total=len(profiles))
        count = publish_profiles(
            s.kafka_client_config(),
            topic,
            profiles,
            s.exact_offsets,
            on_published=lambda n: progress.advance(task, n),
        )
    console.print(f"published {count} profile(s) to {topic}")

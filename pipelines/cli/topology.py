"""`supportflow topology`, `schemas` and `config`: what the dataflow is made of."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipelines.cli._common import (
    console,
    err,
    settings,
)

topology_app = typer.Typer(help="Validate and draw topology.yaml.", no_args_is_help=True)


schemas_app = typer.Typer(help="The record schemas that flow between operators.", no_args_is_help=True)


config_app = typer.Typer(help="The effective configuration.", no_args_is_help=True)


@topology_app.command("check")
def topology_check(
    file: Annotated[Optional[Path], typer.Argument(help="Topology file (default: settings.topology_file).")] = None,
) -> None:
    """Validate a topology: operators, record types between them, topics, tables, cycles."""
    from pipelines.runtime.topology import TopologyInvalid, load_topology

    path = file or settings().topology_file
    try:
        topology = load_topology(path)
    except TopologyInvalid as exc:
        for issue in exc.issues:
            err.print(str(issue), markup=False, highlight=False)
        raise typer.Exit(1) from None
    operators = sum(len(stage.root.walk()) for stage in topology.stages.values())
    console.print(
        f"{path}: ok — {len(topology.stages)} stages, {operators} operators, {len(topology.spec.topics)} topics"
    )


@topology_app.command("show")
def topology_show(
    file: Annotated[Optional[Path], typer.Argument(help="Topology file (default: settings.topology_file).")] = None,
    mermaid: Annotated[bool, typer.Option("--mermaid", help="Print a Mermaid flowchart instead of text.")] = False,
) -> None:
    """Print the dataflow graph."""
    from pipelines.runtime.topology import TopologyInvalid, load_topology, render_mermaid, render_text

    try:
        topology = load_topology(file or settings().topology_file)
    except TopologyInvalid as exc:
        for issue in exc.issues:
            err.print(str(issue), markup=False, highlight=False)
        raise typer.Exit(1) from None
    print(render_mermaid(topology) if mermaid else render_text(topology))


@schemas_app.command("export")
def schemas_export(
    directory: Annotated[Path, typer.Argument(help="Folder to write <Record>.schema.json files into.")],
) -> None:
    """Write a JSON Schema for every record."""
    from schemas import record_types

    directory.mkdir(parents=True, exist_ok=True)
    for name, record_type in sorted(record_types().items()):
        schema = record_type.model_json_schema()
        schema["$id"] = f"supportflow/{name}/v{record_type.SCHEMA_VERSION}"
        (directory / f"{name}.schema.json").write_text(json.dumps(schema, indent=2) + "\n")
    console.print(f"wrote {len(record_types())} schemas to {directory}")


@config_app.command("show")
def config_show(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Print the effective settings (environment, config file, defaults) with secrets masked."""
    values = settings().masked()
    if as_json:
        print(json.dumps(values, indent=2, default=str))
        return
    for name, value in values.items():
        console.print(f"{name:<28} {value}", markup=False, highlight=False)

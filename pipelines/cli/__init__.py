"""The `supportflow` command line: a Typer root (`main`) and one module per command group."""

from pipelines.cli.main import app, entrypoint

__all__ = ["app", "entrypoint"]

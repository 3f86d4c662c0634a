"""The `supportflow workspace` process: the router and the web app on one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from connectors.kafka import AsyncProducer, BackgroundReader
from operators.authorize import Authorize
from operators.execute import Execute
from operators.guard import Guard
from operators.plan import PlaybookPlanner
from operators.protocols import OperatorContext, ToolSource
from pipelines.handover.approval import ApprovalRunner
from pipelines.handover.auth import (
    AgentsFileError,
    LoginThrottle,
    Tokens,
    ensure_demo_agents,
    load_agents,
)
from pipelines.runtime.clients import RuntimeClients, reply_shaper_for
from pipelines.runtime.exposure import OpenDoorError, check_workspace_exposure
from pipelines.runtime.settings import Settings
from pipelines.runtime.stage import SystemClock
from pipelines.runtime.topology import Topology
from pipelines.services.workspace.desk import Workspace
from pipelines.services.workspace.http import build_workspace_app
from pipelines.services.workspace.knowledge import WorkspaceKnowledge
from pipelines.services.workspace.requests import DEMO_AGENTS_FILE
from schemas import Feedback, Message, OutboundMessage

log = logging.getLogger(__name__)


def agents_file_for(settings: Settings) -> tuple[Path, dict[str, str] | None]:
    """The agents file, and the demo passwords if this call created the demo file (show them once)."""
    if settings.workspace_agents_file is not None:
        return Path(settings.workspace_agents_file), None
    path = settings.data_dir.resolve() / DEMO_AGENTS_FILE
    return path, ensure_demo_agents(path)


def _approvals(topology: Topology, playbooks: dict[str, Any], tools: ToolSource) -> ApprovalRunner:
    """The topology's own authorize, execute and guard operators, as it configures them (defaults if absent)."""
    clients = RuntimeClients()
    ctx = OperatorContext(tables={}, clock=SystemClock(), tools=tools, clients=clients)
    authorize, execute, guard = (topology.operator(kind) or kind() for kind in (Authorize, Execute, Guard))
    for operator in (authorize, execute, guard):
        operator.warm_up(ctx)
    return ApprovalRunner(authorize, execute, guard, playbooks, tools)


async def run_workspace(
    settings: Settings,
    topology: Topology,
    stop: asyncio.Event,
    ready: asyncio.Event | None = None,
    port: int | None = None,
) -> None:
    """The router and the web app on one event loop until `stop` is set."""
    import uvicorn

    from connectors.backends.registry import ToolRegistry
    from operators.playbooks import DEFAULT_FOLDER, load_playbooks
    from pipelines.services.escalation_router import RouterService

    # the caller (the CLI, `supportflow run`) wrote the demo file and showed its passwords
    agents = load_agents(agents_file_for(settings)[0])
    plan = topology.operator(PlaybookPlanner)
    playbooks = load_playbooks(plan.config.playbooks_dir if plan is not None else DEFAULT_FOLDER)  # type: ignore[attr-defined]
    secret = settings.workspace_secret.get_secret_value().encode() if settings.workspace_secret else os.urandom(32)

    service = RouterService(settings, topology, agents)
    await service.warm_up()
    producer = AsyncProducer(settings.kafka_client_config())
    tools = ToolRegistry.from_settings(settings)
    clients = RuntimeClients(settings)
    store = None
    if settings.database_url is not None:
        from connectors.postgres import PostgresStore

        store = PostgresStore(settings.database_url.get_secret_value(), min(5, settings.database_pool_size))
    workspace = Workspace(
        agents,
        service,
        producer.send,
        Tokens(secret, settings.workspace_token_ttl_s),
        LoginThrottle(
            settings.workspace_login_max_failures,
            settings.workspace_login_window_s,
            max_per_address=settings.workspace_login_max_failures_per_address,
            max_per_agent=settings.workspace_login_max_failures_per_agent,
        ),
        _approvals(topology, playbooks, tools),
        reply_shaper_for(topology, clients),
        snapshots=store.conversation_snapshot if store is not None else None,
        outbound_topic=topology.topic_for(OutboundMessage) or "sf.outbound",
        feedback_topic=topology.topic_for(Feedback) or "sf.feedback",
        secure_cookie=(settings.public_base_url or "").startswith("https://"),
        queues=list(settings.workspace_queue_by_skill.values()),
        knowledge=(
            WorkspaceKnowledge.for_topology(topology, clients, store.article_conversations)
            if store is not None
            else None
        ),
    )
    watched = [t for t in (topology.topic_for(Message), topology.topic_for(OutboundMessage)) if t]
    reader = BackgroundReader(settings.kafka_client_config(), watched, workspace.on_record, settings.fetch_max_wait_ms)
    reader.start(asyncio.get_running_loop())

    config = uvicorn.Config(
        build_workspace_app(workspace),
        host=settings.workspace_host,
        port=settings.workspace_port if port is None else port,
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # the caller owns the signals
    routing = asyncio.create_task(service.run(stop), name="router")
    serving = asyncio.create_task(server.serve(), name="workspace-http")
    try:
        while not server.started:
            if serving.done() or routing.done():
                break
            await asyncio.sleep(0.02)
        if server.started:
            log.info("workspace serving on http://%s:%d/workspace", settings.workspace_host, config.port)
            if ready is not None:
                ready.set()
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([stopping, routing, serving], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
    finally:
        stop.set()
        server.should_exit = True
        for task in (serving, routing):
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 15)
        reader.close()
        producer.close()
        await tools.close()
        await clients.close()
        if store is not None:
            await store.close()
    for task in (routing, serving):  # a part that failed on its own fails the process
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


def serve_workspace(settings: Settings, ready_file: Path | None, port: int | None = None) -> None:
    """The `supportflow workspace` process: run until SIGTERM/SIGINT."""
    from pipelines.runtime.topology import load_topology
    from pipelines.services.sinks import serve_until_stopped

    try:
        check_workspace_exposure(settings)
    except OpenDoorError as exc:
        raise SystemExit(f"workspace: {exc}") from None
    topology = load_topology(settings.topology_file)
    try:
        serve_until_stopped(
            settings, ready_file, lambda stop, ready: run_workspace(settings, topology, stop, ready, port)
        )
    except AgentsFileError as exc:
        raise SystemExit(f"workspace: {exc}") from None

"""`supportflow worker`: one faust worker process running some or all stages."""

from __future__ import annotations

import gc
import logging
import os
from pathlib import Path

import faust
from prometheus_client import start_http_server

from pipelines.runtime.app import build_app, ensure_topics
from pipelines.runtime.settings import Settings
from pipelines.runtime.topology import load_topology

log = logging.getLogger(__name__)


class SupportflowWorker(faust.Worker):
    """A faust worker that can tell a supervisor when it is processing (tables recovered)."""

    ready_file: Path | None = None

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        if self.ready_file is not None:
            self.ready_file.parent.mkdir(parents=True, exist_ok=True)
            self.ready_file.write_text("ready\n")
        log.info("supportflow worker ready")


def run_worker(
    settings: Settings, stages: list[str] | None = None, ready_file: Path | None = None, nice: int = 0
) -> None:
    """Run until SIGTERM/SIGINT; faust commits acked offsets and leaves the group on the way out.

    `nice` lowers the priority after the operators have warmed up: loading models is start-up work
    a background stage should not take minutes over on a busy machine; its records are what may wait.
    """
    topology = load_topology(settings.topology_file)
    ensure_topics(settings, topology)
    app = build_app(settings, topology, stages)
    for mirror in app.topic_mirrors:  # reference data complete before the first record
        mirror.start()
    if nice:
        os.nice(nice)
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port, addr="127.0.0.1")
    # The tables keep many small long-lived objects; freezing what start-up built and collecting
    # the oldest generation less often keeps full collections from stalling every lane at once.
    gc.freeze()
    gc.set_threshold(10_000, 20, 50)
    worker = SupportflowWorker(app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False)
    worker.ready_file = ready_file
    worker.execute_from_commandline()

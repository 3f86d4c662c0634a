"""The whole pipeline on one machine: broker, topics, stream workers and the HTTP ingress.

With no `KAFKA_BOOTSTRAP_SERVERS` the broker is an embedded tansu; with one, the same workers
and ingress run against that cluster. Every child process dies with this one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from pydantic import SecretStr

from connectors.llm import TierSpec
from connectors.postgres import EmbeddedPostgres
from connectors.triton import EmbeddedTriton, TritonUnavailableError
from pipelines.devstack.embedded import EmbeddedBroker, free_port, spawn, stop
from pipelines.devstack.supervisor import Child, Supervisor
from pipelines.runtime.app import ensure_topics
from pipelines.runtime.settings import Settings
from pipelines.runtime.topology import Topology, load_topology, served_models
from pipelines.services.ingress import build_ingress

log = logging.getLogger(__name__)

STATE_FILE = "stack.json"
DEMO_CUSTOMER_ID = "C000001"  # Alice, of the seeded demo shop


@dataclass
class WorkerProcess:
    index: int
    process: subprocess.Popen[bytes]
    ready_file: Path
    log_file: Path
    argv: list[str]
    env: dict[str, str]
    health_url: str | None = None

    @property
    def name(self) -> str:
        names = {
            -1: "the sink process",
            -2: "the channel senders",
            -3: "the email channel",
            -4: "the agent workspace",
            -5: "the knowledge sync",
        }
        return names.get(self.index, f"worker {self.index}")

    @property
    def short_name(self) -> str:
        names = {-1: "sink", -2: "senders", -3: "email", -4: "workspace", -5: "kb-sync"}
        return names.get(self.index, f"worker-{self.index}")

    @property
    def kind(self) -> str:
        """What the chaos benchmark and `status` call it; the workspace process holds the escalation router."""
        return {-1: "sink", -2: "senders", -3: "email", -4: "router", -5: "kb-sync"}.get(self.index, "worker")

    def launch(self) -> subprocess.Popen[bytes]:
        """A fresh copy of the process, with the same command, environment and files."""
        self.ready_file.unlink(missing_ok=True)
        self.process = spawn(self.argv, self.log_file, env=self.env)
        return self.process

    def supervised(self) -> Child:
        return Child(
            self.short_name,
            self.kind,
            self.process,
            launch=self.launch,
            ready=self.ready_file.exists,
            health_url=self.health_url,
            log_file=self.log_file,
        )


class IngressServer:
    """uvicorn in a thread, for commands that drive the stack from the same process."""

    def __init__(self, settings: Settings, topology: Topology, port: int) -> None:
        config = uvicorn.Config(
            build_ingress(settings, topology), host=settings.http_host, port=port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.url = f"http://{settings.http_host}:{port}"
        self._thread = threading.Thread(target=self.server.run, name="ingress", daemon=True)

    def start(self, timeout_s: float = 20.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the HTTP ingress did not start on {self.url}")
            time.sleep(0.02)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)


class Stack:
    """Broker, topics, stream workers, the sink process (with its stores) and the HTTP ingress.

    `with_sinks=False` leaves the stores out, for runs that measure the stream alone.
    """

    def __init__(
        self, settings: Settings, workers: int | None = None, with_sinks: bool = True, with_workspace: bool = True
    ) -> None:
        self.settings = settings
        self.with_sinks = with_sinks
        self.with_workspace = with_workspace
        self.workspace: WorkerProcess | None = None
        self.workspace_url: str | None = None
        self.demo_passwords: dict[str, str] | None = None
        self.agents_file: Path | None = None
        self.postgres: EmbeddedPostgres | None = None
        self.triton: EmbeddedTriton | None = None
        self.seeded = False
        self.sink: WorkerProcess | None = None
        self.senders: WorkerProcess | None = None
        self.email: WorkerProcess | None = None
        self.kb_sync: WorkerProcess | None = None
        self.email_port: int | None = None
        self.worker_count = workers or settings.workers
        self.data_dir = settings.data_dir.resolve()
        self.log_dir = self.data_dir / "logs"
        self.broker: EmbeddedBroker | None = None
        self.workers: list[WorkerProcess] = []
        self.ingress: IngressServer | None = None
        self.topology: Topology = load_topology(settings.topology_file).with_partitions_at_most(settings.max_partitions)
        self.supervisor = Supervisor(self.data_dir, extra_state=self._shared_state)
        self.ready_timeout_s = 180.0  # warm-up takes minutes on a busy 2-core machine

    @property
    def bootstrap(self) -> str:
        assert self.settings.kafka_bootstrap_servers
        return self.settings.kafka_bootstrap_servers

    def start(
        self,
        ingress_port: int | None = None,
        with_ingress: bool = True,
        prepare: Callable[[Stack], None] | None = None,
    ) -> Stack:
        """`prepare` runs once the topics and stores exist and before any worker starts: records a run needs
        to be there from the first message (customer profiles, a backend's rows) go in there."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.settings.embedded:
            # kept before it starts, so a Ctrl-C while it comes up still finds it to stop
            self.broker = EmbeddedBroker(self.settings.embedded_broker_port, self.log_dir / "tansu.log")
            self.broker.start()
            assert self.broker.process is not None
            self.supervisor.add(Child("broker", "broker", self.broker.process, log_file=self.broker.log_file))
            self.settings = self.settings.model_copy(
                update={"kafka_bootstrap_servers": self.broker.bootstrap, "kafka_exact_offsets": True}
            )
        try:
            ensure_topics(self.settings, self.topology)
            self.start_triton()
            if self.with_sinks:
                self.start_stores()
            if prepare is not None:
                prepare(self)
            main_stages, isolated = self.stage_split()
            for index in range(self.worker_count):
                self.start_worker(index, main_stages if isolated else None)
            for offset, stage in enumerate(isolated):
                self.start_worker(
                    self.worker_count + offset, [stage], nice=self.settings.isolated_stage_nice, background=True
                )
            if self.with_sinks:
                self.sink = self.start_sink()
                self.senders = self.start_senders()
                self.email = self.start_email()
                self.kb_sync = self.start_kb_sync()
            if self.with_workspace:
                self.workspace = self.start_workspace()
            self.wait_ready(self.ready_timeout_s)
            if self.email is not None:
                self.email_port = int(self.email.ready_file.read_text().strip())
                self._keep_email_port()
            if with_ingress:
                port = self.settings.http_port if ingress_port is None else ingress_port
                port = port or free_port()
                self.ingress = IngressServer(self.settings, self.topology, port)
                self.ingress.start()
                self._write_state()
        except BaseException:
            self.stop()
            raise
        return self

    def worker_env(self) -> dict[str, str]:
        """The children's environment: the user's (provider credentials set as SUPPORTFLOW_* reach the
        senders), with what this stack decided on top."""
        env = dict(os.environ)
        env.update(
            {
                "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "SUPPORTFLOW_KAFKA_EXACT_OFFSETS": str(self.settings.exact_offsets).lower(),
                "SUPPORTFLOW_KAFKA_FETCH_MAX_WAIT_MS": str(self.settings.fetch_max_wait_ms),
                "SUPPORTFLOW_TOPOLOGY_FILE": str(Path(self.settings.topology_file).resolve()),
                "SUPPORTFLOW_LOG_LEVEL": self.settings.log_level,
                "SUPPORTFLOW_SESSION_REAPER_INTERVAL_S": str(self.settings.session_reaper_interval_s),
                "SUPPORTFLOW_MODEL_REPOSITORY": str(Path(self.settings.model_repository).resolve()),
            }
        )
        if self.settings.max_partitions is not None:  # every process must see the same partition counts
            env["SUPPORTFLOW_KAFKA_MAX_PARTITIONS"] = str(self.settings.max_partitions)
        if self.settings.triton_url is not None:
            env["SUPPORTFLOW_TRITON_URL"] = self.settings.triton_url
        if self.settings.database_url is not None:  # the commerce backend the agent's tools act on
            env["DATABASE_URL"] = self.settings.database_url.get_secret_value()
        if self.settings.rest_tools_file is not None:
            env["SUPPORTFLOW_REST_TOOLS_FILE"] = str(Path(self.settings.rest_tools_file).resolve())
        if self.settings.config_file is not None:
            env["SUPPORTFLOW_CONFIG_FILE"] = str(self.settings.config_file)
        if self.settings.kafka_sasl_password is not None:
            env["SUPPORTFLOW_KAFKA_SASL_PASSWORD"] = self.settings.kafka_sasl_password.get_secret_value()
        if self.settings.llm_tiers:  # keys included: the workers call the endpoints
            env["SUPPORTFLOW_LLM_TIERS"] = json.dumps([tier_env(t) for t in self.settings.llm_tiers])
        return env

    def background_env(self) -> dict[str, str]:
        """`worker_env` for processes off the reply path: their readers fetch less often, because on tansu
        every fetch costs time in proportion to what the partitions hold, and that slowed the reply path
        as topics grew (`bench/tansu_growth_probe.json`)."""
        wait = max(self.settings.fetch_max_wait_ms, self.settings.kafka_background_fetch_max_wait_ms)
        return {**self.worker_env(), "SUPPORTFLOW_KAFKA_FETCH_MAX_WAIT_MS": str(wait)}

    def start_triton(self) -> None:
        """The embedded tritonserver for the NLU model, unless Triton has an address or is switched off.

        A machine without the nvidia-pytriton wheel (or where the server fails) still runs: each
        worker then answers with the same model in process, and the log says so.
        """
        if self.settings.triton_url is not None or not self.settings.triton_embedded:
            return
        try:
            self.triton = EmbeddedTriton(
                self.settings.model_repository,
                log_file=self.log_dir / "tritonserver.log",
                models=served_models(self.topology) or ("intent_classifier",),
            )
            log.info("starting tritonserver")
            self.triton.start(timeout_s=90)
        except (TritonUnavailableError, RuntimeError, TimeoutError) as exc:
            log.warning("no embedded Triton (%s); the NLU model runs in each worker's process", exc)
            self.triton = None
            return
        assert self.triton.process is not None
        triton = self.triton
        self.supervisor.add(
            Child(
                "triton",
                "triton",
                triton.process,
                launch=triton.launch,
                ready=triton.ready,
                health_url=f"{triton.http_url}/v2/health/ready",
                log_file=triton.log_file,
            )
        )
        self.settings = self.settings.model_copy(update={"triton_url": triton.grpc_url})

    def nlu_summary(self) -> str:
        if self.triton is not None:
            return f"NLU model served by the embedded tritonserver at {self.triton.grpc_url}"
        if self.settings.triton_url is not None:
            return f"NLU model served by Triton at {self.settings.triton_url}"
        return "NLU model in each worker's process (onnxruntime)"

    def start_stores(self) -> None:
        """The embedded Postgres when no DATABASE_URL is set; chdb needs no server (the sink opens it)."""
        if self.settings.database_url is None:
            self.postgres = EmbeddedPostgres(self.data_dir / "postgres")
            log.info("starting PostgreSQL")
            dsn = self.postgres.start()
            if self.postgres.process is not None:  # None: it joined a server another process runs
                self.supervisor.add(
                    Child("postgres", "postgres", self.postgres.process, log_file=self.postgres.log_file)
                )
            self.settings = self.settings.model_copy(update={"database_url": SecretStr(dsn)})
            self.seeded = asyncio.run(_seed_demo_backend(dsn))
            self.sign_in_demo_page()

    def sign_in_demo_page(self) -> None:
        """With the embedded demo shop, the demo page is Alice's: the ingress mints her customer token.

        Like a host site's backend would; the key is random per run unless one is configured.
        """
        update: dict[str, object] = {}
        if self.settings.demo_customer_id is None:
            update["demo_customer_id"] = DEMO_CUSTOMER_ID
        if self.settings.customer_token_secret is None:
            update["customer_token_secret"] = SecretStr(secrets.token_urlsafe(32))
        self.settings = self.settings.model_copy(update=update)

    def store_summary(self) -> str:
        from connectors.postgres import describe_dsn

        where = describe_dsn(self.settings.database_url.get_secret_value()) if self.settings.database_url else "?"
        postgres = f"PostgreSQL {where}" + (" (embedded)" if self.postgres is not None else "")
        analytics = "ClickHouse" if self.settings.clickhouse_url else "chdb"
        return f"{postgres}, events in {analytics}"

    def store_env(self) -> dict[str, str]:
        env = {"SUPPORTFLOW_DATA_DIR": str(self.data_dir)}
        if self.settings.database_url is not None:
            env["DATABASE_URL"] = self.settings.database_url.get_secret_value()
        if self.settings.clickhouse_url is not None:
            env["CLICKHOUSE_URL"] = self.settings.clickhouse_url.get_secret_value()
        return env

    def start_sink(self) -> WorkerProcess:
        ready_file = self.data_dir / "run" / "sink.ready"
        ready_file.unlink(missing_ok=True)
        log_file = self.log_dir / "sink.log"
        argv = [sys.executable, "-m", "pipelines.cli", "sink", "--migrate", "--ready-file", str(ready_file)]
        return self._launch(-1, argv, ready_file, log_file, {**self.background_env(), **self.store_env()})

    def start_senders(self) -> WorkerProcess:
        """The channel senders: providers with credentials get the replies, the others the outbox table."""
        ready_file = self.data_dir / "run" / "senders.ready"
        ready_file.unlink(missing_ok=True)
        log_file = self.log_dir / "senders.log"
        argv = [sys.executable, "-m", "pipelines.cli", "senders", "--ready-file", str(ready_file)]
        return self._launch(-2, argv, ready_file, log_file, {**self.worker_env(), **self.store_env()})

    def start_workspace(self) -> WorkerProcess:
        """The agent workspace (page + escalation router); a demo agents file on first start (passwords kept
        in `demo_passwords` for the console, once)."""
        from pipelines.services.workspace import agents_file_for

        self.agents_file, self.demo_passwords = agents_file_for(self.settings)
        port = self.settings.workspace_port or free_port()
        if not _port_free(self.settings.workspace_host, port):
            log.warning("workspace port %d is taken; the workspace serves on a free port instead", port)
            port = free_port()
        self.workspace_url = f"http://{self.settings.workspace_host}:{port}/workspace"
        ready_file = self.data_dir / "run" / "workspace.ready"
        ready_file.unlink(missing_ok=True)
        log_file = self.log_dir / "workspace.log"
        argv = [
            sys.executable,
            "-m",
            "pipelines.cli",
            "workspace",
            "--port",
            str(port),
            "--ready-file",
            str(ready_file),
        ]
        env = {**self.background_env(), **self.store_env(), **self.workspace_env()}
        health = f"http://{self.settings.workspace_host}:{port}/healthz"
        return self._launch(-4, argv, ready_file, log_file, env, health)

    def workspace_env(self) -> dict[str, str]:
        s = self.settings
        env = {
            "SUPPORTFLOW_WORKSPACE_HOST": s.workspace_host,
            "SUPPORTFLOW_WORKSPACE_AGENTS_FILE": str(self.agents_file),
            "SUPPORTFLOW_WORKSPACE_TOKEN_TTL_S": str(s.workspace_token_ttl_s),
            "SUPPORTFLOW_WORKSPACE_LOGIN_MAX_FAILURES": str(s.workspace_login_max_failures),
            "SUPPORTFLOW_WORKSPACE_LOGIN_WINDOW_S": str(s.workspace_login_window_s),
        }
        env["SUPPORTFLOW_WORKSPACE_PRIORITY"] = s.workspace_priority.model_dump_json()
        env["SUPPORTFLOW_WORKSPACE_QUEUE_BY_SKILL"] = json.dumps(s.workspace_queue_by_skill)
        env["SUPPORTFLOW_WORKSPACE_HANDLE_TIME_S"] = str(s.workspace_handle_time_s)
        env["SUPPORTFLOW_HUMAN_WAIT_TIMEOUT_S"] = str(s.human_wait_timeout_s)
        if s.workspace_secret is not None:
            env["SUPPORTFLOW_WORKSPACE_SECRET"] = s.workspace_secret.get_secret_value()
        if s.public_base_url is not None:
            env["SUPPORTFLOW_PUBLIC_BASE_URL"] = s.public_base_url
        return env

    def start_email(self) -> WorkerProcess:
        """The email channel: the SMTP listener and the email sender (relay, or the outbox table).

        The default port 2525, when taken, gives way to a free one (printed by `supportflow run`);
        a port that was configured is kept, or the start fails.
        """
        ready_file = self.data_dir / "run" / "email.ready"
        ready_file.unlink(missing_ok=True)
        log_file = self.log_dir / "email.log"
        argv = [sys.executable, "-m", "pipelines.cli", "email", "run", "--ready-file", str(ready_file)]
        argv += ["--port", str(self.settings.smtp_listen_port)]
        if "smtp_listen_port" not in self.settings.model_fields_set:
            argv.append("--free-port-if-busy")
        env = {**self.worker_env(), **self.store_env(), **self.email_env()}
        return self._launch(-3, argv, ready_file, log_file, env)

    def start_kb_sync(self) -> WorkerProcess | None:
        """`supportflow kb sync --watch` when `knowledge_sources` names any: a process of its own, supervised
        like the others, at the isolated stages' lower CPU priority (embedding an edited source would
        otherwise take the cores from the replies)."""
        if not self.settings.knowledge_sources:
            return None
        ready_file = self.data_dir / "run" / "kb-sync.ready"
        ready_file.unlink(missing_ok=True)
        log_file = self.log_dir / "kb-sync.log"
        argv = [sys.executable, "-m", "pipelines.cli", "kb", "sync", "--watch", "--ready-file", str(ready_file)]
        argv += ["--nice", str(self.settings.isolated_stage_nice)]
        sources = json.dumps([spec.model_dump(mode="json") for spec in self.settings.knowledge_sources])
        env = {**self.worker_env(), **self.store_env(), "SUPPORTFLOW_KNOWLEDGE_SOURCES": sources}
        return self._launch(-5, argv, ready_file, log_file, env)

    def _keep_email_port(self) -> None:
        """A restarted email channel listens where the first one did (it may have picked a free port)."""
        assert self.email is not None and self.email_port is not None
        argv = [arg for arg in self.email.argv if arg != "--free-port-if-busy"]
        argv[argv.index("--port") + 1] = str(self.email_port)
        self.email.argv = argv

    def _launch(
        self,
        index: int,
        argv: list[str],
        ready_file: Path,
        log_file: Path,
        env: dict[str, str],
        health_url: str | None = None,
    ) -> WorkerProcess:
        """Spawn one of the stack's Python children and put it under supervision."""
        process = spawn(argv, log_file, env=env)
        child = WorkerProcess(index, process, ready_file, log_file, argv, env, health_url)
        self.supervisor.add(child.supervised())
        return child

    def email_env(self) -> dict[str, str]:
        """The email settings the child needs (worker_env passes no SUPPORTFLOW_ variable of this process)."""
        s = self.settings
        env = {
            "SUPPORTFLOW_SMTP_LISTEN_HOST": s.smtp_listen_host,
            "SUPPORTFLOW_SUPPORT_ADDRESS": s.support_address,
            "SUPPORTFLOW_SMTP_RELAY_PORT": str(s.smtp_relay_port),
            "SUPPORTFLOW_SMTP_RELAY_STARTTLS": str(s.smtp_relay_starttls).lower(),
            "SUPPORTFLOW_EMAIL_MAX_BYTES": str(s.email_max_bytes),
            "SUPPORTFLOW_EMAIL_BLOCKED_SENDERS": json.dumps(s.email_blocked_senders),
            "SUPPORTFLOW_RATE_LIMITS": json.dumps({k: v.model_dump() for k, v in s.rate_limits.items()}),
        }
        if s.smtp_relay_host is not None:
            env["SUPPORTFLOW_SMTP_RELAY_HOST"] = s.smtp_relay_host
        if s.smtp_relay_username is not None:
            env["SUPPORTFLOW_SMTP_RELAY_USERNAME"] = s.smtp_relay_username
        if s.smtp_relay_password is not None:
            env["SUPPORTFLOW_SMTP_RELAY_PASSWORD"] = s.smtp_relay_password.get_secret_value()
        return env

    def email_summary(self) -> str:
        s = self.settings
        where = f"smtp://{s.smtp_listen_host}:{self.email_port}" if self.email_port else "no listener"
        relay = f"via the relay {s.smtp_relay_host}:{s.smtp_relay_port}" if s.smtp_relay_host else "to the outbox"
        return f"{where} for {s.support_address}; replies go {relay}"

    def describe_workers(self) -> str:
        main, isolated = self.stage_split()
        text = f"{self.worker_count} worker(s) running {', '.join(main)}"
        return text + (f"; {', '.join(isolated)} in a low-priority worker each" if isolated else "")

    def stage_split(self) -> tuple[list[str], list[str]]:
        """(stages every worker runs, stages with a low-priority worker each); only table-less stages split off."""
        stages = self.topology.stages
        isolated = [s for s in self.settings.isolated_stages if s in stages and not stages[s].tables]
        return [s for s in stages if s not in isolated], isolated

    def start_worker(
        self, index: int, stages: list[str] | None = None, nice: int = 0, background: bool = False
    ) -> WorkerProcess:
        ready_file = self.data_dir / "run" / f"worker-{index}.ready"
        ready_file.unlink(missing_ok=True)
        log_file = self.log_dir / f"worker-{index}.log"
        argv = [sys.executable, "-m", "pipelines.cli", "worker", "--ready-file", str(ready_file)]
        argv += [arg for stage in stages or [] for arg in ("--stage", stage)]
        argv += ["--nice", str(nice)] if nice else []
        env = self.background_env() if background else self.worker_env()
        # every worker serves its metrics, so `supportflow status` can see it answer (a free port unless set)
        metrics_port = self.settings.worker_metrics_port + index if self.settings.worker_metrics_port else free_port()
        env["SUPPORTFLOW_WORKER_METRICS_PORT"] = str(metrics_port)
        worker = self._launch(index, argv, ready_file, log_file, env, f"http://127.0.0.1:{metrics_port}/metrics")
        self.workers.append(worker)
        return worker

    def wait_ready(self, timeout_s: float = 180.0) -> None:  # warm-up takes minutes on a busy 2-core machine
        deadline = time.monotonic() + timeout_s
        services = [self.sink, self.senders, self.email, self.workspace, self.kb_sync]
        for worker in [*self.workers, *(service for service in services if service is not None)]:
            while not worker.ready_file.exists():
                if worker.process.poll() is not None:
                    raise RuntimeError(f"{worker.name} exited with {worker.process.returncode}; see {worker.log_file}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{worker.name} not ready after {timeout_s:.0f}s; see {worker.log_file}")
                time.sleep(0.1)

    def _write_state(self) -> None:
        assert self.ingress is not None
        self.write_state(self.ingress.url)

    def write_state(self, ingress_url: str) -> None:
        """Tell later commands (chat, replay, profiles import) where this stack serves."""
        state = {"pid": os.getpid(), "ingress_url": ingress_url, "bootstrap": self.bootstrap}
        (self.data_dir / STATE_FILE).write_text(json.dumps(state))

    def _shared_state(self) -> dict[str, object]:
        """Beside the processes in the supervisor's state file: where `status` finds the broker and ingress."""
        return {
            "bootstrap": self.settings.kafka_bootstrap_servers,
            "ingress_url": self.ingress.url if self.ingress is not None else None,
        }

    def supervise(self, interval_s: float = 0.5) -> None:
        """Watch the children until interrupted (Ctrl-C, SIGTERM): restart the ones that die, report the rest.

        Runs on the main thread, the one that started the children: they are bound to it (PDEATHSIG).
        """
        self.supervisor.write_state()
        while True:
            self.supervisor.check()
            if self.ingress is not None and not self.ingress.alive:
                raise RuntimeError("the HTTP ingress stopped serving")
            time.sleep(interval_s)

    def stop(self) -> None:
        self.supervisor.close()
        if self.ingress is not None:
            self.ingress.stop()
            self.ingress = None
            (self.data_dir / STATE_FILE).unlink(missing_ok=True)
        if self.kb_sync is not None:  # a pass under way is cut short; the next start picks the source up again
            stop(self.kb_sync.process, timeout_s=15)
            self.kb_sync = None
        if self.workspace is not None:  # first: it writes to the topics the others read
            stop(self.workspace.process, timeout_s=15)
            self.workspace = None
        if self.email is not None:  # no more mail in; the replies already in hand are finished
            stop(self.email.process, timeout_s=15)
            self.email = None
        for worker in self.workers:
            stop(worker.process, timeout_s=15)
        self.workers.clear()
        if self.senders is not None:
            stop(self.senders.process, timeout_s=15)
            self.senders = None
        if self.sink is not None:
            self._drain_sink()
            stop(self.sink.process, timeout_s=15)  # finishes and commits the batch in hand
            self.sink = None
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None
        if self.triton is not None:
            self.triton.stop()
            self.triton = None
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    def _drain_sink(self) -> None:
        """Let the sink store what the workers produced before it stops (the embedded broker forgets it)."""
        from pipelines.runtime.sinks import wait_until_caught_up

        if self.sink is None or self.sink.process.poll() is not None:
            return
        try:
            if wait_until_caught_up(self.settings, self.topology, ["postgres", "clickhouse"]):
                time.sleep(2 * self.settings.sink_batch_wait_ms / 1000)  # the batch tansu's end offset hides
            else:
                log.warning("the sink had not stored everything after 15 s; stopping it anyway")
        except Exception as exc:  # the broker is already gone: nothing more to drain
            log.warning("could not check the sink's progress: %s", exc)

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _seed_demo_backend(dsn: str) -> bool:
    """The embedded store's first run: migrate and seed the demo shop, so the agent has orders to act on."""
    import asyncpg

    from connectors.backends.commerce.seed import seed_commerce
    from connectors.postgres.migrator import migrate

    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        if await conn.fetchval("SELECT count(*) FROM commerce.customers") > 0:
            return False
        await seed_commerce(conn)
        return True
    finally:
        await conn.close()


def _port_free(host: str, port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def running_stack_state(settings: Settings) -> dict[str, object] | None:
    """What a `supportflow run` serving from this data dir wrote about itself, if it is alive."""
    state_file = settings.data_dir.resolve() / STATE_FILE
    try:
        state = json.loads(state_file.read_text())
        pid = int(state["pid"])
        os.kill(pid, 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state if isinstance(state, dict) else None


def running_ingress_url(settings: Settings) -> str | None:
    """The ingress of a `supportflow run` already serving from this data dir, if it answers."""
    import httpx

    state_file = settings.data_dir.resolve() / STATE_FILE
    try:
        url = json.loads(state_file.read_text())["ingress_url"]
        httpx.get(f"{url}/healthz", timeout=1.0).raise_for_status()
        return str(url)
    except (OSError, ValueError, KeyError, httpx.HTTPError):
        return None


def tier_env(tier: TierSpec) -> dict[str, object]:
    """A tier as its environment variable carries it to a child: the key in clear, as the child needs it."""
    data = tier.model_dump(mode="json", exclude={"api_key"})
    if tier.api_key is not None:
        data["api_key"] = tier.api_key.get_secret_value()
    return data

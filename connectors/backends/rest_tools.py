"""Declarative REST tools: a tenant describes actions on its own backends in YAML, not code.

Each tool is validated when the file is loaded (unknown keys, bad templates and missing secrets
fail then, naming the file, the tool and the field), so a bad file never reaches a conversation.
At call time the arguments are validated before any request leaves, the customer id always comes
from the `ToolCall` (never from the model's arguments), and the agent sees only the fields the
`response` mapping names, never the backend's whole answer.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union
from urllib.parse import quote

import httpx
import yaml
from prometheus_client import Counter
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from connectors.protocols import Tool, ToolCall, ToolError

log = logging.getLogger(__name__)

__all__ = [
    "ArgumentSpec",
    "RestTool",
    "RestToolSet",
    "RestToolSpec",
    "RestToolsConfigError",
    "load_rest_tools",
    "resolve_path",
]

CALLS = Counter(
    "supportflow_rest_tool_calls_total", "Calls of tenant REST tools, by tool and outcome.", ["tool", "outcome"]
)

ENV_NAME = r"^[A-Z_][A-Z0-9_]*$"
TOOL_NAME = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$"
IDENTIFIER = r"^[a-z_][a-z0-9_]*$"
CUSTOMER_ID = "customer_id"
MAX_RETRY_AFTER_S = 10.0
# The part of a URL before its path: placeholders there would let arguments choose the host.
_ORIGIN = re.compile(r"^https?://[^/?#{}]+(?=[/?]|$)")

_PYTHON_TYPES: dict[str, type] = {"string": str, "integer": int, "number": float, "boolean": bool}


class RestToolsConfigError(ValueError):
    """A tools file that cannot be used, with every problem found (file, tool and field named)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArgumentSpec(_Strict):
    """One argument the model may pass: a small, JSON-Schema-like description.

    `pattern` must match the whole value (not a substring), so `[0-9]+` cannot smuggle in `1/../x`.
    """

    type: Literal["string", "integer", "number", "boolean"]
    description: str = ""
    required: bool = False
    pattern: str | None = None
    enum: list[str | int | float | bool] | None = Field(default=None, min_length=1)
    max_length: int | None = Field(default=None, gt=0)
    minimum: int | float | None = None
    maximum: int | float | None = None

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _constraints_fit_the_type(self) -> ArgumentSpec:
        if self.type != "string" and (self.pattern is not None or self.max_length is not None):
            raise ValueError(f"pattern and max_length apply to strings, not {self.type}")
        if self.type not in ("integer", "number") and (self.minimum is not None or self.maximum is not None):
            raise ValueError(f"minimum and maximum apply to numbers, not {self.type}")
        if self.enum is not None:
            wrong = [value for value in self.enum if not _fits(value, self.type)]
            if wrong:
                raise ValueError(f"enum values {wrong!r} are not of type {self.type}")
        return self

    def field(self) -> tuple[Any, Any]:
        """The (annotation, default) pair `pydantic.create_model` takes for this argument."""
        annotation: Any = _PYTHON_TYPES[self.type]
        if self.enum is not None:
            annotation = Literal[tuple(self.enum)]
        if self.pattern is not None:
            annotation = Annotated[annotation, AfterValidator(_whole_match(self.pattern))]
        info = Field(
            description=self.description or None,
            max_length=self.max_length,
            ge=self.minimum,
            le=self.maximum,
        )
        if self.required:
            return Annotated[annotation, info], ...
        return Annotated[annotation | None, info], None


def _fits(value: object, kind: str) -> bool:
    # bool is an int in Python: keep true/false out of integer and number enums
    if kind == "boolean" or isinstance(value, bool):
        return kind == "boolean" and isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int)
    if kind == "number":
        return isinstance(value, (int, float))
    return isinstance(value, str)


def _whole_match(pattern: str) -> Any:
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if compiled.fullmatch(value) is None:
            raise ValueError(f"does not match the pattern {pattern}")
        return value

    return check


class NoAuth(_Strict):
    type: Literal["none"] = "none"


class BearerAuth(_Strict):
    """`Authorization: Bearer <$token_env>`."""

    type: Literal["bearer"]
    token_env: str = Field(pattern=ENV_NAME)


class ApiKeyAuth(_Strict):
    """`<header>: <$value_env>`."""

    type: Literal["api_key"]
    header: str = Field(pattern=r"^[A-Za-z0-9-]+$")
    value_env: str = Field(pattern=ENV_NAME)


class BasicAuth(_Strict):
    """`Authorization: Basic base64(<$username_env>:<$password_env>)`."""

    type: Literal["basic"]
    username_env: str = Field(pattern=ENV_NAME)
    password_env: str = Field(pattern=ENV_NAME)


Auth = Annotated[Union[NoAuth, BearerAuth, ApiKeyAuth, BasicAuth], Field(discriminator="type")]


class RestToolSpec(_Strict):
    """One tool as the YAML file declares it (see tools/rest_tools.example.yaml)."""

    name: str = Field(pattern=TOOL_NAME, max_length=64)
    description: str = Field(min_length=1)
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
    url: str
    auth: Auth = Field(default_factory=NoAuth)
    arguments: dict[Annotated[str, Field(pattern=IDENTIFIER)], ArgumentSpec] = Field(default_factory=dict)
    query: dict[str, str] = Field(default_factory=dict, description="query parameter -> argument name")
    body: dict[str, Any] | None = Field(default=None, description="JSON body field -> argument name, nested allowed")
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    retries: int = Field(default=2, ge=0, le=10)
    backoff_s: float = Field(default=0.2, ge=0, le=30, description="first retry's delay; doubles each retry")
    writes: bool = False
    response: dict[Annotated[str, Field(pattern=IDENTIFIER)], str] = Field(
        default_factory=dict, description="output field -> dotted path into the JSON answer; a trailing ? = optional"
    )

    @field_validator("auth", mode="before")
    @classmethod
    def _auth_shorthand(cls, value: Any) -> Any:
        return {"type": "none"} if value in (None, "none") else value

    @field_validator("method", mode="before")
    @classmethod
    def _method_upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("arguments")
    @classmethod
    def _customer_id_is_not_an_argument(cls, value: dict[str, ArgumentSpec]) -> dict[str, ArgumentSpec]:
        if CUSTOMER_ID in value:
            raise ValueError("customer_id always comes from the call, never from the model's arguments")
        return value

    @field_validator("response")
    @classmethod
    def _paths_are_well_formed(cls, value: dict[str, str]) -> dict[str, str]:
        for field, path in value.items():
            if not path or any(not part for part in path.removesuffix("?").split(".")):
                raise ValueError(f"{field}: {path!r} is not a dotted path such as data.tier.name or items.0.sku")
        return value

    @model_validator(mode="after")
    def _templates_use_declared_names(self) -> RestToolSpec:
        origin = _ORIGIN.match(self.url)
        if origin is None:
            raise ValueError(f"url {self.url!r} must start with http:// or https:// and a host without placeholders")
        known = {*self.arguments, CUSTOMER_ID}
        for name in _placeholders(self.url):
            if name not in known:
                raise ValueError(f"url placeholder {{{name}}} is neither an argument nor customer_id")
            if name != CUSTOMER_ID and not self.arguments[name].required:
                raise ValueError(f"url placeholder {{{name}}} needs a required argument")
        for param, name in self.query.items():
            if name not in known:
                raise ValueError(f"query.{param}: {name!r} is neither an argument nor customer_id")
        if self.body is not None:
            if self.method == "GET":
                raise ValueError("a GET tool has no body; use query")
            for where, name in _body_leaves(self.body, "body"):
                if name not in known:
                    raise ValueError(f"{where}: {name!r} is neither an argument nor customer_id")
        if self.writes and self.method == "GET":
            raise ValueError("writes: true needs a method that changes something (POST, PUT, PATCH, DELETE)")
        return self


def _placeholders(template: str) -> list[str]:
    names = []
    for _literal, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if not re.fullmatch(IDENTIFIER, name) or spec or conversion:
            raise ValueError(f"url placeholder {{{name}}} must be a plain name such as {{order_id}}")
        names.append(name)
    return names


def _body_leaves(template: Mapping[str, Any], where: str) -> list[tuple[str, str]]:
    leaves: list[tuple[str, str]] = []
    for key, value in template.items():
        if isinstance(value, Mapping):
            leaves.extend(_body_leaves(value, f"{where}.{key}"))
        elif isinstance(value, str):
            leaves.append((f"{where}.{key}", value))
        else:
            raise ValueError(f"{where}.{key}: expected an argument name or a mapping, got {value!r}")
    return leaves


class _ToolsFile(_Strict):
    tools: list[dict[str, Any]] = Field(min_length=1)


def resolve_path(document: Any, path: str) -> Any:
    """The value at a dotted `path` (`data.tier.name`, `items.0.sku`); KeyError naming the missing step."""
    current = document
    walked: list[str] = []
    for step in path.split("."):
        walked.append(step)
        if isinstance(current, Mapping) and step in current:
            current = current[step]
        elif isinstance(current, list) and step.isdigit() and int(step) < len(current):
            current = current[int(step)]
        else:
            raise KeyError(".".join(walked))
    return current


def _as_text(value: Any) -> str:
    # JSON spelling, so a boolean fills a URL as `true`, not Python's `True`
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class RestTool:
    """One declared tool, callable by the agent through the `Tool` contract."""

    def __init__(self, spec: RestToolSpec, secrets: Mapping[str, SecretStr], client: httpx.AsyncClient) -> None:
        self.spec = spec
        self.name = spec.name
        self.description = spec.description
        self.writes = spec.writes
        self._secrets = secrets
        self._client = client
        self._timeout = httpx.Timeout(spec.timeout_s)
        self.arguments_model: type[BaseModel] = create_model(
            f"Arguments[{spec.name}]",
            __config__=ConfigDict(extra="forbid", strict=True),
            **{name: argument.field() for name, argument in spec.arguments.items()},
        )

    @property
    def parameters(self) -> dict[str, Any]:
        """The arguments as JSON Schema, the shape an LLM's function-calling API asks for."""
        return self.arguments_model.model_json_schema()

    def __repr__(self) -> str:
        return f"RestTool({self.spec.method} {self.spec.url!r}, name={self.name!r})"

    async def call(self, call: ToolCall) -> dict[str, Any]:
        try:
            result = await self._call(call)
        except ToolError as exc:
            CALLS.labels(self.name, exc.kind).inc()
            raise
        CALLS.labels(self.name, "ok").inc()
        return result

    async def _call(self, call: ToolCall) -> dict[str, Any]:
        if call.name != self.name:
            raise ToolError("invalid", f"{self.name} was called as {call.name}")
        values = self._validate(call)
        request = self._client.build_request(
            self.spec.method,
            self._url(values),
            params={
                param: _as_text(values[name]) for param, name in self.spec.query.items() if values[name] is not None
            }
            or None,
            json=self._body(self.spec.body, values) if self.spec.body is not None else None,
            headers=self._headers(call),
            timeout=self._timeout,
        )
        response = await self._send(request)
        return self._map(response)

    def _validate(self, call: ToolCall) -> dict[str, Any]:
        try:
            arguments = self.arguments_model.model_validate(call.arguments)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in error['loc']) or 'arguments'}: {error['msg']}" for error in exc.errors()
            )
            raise ToolError("invalid", f"invalid arguments for {self.name}: {problems}") from None
        return {**arguments.model_dump(), CUSTOMER_ID: call.customer_id}

    def _url(self, values: Mapping[str, Any]) -> str:
        parts = []
        for literal, name, _spec, _conversion in string.Formatter().parse(self.spec.url):
            parts.append(literal)
            if name is not None:
                # safe="" encodes "/" too: an argument fills one path segment, never several
                parts.append(quote(_as_text(values[name]), safe=""))
        return "".join(parts)

    def _body(self, template: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {}
        for key, source in template.items():
            if isinstance(source, Mapping):
                body[key] = self._body(source, values)
            elif values[source] is not None:  # an optional argument left out is left out of the body
                body[key] = values[source]
        return body

    def _headers(self, call: ToolCall) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "supportflow-rest-tools"}
        auth = self.spec.auth
        if isinstance(auth, BearerAuth):
            headers["Authorization"] = f"Bearer {self._secret(auth.token_env)}"
        elif isinstance(auth, ApiKeyAuth):
            headers[auth.header] = self._secret(auth.value_env)
        elif isinstance(auth, BasicAuth):
            pair = f"{self._secret(auth.username_env)}:{self._secret(auth.password_env)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        if self.writes:
            # the same key on every retry and every replay of the turn: the backend acts once
            headers["Idempotency-Key"] = call.idempotency_key
        return headers

    def _secret(self, env: str) -> str:
        return self._secrets[env].get_secret_value()

    async def _send(self, request: httpx.Request) -> httpx.Response:
        attempts = self.spec.retries + 1
        for attempt in range(1, attempts + 1):
            delay = self.spec.backoff_s * 2 ** (attempt - 1)
            try:
                response = await self._client.send(request)
            except httpx.TimeoutException:
                problem = f"timed out after {self.spec.timeout_s:g}s"
            except httpx.ConnectError as exc:
                problem = f"could not connect: {exc}"
            except httpx.HTTPError as exc:  # e.g. the connection dropped mid-answer: not safe to assume anything
                log.warning("%s: %s %s failed: %r", self.name, request.method, request.url, exc)
                raise ToolError("unavailable", f"{self.name} is unavailable right now") from None
            else:
                if response.status_code != 429 and response.status_code < 500:
                    return response
                problem = f"answered HTTP {response.status_code}"
                retry_after = response.headers.get("Retry-After", "")
                if response.status_code == 429 and retry_after.isdigit():
                    delay = min(float(retry_after), MAX_RETRY_AFTER_S)
            if attempt < attempts:
                log.info(
                    "%s: %s %s %s; retry %d of %d",
                    self.name,
                    request.method,
                    request.url,
                    problem,
                    attempt,
                    self.spec.retries,
                )
                await asyncio.sleep(delay)
        log.warning("%s: %s %s %s, %d attempts", self.name, request.method, request.url, problem, attempts)
        raise ToolError("unavailable", f"{self.name} is unavailable right now")

    def _map(self, response: httpx.Response) -> dict[str, Any]:
        status = response.status_code
        if status in (404, 410):
            raise ToolError("not_found", f"{self.name}: nothing was found")
        if status in (400, 422):
            log.info("%s: the backend refused the arguments: HTTP %d %s", self.name, status, response.text[:300])
            raise ToolError("invalid", f"{self.name}: the backend refused the request as invalid")
        if status in (401, 403):
            # the tenant's credentials are wrong or lack a permission: no conversation can fix it
            log.error(
                "%s: HTTP %d from %s: check the credentials this tool's auth names",
                self.name,
                status,
                response.request.url,
            )
            raise ToolError("unavailable", f"{self.name} is unavailable right now")
        if status == 409:
            raise ToolError("not_allowed", f"{self.name}: the backend refused this action in the current state")
        if not 200 <= status < 300:
            log.warning("%s: unexpected HTTP %d from %s", self.name, status, response.request.url)
            raise ToolError("unavailable", f"{self.name} is unavailable right now")
        if not self.spec.response:
            return {}
        try:
            document = response.json()
        except ValueError:
            log.error("%s: the answer from %s is not JSON", self.name, response.request.url)
            raise ToolError("unavailable", f"{self.name}: the backend's answer could not be read") from None
        out: dict[str, Any] = {}
        for field, path in self.spec.response.items():
            optional = path.endswith("?")
            try:
                out[field] = resolve_path(document, path.removesuffix("?"))
            except KeyError as exc:
                if optional:
                    out[field] = None
                    continue
                log.error("%s: response field %s: the answer has no %s (path %s)", self.name, field, exc.args[0], path)
                raise ToolError(
                    "unavailable", f"{self.name}: the backend's answer has no {path} (response field {field})"
                ) from None
        return out


class RestToolSet:
    """The tools of one file, sharing one HTTP client (and so its connection pool); `aclose` it."""

    def __init__(self, specs: list[RestToolSpec], secrets: Mapping[str, SecretStr], source: Path | None = None) -> None:
        self.source = source
        self.client = httpx.AsyncClient(
            follow_redirects=False,  # a redirect could carry the auth header to another host
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        )
        self.tools: dict[str, Tool] = {spec.name: RestTool(spec, secrets, self.client) for spec in specs}

    async def aclose(self) -> None:
        await self.client.aclose()

    async def __aenter__(self) -> RestToolSet:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()


def load_rest_tools(path: Path | str, environ: Mapping[str, str] | None = None) -> RestToolSet:
    """Read and check a tools file; every problem is reported at once, each naming file, tool and field.

    Secrets are read from the environment variables the file names (`environ`, default
    `os.environ`) now, so a missing one fails at start, not in a customer's conversation.
    """
    path = Path(path)
    env = os.environ if environ is None else environ
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RestToolsConfigError(f"{path}: cannot read the tools file: {exc}") from None
    try:
        document = _ToolsFile.model_validate(raw)
    except ValidationError as exc:
        raise RestToolsConfigError(f"{path}: {_describe(exc)}") from None

    problems: list[str] = []
    specs: list[RestToolSpec] = []
    secrets: dict[str, SecretStr] = {}
    seen: set[str] = set()
    for index, entry in enumerate(document.tools):
        name = entry.get("name")
        label = f"tool {name!r}" if isinstance(name, str) else f"tool #{index + 1}"
        if isinstance(name, str):
            if name in seen:
                problems.append(f"{path}: {label}: name: declared twice")
            seen.add(name)
        try:
            spec = RestToolSpec.model_validate(entry)
        except ValidationError as exc:
            problems.extend(f"{path}: {label}: {line}" for line in _describe(exc).split("\n"))
            continue
        for field, variable in _secret_fields(spec):
            value = env.get(variable)
            if not value:
                problems.append(f"{path}: {label}: auth.{field}: environment variable {variable} is not set")
            else:
                secrets[variable] = SecretStr(value)
        specs.append(spec)
    if problems:
        raise RestToolsConfigError("\n".join(problems))
    return RestToolSet(specs, secrets, source=path)


def _secret_fields(spec: RestToolSpec) -> list[tuple[str, str]]:
    auth = spec.auth
    if isinstance(auth, BearerAuth):
        return [("token_env", auth.token_env)]
    if isinstance(auth, ApiKeyAuth):
        return [("value_env", auth.value_env)]
    if isinstance(auth, BasicAuth):
        return [("username_env", auth.username_env), ("password_env", auth.password_env)]
    return []


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        # the discriminated union adds the variant's tag to the location (auth.bearer.token_env): drop it
        loc = [str(p) for p in error["loc"] if p not in ("none", "bearer", "api_key", "basic")]
        where = ".".join(loc) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"field {where}: {message}")
    return "\n".join(lines)

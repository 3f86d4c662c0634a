"""Tenant REST tools against a real HTTP server: templates, auth, validation, retries, mapping."""

from __future__ import annotations

import base64
import json
import logging
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.backends.rest_tools import RestToolsConfigError, RestToolSet, load_rest_tools
from connectors.protocols import ToolCall, ToolError
from pipelines.devstack.embedded import free_port
from tests.support.http_recorder import Recorder, Reply, serve

EXAMPLE = Path(__file__).resolve().parents[3] / "tools" / "rest_tools.example.yaml"


@pytest.fixture
def server() -> Iterator[Recorder]:
    with serve() as recorder:
        yield recorder


def write_tools(tmp_path: Path, body: str, name: str = "tools.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def call(name: str, customer_id: str = "c-1", key: str = "idem-1", **arguments: Any) -> ToolCall:
    return ToolCall(name=name, arguments=arguments, customer_id=customer_id, idempotency_key=key)


async def load(tmp_path: Path, body: str) -> RestToolSet:
    return load_rest_tools(write_tools(tmp_path, body))


async def test_url_template_is_filled_from_arguments_and_customer_id_and_encoded(tmp_path, server):
    tools = await load(
        tmp_path,
        f"""
        tools:
          - name: acme.order
            description: one order
            method: GET
            url: {server.url}/customers/{{customer_id}}/orders/{{order_id}}
            arguments:
              order_id: {{type: string, required: true}}
              expand: {{type: boolean}}
              lang: {{type: string}}
            query: {{expand: expand, lang: lang}}
            response: {{status: status}}
        """,
    )
    server.reply("/customers/c 1/2/orders/A/B?x", Reply(200, {"status": "shipped", "secret_margin": 0.4}))
    async with tools:
        result = await tools.tools["acme.order"].call(
            call("acme.order", customer_id="c 1/2", order_id="A/B?x", expand=True)
        )
    assert result == {"status": "shipped"}, "only mapped fields reach the agent"
    [seen] = server.requests
    # each value fills exactly one path segment: "/" and "?" are encoded, not interpreted
    assert seen.raw_path == "/customers/c%201%2F2/orders/A%2FB%3Fx"
    assert seen.query == "expand=true", "an optional argument left out is not sent"
    assert seen.method == "GET" and "idempotency-key" not in seen.headers


@pytest.mark.parametrize(
    ("auth", "env", "header", "expected"),
    [
        ("{type: bearer, token_env: ACME_TOKEN}", {"ACME_TOKEN": "tok-123"}, "authorization", "Bearer tok-123"),
        (
            "{type: api_key, header: X-Api-Key, value_env: ACME_KEY}",
            {"ACME_KEY": "key-456"},
            "x-api-key",
            "key-456",
        ),
        (
            "{type: basic, username_env: ACME_USER, password_env: ACME_PASS}",
            {"ACME_USER": "svc", "ACME_PASS": "p:w"},
            "authorization",
            "Basic " + base64.b64encode(b"svc:p:w").decode(),
        ),
        ("none", {}, "authorization", None),
    ],
    ids=["bearer", "api_key", "basic", "none"],
)
async def test_each_auth_kind_sends_its_header_from_environment_variables(
    tmp_path, server, monkeypatch, auth, env, header, expected
):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    tools = await load(
        tmp_path,
        f"""
        tools:
          - name: acme.ping
            description: ping
            method: GET
            url: {server.url}/ping
            auth: {auth}
        """,
    )
    async with tools:
        assert await tools.tools["acme.ping"].call(call("acme.ping")) == {}
    assert server.requests[0].headers.get(header) == expected


POINTS_TOOL = """
tools:
  - name: acme.redeem
    description: redeem points
    method: POST
    url: {url}/customers/{{customer_id}}/redemptions
    writes: true
    retries: {retries}
    backoff_s: 0.01
    timeout_s: {timeout_s}
    arguments:
      points: {{type: integer, required: true, minimum: 100}}
      voucher: {{type: string, required: true, pattern: "[A-Z]{{3}}-[0-9]{{4}}"}}
      note: {{type: string, max_length: 20}}
    body:
      customer: {{id: customer_id}}
      points: points
      voucher: voucher
      note: note
    response:
      redemption_id: redemption.id
      remaining: balance.points
"""


async def points_tool(tmp_path: Path, server: Recorder, retries: int = 2, timeout_s: float = 5) -> RestToolSet:
    return await load(tmp_path, POINTS_TOOL.format(url=server.url, retries=retries, timeout_s=timeout_s))


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"points": "lots", "voucher": "ABC-1234"}, "points"),
        ({"points": 50, "voucher": "ABC-1234"}, "points"),
        ({"points": 200, "voucher": "ABC-1234 or ABC-1234"}, "voucher"),
        ({"points": 200, "voucher": "abc-12345"}, "voucher"),
        ({"points": 200}, "voucher"),
        ({"points": 200, "voucher": "ABC-1234", "customer_id": "someone-else"}, "customer_id"),
        ({"points": 200, "voucher": "ABC-1234", "note": "x" * 21}, "note"),
    ],
    ids=["bad-type", "below-minimum", "pattern-substring", "pattern", "missing", "extra-customer-id", "too-long"],
)
async def test_invalid_arguments_name_the_field_and_send_nothing(tmp_path, server, arguments, field):
    tools = await points_tool(tmp_path, server)
    async with tools:
        with pytest.raises(ToolError) as raised:
            await tools.tools["acme.redeem"].call(ToolCall("acme.redeem", arguments, "c-1", "idem-1"))
    assert raised.value.kind == "invalid"
    assert field in raised.value.message
    assert server.requests == [], "invalid arguments never reach the backend"


async def test_write_tool_sends_the_body_and_the_same_idempotency_key_on_every_retry(tmp_path, server):
    tools = await points_tool(tmp_path, server)
    path = "/customers/c-9/redemptions"
    server.fail(path, times=2, then=Reply(201, {"redemption": {"id": "r-1"}, "balance": {"points": 800}}))
    async with tools:
        result = await tools.tools["acme.redeem"].call(
            call("acme.redeem", customer_id="c-9", key="turn-42:redeem", points=200, voucher="ABC-1234")
        )
    assert result == {"redemption_id": "r-1", "remaining": 800}
    seen = server.to(path)
    assert len(seen) == 3, "two 503s, then success"
    assert {r.headers["idempotency-key"] for r in seen} == {"turn-42:redeem"}
    assert json.loads(seen[0].body) == {"customer": {"id": "c-9"}, "points": 200, "voucher": "ABC-1234"}


async def test_retries_run_out_on_persistent_5xx(tmp_path, server):
    tools = await points_tool(tmp_path, server, retries=2)
    server.fail("/customers/c-1/redemptions", times=10)
    async with tools:
        with pytest.raises(ToolError) as raised:
            await tools.tools["acme.redeem"].call(call("acme.redeem", points=200, voucher="ABC-1234"))
    assert raised.value.kind == "unavailable"
    assert len(server.requests) == 3, "retries: 2 means three attempts"


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid"),
        (422, "invalid"),
        (404, "not_found"),
        (401, "unavailable"),
        (403, "unavailable"),
        (409, "not_allowed"),
    ],
)
async def test_4xx_is_not_retried_and_maps_to_a_tool_error(tmp_path, server, caplog, status, kind):
    tools = await points_tool(tmp_path, server)
    server.reply("/customers/c-1/redemptions", then=Reply(status, {"error": "no"}))
    with caplog.at_level(logging.INFO, logger="connectors.backends.rest_tools"):
        async with tools:
            with pytest.raises(ToolError) as raised:
                await tools.tools["acme.redeem"].call(call("acme.redeem", points=200, voucher="ABC-1234"))
    assert raised.value.kind == kind
    assert len(server.requests) == 1, f"HTTP {status} is not retried"
    if status in (401, 403):
        loud = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert loud and "credentials" in loud[0].getMessage(), "a credentials problem is logged loudly"


async def test_429_is_retried(tmp_path, server):
    tools = await points_tool(tmp_path, server)
    path = "/customers/c-1/redemptions"
    server.reply(
        path,
        Reply(429, {}, headers={"Retry-After": "0"}),
        then=Reply(200, {"redemption": {"id": "r-2"}, "balance": {"points": 1}}),
    )
    async with tools:
        result = await tools.tools["acme.redeem"].call(call("acme.redeem", points=200, voucher="ABC-1234"))
    assert result["redemption_id"] == "r-2" and len(server.requests) == 2


async def test_a_timeout_is_retried_then_unavailable(tmp_path, server):
    tools = await points_tool(tmp_path, server, retries=1, timeout_s=0.2)
    server.reply("/customers/c-1/redemptions", then=Reply(200, {}, delay_s=1.0))
    async with tools:
        with pytest.raises(ToolError) as raised:
            await tools.tools["acme.redeem"].call(call("acme.redeem", points=200, voucher="ABC-1234"))
    assert raised.value.kind == "unavailable"
    assert len(server.requests) == 2


async def test_a_refused_connection_is_unavailable(tmp_path):
    tools = await load(
        tmp_path,
        f"""
        tools:
          - name: acme.down
            description: nobody listens
            method: GET
            url: http://127.0.0.1:{free_port()}/x
            retries: 1
            backoff_s: 0.01
        """,
    )
    async with tools:
        with pytest.raises(ToolError) as raised:
            await tools.tools["acme.down"].call(call("acme.down"))
    assert raised.value.kind == "unavailable"


async def test_response_mapping_follows_nested_paths_and_list_indexes(tmp_path, server):
    tools = await load(
        tmp_path,
        f"""
        tools:
          - name: acme.points
            description: points
            method: GET
            url: {server.url}/customers/{{customer_id}}/points
            response:
              points: data.balance
              tier: data.tier.name
              first_sku: data.items.0.sku
              second_sku: data.items.1.sku?
              expires: data.expiry?
        """,
    )
    answer = {"data": {"balance": 1200, "tier": {"name": "gold", "id": 3}, "items": [{"sku": "S-1"}], "pii": "x"}}
    server.reply("/customers/c-1/points", then=Reply(200, answer))
    async with tools:
        result = await tools.tools["acme.points"].call(call("acme.points"))
    assert result == {"points": 1200, "tier": "gold", "first_sku": "S-1", "second_sku": None, "expires": None}


async def test_a_missing_response_path_is_a_clear_error(tmp_path, server, caplog):
    tools = await load(
        tmp_path,
        f"""
        tools:
          - name: acme.points
            description: points
            method: GET
            url: {server.url}/p
            response: {{tier: data.tier.name}}
        """,
    )
    server.reply("/p", then=Reply(200, {"data": {"tier": {"id": 3}}}))
    async with tools:
        with pytest.raises(ToolError) as raised:
            await tools.tools["acme.points"].call(call("acme.points"))
    assert raised.value.kind == "unavailable"
    assert "data.tier.name" in raised.value.message and "tier" in raised.value.message
    assert any("data.tier.name" in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)


async def test_one_tool_set_reuses_one_connection(tmp_path, server):
    tools = await load(
        tmp_path,
        f"""
        tools:
          - {{name: acme.a, description: a, method: GET, url: "{server.url}/a"}}
          - {{name: acme.b, description: b, method: GET, url: "{server.url}/b"}}
        """,
    )
    async with tools:
        await tools.tools["acme.a"].call(call("acme.a"))
        await tools.tools["acme.b"].call(call("acme.b"))
        await tools.tools["acme.a"].call(call("acme.a"))
    assert len({r.client_port for r in server.requests}) == 1, "three calls, one TCP connection"
    assert tools.client.is_closed


# --- the file: errors at load, naming the file, the tool and the field ---


def load_error(tmp_path: Path, body: str) -> str:
    path = write_tools(tmp_path, body)
    with pytest.raises(RestToolsConfigError) as raised:
        load_rest_tools(path, environ={})
    message = str(raised.value)
    assert str(path) in message
    return message


def test_unknown_keys_are_refused_naming_tool_and_field(tmp_path):
    message = load_error(
        tmp_path,
        """
        tools:
          - name: acme.points
            description: points
            method: GET
            url: https://api.acme.test/p
            timeout: 5
        """,
    )
    assert "tool 'acme.points'" in message and "field timeout: unknown key" in message


def test_an_inline_secret_is_refused(tmp_path):
    message = load_error(
        tmp_path,
        """
        tools:
          - name: acme.points
            description: points
            method: GET
            url: https://api.acme.test/p
            auth: {type: bearer, token: sk-live-123}
        """,
    )
    assert "tool 'acme.points'" in message and "auth.token: unknown key" in message


def test_a_missing_secret_environment_variable_fails_at_load(tmp_path):
    message = load_error(
        tmp_path,
        """
        tools:
          - name: acme.points
            description: points
            method: GET
            url: https://api.acme.test/p
            auth: {type: bearer, token_env: ACME_TOKEN_NOT_SET}
        """,
    )
    assert "tool 'acme.points'" in message and "auth.token_env" in message and "ACME_TOKEN_NOT_SET" in message


@pytest.mark.parametrize(
    ("tool", "expected"),
    [
        ("url: https://api.acme.test/o/{order}", "url placeholder {order}"),
        ("url: https://{customer_id}.acme.test/o", "host without placeholders"),
        ("url: https://api.acme.test/o\n  arguments: {customer_id: {type: string}}", "customer_id always comes"),
        ("url: https://api.acme.test/o\n  arguments: {n: {type: integer, pattern: x}}", "field arguments.n"),
        ("url: https://api.acme.test/o\n  arguments: {n: {type: strin}}", "field arguments.n.type"),
        ("url: https://api.acme.test/o\n  arguments: {s: {type: string, pattern: '('}}", "not a valid regular"),
        ("url: https://api.acme.test/o\n  response: {tier: data..name}", "not a dotted path"),
        ("url: https://api.acme.test/o\n  body: {a: b}", "a GET tool has no body"),
        ("url: https://api.acme.test/o\n  retries: many", "field retries"),
    ],
)
def test_bad_tools_are_reported_with_their_name(tmp_path, tool, expected):
    body = "tools:\n- name: acme.bad\n  description: bad\n  method: GET\n  " + tool + "\n"
    message = load_error(tmp_path, body)
    assert "tool 'acme.bad'" in message and expected in message, message


def test_every_problem_is_reported_at_once(tmp_path):
    message = load_error(
        tmp_path,
        """
        tools:
          - {name: acme.one, description: x, method: GET, url: "https://a.test/x", extra: 1}
          - {name: acme.two, description: x, method: FETCH, url: "https://a.test/x"}
          - {name: acme.one, description: x, method: GET, url: "https://a.test/x"}
        """,
    )
    assert "tool 'acme.one': field extra" in message
    assert "tool 'acme.two': field method" in message
    assert "tool 'acme.one': name: declared twice" in message


def test_the_example_file_loads(monkeypatch):
    for name in ("ACME_TOKEN", "ACME_API_KEY", "ACME_USER", "ACME_PASSWORD"):
        monkeypatch.setenv(name, "x")
    tools = load_rest_tools(EXAMPLE)
    assert set(tools.tools) == {"acme.loyalty_points", "acme.order_items", "acme.redeem_points"}
    assert tools.tools["acme.redeem_points"].writes
    assert tools.tools["acme.redeem_points"].parameters["required"] == ["points", "reward"]

"""Who may see and answer what in the agent workspace, over HTTP and the WebSocket.

A real `supportflow workspace` process (the web app and the escalation router) runs against a
real tansu broker; escalations are produced onto `sf.escalations` the way `escalate` produces
them. Ana and Ben are agents of queue `general` with room for one conversation each; Sam is a
supervisor. Refund escalations go to queue `billing`, which neither agent serves.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import websockets

from connectors.kafka import consume_all, make_reader
from pipelines.devstack.embedded import EmbeddedBroker, free_port
from pipelines.handover.auth import Tokens
from schemas import utcnow
from tests.support.handover import WORKSPACE_PASSWORDS, escalation, workspace_agents_file
from tests.support.hostile import HOSTILE
from tests.support.stream import DEFAULT_TOPOLOGY, WorkerPool
from tests.support.stream import produce as produce_records

SECRET = "w" * 40
PASSWORDS = WORKSPACE_PASSWORDS
MAX_FAILURES = 4


@dataclass
class Workspace:
    url: str
    bootstrap: str
    ids: dict[str, str]  # ana / ben / billing / waiting -> escalation id

    def client(self, agent: str | None = None) -> httpx.Client:
        return sign_in(self.url, agent) if agent else httpx.Client(base_url=self.url, timeout=15)

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/workspace/ws"


def _wait_for(check: Any, timeout_s: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def module_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(log_file=tmp_path_factory.mktemp("broker") / "tansu.log") as started:
        yield started


@pytest.fixture(scope="module")
def workspace(module_broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    tmp = tmp_path_factory.mktemp("workspace")
    pool = WorkerPool(module_broker.bootstrap, tmp)
    pool.ensure_topics()
    port = free_port()
    env = {
        "SUPPORTFLOW_DATA_DIR": str(tmp / "data"),
        "SUPPORTFLOW_WORKSPACE_AGENTS_FILE": str(workspace_agents_file(tmp / "agents.yaml")),
        "SUPPORTFLOW_WORKSPACE_SECRET": SECRET,
        "SUPPORTFLOW_WORKSPACE_LOGIN_MAX_FAILURES": str(MAX_FAILURES),
        "SUPPORTFLOW_WORKSPACE_QUEUE_BY_SKILL": json.dumps({"refund": "billing"}),
    }
    pool._spawn("workspace", ["workspace", "--port", str(port)], DEFAULT_TOPOLOGY, True, env)
    url = f"http://127.0.0.1:{port}"
    try:
        clients = {name: sign_in(url, name) for name in ("ana", "ben", "sam")}
        for name in ("ana", "ben"):  # the presence call returns once the router applied it
            online = {"action_id": f"online-{name}-0001", "presence": "online"}
            assert clients[name].post("/workspace/api/presence", json=online).is_success
        # both online and free: the first goes to ana (equal load, then by id), the second to ben
        produce(module_broker.bootstrap, [escalation("x-ana", intent="track_order", created=utcnow())])
        _wait_for(lambda: "x-ana" in held(clients["ana"]), what="ana's assignment")
        produce(module_broker.bootstrap, [escalation("x-ben", intent="cancel_order", created=utcnow())])
        _wait_for(lambda: "x-ben" in held(clients["ben"]), what="ben's assignment")
        # both are full now: a general entry waits (both may read it), a refund waits in billing (neither)
        produce(module_broker.bootstrap, [escalation("x-waiting", intent="track_order", created=utcnow())])
        produce(module_broker.bootstrap, [escalation("x-billing", intent="get_refund", created=utcnow())])
        _wait_for(lambda: {"x-waiting", "x-billing"} <= set(queue(clients["sam"])), what="the waiting entries")
        ids = {"ana": "x-ana", "ben": "x-ben", "waiting": "x-waiting", "billing": "x-billing"}
        yield Workspace(url, module_broker.bootstrap, ids)
    finally:
        pool.stop_all()


def sign_in(url: str, agent: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=15)
    response = client.post("/workspace/api/login", json={"agent_id": agent, "password": PASSWORDS[agent]})
    assert response.status_code == 200, response.text
    return client


def queue(client: httpx.Client) -> dict[str, dict[str, Any]]:
    return {row["escalation_id"]: row for row in client.get("/workspace/api/queue").json()["entries"]}


def held(client: httpx.Client) -> set[str]:
    return {eid for eid, row in queue(client).items() if row["status"] == "assigned"}


def produce(bootstrap: str, records: list[Any]) -> None:
    produce_records(bootstrap, "sf.escalations", ((r.partition_key(), r.to_bytes()) for r in records))


def human_replies(bootstrap: str) -> list[dict[str, Any]]:
    """Every human-authored reply on sf.outbound so far."""
    reader = make_reader({"bootstrap.servers": bootstrap}, ["sf.outbound"], from_beginning=True)
    try:
        records = [json.loads(r.value) for r in consume_all(reader, idle_s=1.0, max_s=5.0) if r.value]
    finally:
        reader.close()
    return [r for r in records if r["author"] == "human"]


# --- HTTP ------------------------------------------------------------------------------------------


def test_every_route_needs_a_signed_in_agent(workspace):
    anonymous = workspace.client()
    for path in ("/workspace/api/queue", "/workspace/api/me", f"/workspace/api/entries/{workspace.ids['ana']}"):
        response = anonymous.get(path)
        assert response.status_code == 401 and response.json()["error"] == "sign in first", path
    reply = anonymous.post(f"/workspace/api/entries/{workspace.ids['ana']}/reply",
                           json={"action_id": "anon-00000001", "text": "hi"})  # fmt: skip
    assert reply.status_code == 401
    assert anonymous.get("/workspace").status_code == 200, "the page itself is public: it shows the sign-in form"


def test_login_failures_say_nothing_about_which_part_was_wrong(workspace):
    client = workspace.client()
    wrong = client.post("/workspace/api/login", json={"agent_id": "ben", "password": "not-his"})
    unknown = client.post("/workspace/api/login", json={"agent_id": "nobody", "password": "whatever"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"error": "unknown agent id or wrong password"}
    assert "set-cookie" not in wrong.headers
    malformed = client.post("/workspace/api/login", json={"agent_id": "ben"})
    assert malformed.status_code == 422 and "password" in malformed.json()["error"]


def test_an_agent_reads_and_answers_only_what_is_assigned_to_them(workspace):
    ana, ids = workspace.client("ana"), workspace.ids
    rows = queue(ana)
    assert ids["ana"] in rows and rows[ids["ana"]]["status"] == "assigned"
    assert ids["ben"] not in rows, "Ben's conversation is not in Ana's queue"
    assert ids["billing"] not in rows, "nor the waiting entries of a queue she does not serve"
    assert ids["waiting"] in rows, "the waiting entries of her own queue are"

    own = ana.get(f"/workspace/api/entries/{ids['ana']}")
    assert own.status_code == 200
    assert own.json()["entry"]["escalation"]["reason"] == "customer_requested_human"
    assert any(item["text"] == "I want a person" for item in own.json()["transcript"])

    for target in (ids["ben"], ids["billing"]):
        read = ana.get(f"/workspace/api/entries/{target}")
        assert read.status_code == 403 and "not assigned to you" in read.json()["error"], read.text
        attempts = [("reply", {"text": "I am Ana, reading your chat"}), ("approve", {}),
                    ("resolve", {"resolution_code": "resolved"}), ("transfer", {"to_agent": "ana"})]  # fmt: skip
        for verb, body in attempts:
            answer = ana.post(f"/workspace/api/entries/{target}/{verb}", json={"action_id": f"ana-{verb}-0001", **body})
            assert answer.status_code == 403, (verb, answer.text)

    waiting = ana.post(f"/workspace/api/entries/{ids['waiting']}/reply", json={"action_id": "ana-w-0001", "text": "hi"})
    assert waiting.status_code == 403 and "waiting in queue 'general'" in waiting.json()["error"]
    assert ana.get(f"/workspace/api/entries/{ids['waiting']}").status_code == 200, "but she may read it"

    sent = ana.post(f"/workspace/api/entries/{ids['ana']}/reply", json={"action_id": "ana-own-0001", "text": "Hello!"})
    assert sent.status_code == 200, sent.text
    again = ana.post(f"/workspace/api/entries/{ids['ana']}/reply", json={"action_id": "ana-own-0001", "text": "Hello!"})
    assert again.json()["reply_id"] == sent.json()["reply_id"], "a retried action has the same reply id"
    replies = _wait_for(lambda: human_replies(workspace.bootstrap), what="the human reply on sf.outbound")
    ana_customer = f"web-{ids['ana']}"
    assert {(r["recipient"], r["text"]) for r in replies} == {(ana_customer, "Hello!")}, (
        "only Ana's reply to her own customer left; the refused ones produced nothing"
    )


def test_a_supervisor_sees_everything_and_a_bearer_token_works_like_the_cookie(workspace):
    sam = workspace.client("sam")
    token = sam.cookies.get("sf_workspace")
    assert token, "the sign-in set the cookie"
    cookie = sam.cookies.jar
    assert all(c.has_nonstandard_attr("HttpOnly") for c in cookie), "the cookie is HttpOnly"
    bearer = httpx.Client(base_url=workspace.url, headers={"authorization": f"Bearer {token}"}, timeout=15)
    rows = {r["escalation_id"] for r in bearer.get("/workspace/api/queue").json()["entries"]}
    assert set(workspace.ids.values()) <= rows
    assert bearer.get(f"/workspace/api/entries/{workspace.ids['ben']}").status_code == 200


def test_expired_and_foreign_tokens_are_refused(workspace):
    expired = Tokens(SECRET.encode()).issue("ana", now=time.time() - 3600, ttl_s=60)
    foreign = Tokens(b"another-secret-of-at-least-32-bytes!!").issue("ana")
    for token, words in ((expired, "expired"), (foreign, "not valid"), ("not-a-jwt", "not valid")):
        client = httpx.Client(base_url=workspace.url, cookies={"sf_workspace": token}, timeout=15)
        response = client.get("/workspace/api/queue")
        assert response.status_code == 401 and words in response.json()["error"], (words, response.text)

        async def socket(token: str = token) -> tuple[dict[str, Any], int | None]:
            async with websockets.connect(workspace.ws_url) as ws:
                await ws.send(json.dumps({"type": "auth", "token": token}))
                frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                with pytest.raises(websockets.ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 10)
                return frame, ws.close_code

        frame, code = asyncio.run(socket())
        assert frame["type"] == "error" and frame["status"] == 401 and words in frame["error"] and code == 4401


# --- WebSocket -------------------------------------------------------------------------------------


def test_the_websocket_shows_and_answers_only_what_the_agent_may_see(workspace):
    ids = workspace.ids
    token = workspace.client("ana").cookies.get("sf_workspace")

    async def session() -> None:
        async with websockets.connect(workspace.ws_url) as ws:
            await ws.send(json.dumps({"type": "auth", "token": token}))
            welcome = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert welcome["type"] == "welcome" and welcome["agent"]["agent_id"] == "ana"
            shown = {row["escalation_id"] for row in welcome["entries"]}
            assert ids["ana"] in shown and ids["waiting"] in shown
            assert not shown & {ids["ben"], ids["billing"]}

            async def ask(frame: dict[str, Any]) -> dict[str, Any]:
                await ws.send(json.dumps(frame))
                while True:
                    answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    if answer.get("request_id") == frame.get("request_id"):
                        return answer

            opened = await ask({"type": "open", "escalation_id": ids["ana"], "request_id": "r1"})
            assert opened["type"] == "result" and opened["result"]["entry"]["escalation_id"] == ids["ana"]
            for n, frame in enumerate([
                {"type": "open", "escalation_id": ids["ben"]},
                {"type": "reply", "escalation_id": ids["ben"], "action_id": "ws-ana-00001", "text": "peek"},
                {"type": "resolve", "escalation_id": ids["billing"], "action_id": "ws-ana-00002",
                 "resolution_code": "resolved"},
                {"type": "reply", "escalation_id": ids["waiting"], "action_id": "ws-ana-00003", "text": "mine?"},
            ]):  # fmt: skip
                refused = await ask({**frame, "request_id": f"bad-{n}"})
                assert refused["type"] == "error" and refused["status"] == 403, refused
            broken = await ask({"type": "reply", "escalation_id": ids["ana"], "request_id": "r2"})
            assert broken["type"] == "error" and broken["status"] == 422

    asyncio.run(session())
    refused_texts = {"peek", "mine?"}
    assert not refused_texts & {r["text"] for r in human_replies(workspace.bootstrap)}


def test_hostile_bodies_and_frames_get_a_clear_4xx_and_send_nothing(workspace):
    """An agent's reply holding U+0000 would reach the customer and stop the conversation store's sink."""
    before = len(human_replies(workspace.bootstrap))
    cases = [case for case in HOSTILE if case.name != "empty"]  # an empty body is {} here, refused by validation
    template = b'{"action_id": "hostile-00001", "text": __TEXT__}'
    ana = workspace.client("ana")
    answers = {}
    for case in cases:
        response = ana.post(
            f"/workspace/api/entries/{workspace.ids['ana']}/reply",
            content=case.body(lambda text: template.replace(b"__TEXT__", text)),
            headers={"content-type": "application/json"},
        )
        answers[case.name] = (response.status_code, case.says in response.json()["error"])
    assert answers == {case.name: (case.status, True) for case in cases}

    async def session() -> dict[str, tuple[int, bool]]:
        frames = {}
        cookie = {"cookie": f"sf_workspace={ana.cookies.get('sf_workspace')}"}
        async with websockets.connect(workspace.ws_url, additional_headers=cookie) as ws:
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "welcome"
            for case in cases:
                body = case.body(lambda text: template.replace(b"__TEXT__", text))
                try:
                    await ws.send(body.decode("utf-8"))
                except UnicodeDecodeError:
                    await ws.send(body)  # not UTF-8: only a binary frame can carry it
                answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
                while answer["type"] != "error":
                    answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
                frames[case.name] = (answer["status"], case.says in answer["error"])
            await ws.send(json.dumps({"type": "ping", "request_id": "still-there"}))
            answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
            while answer["type"] != "pong":
                answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
        return frames

    assert asyncio.run(session()) == {case.name: (case.status, True) for case in cases}
    assert len(human_replies(workspace.bootstrap)) == before, "no refused reply was sent"


def test_a_socket_whose_token_expires_is_closed_on_its_next_frame(workspace):
    short = Tokens(SECRET.encode()).issue("ana", ttl_s=2)

    async def session() -> tuple[dict[str, Any], int | None]:
        async with websockets.connect(workspace.ws_url, additional_headers={"cookie": f"sf_workspace={short}"}) as ws:
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "welcome"
            await asyncio.sleep(3.2)
            await ws.send(json.dumps({"type": "open", "escalation_id": workspace.ids["ana"], "request_id": "late"}))
            frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
            while frame["type"] not in ("error", "result"):
                frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            return frame, ws.close_code

    frame, code = asyncio.run(session())
    assert frame["status"] == 401 and "expired" in frame["error"] and code == 4401


def test_a_cross_site_socket_or_post_is_refused(workspace):
    ana = workspace.client("ana")
    response = ana.post("/workspace/api/presence", json={"action_id": "xsite-00001", "presence": "away"},
                        headers={"origin": "http://evil.example"})  # fmt: skip
    assert response.status_code == 403
    form = ana.post("/workspace/api/presence", content="presence=away", headers={"content-type": "text/plain"})
    assert form.status_code == 415

    async def session() -> int | None:
        headers = {"cookie": f"sf_workspace={ana.cookies.get('sf_workspace')}"}
        with pytest.raises(websockets.InvalidStatus):
            async with websockets.connect(workspace.ws_url, additional_headers=headers, origin="http://evil.example"):
                pass
        return None

    asyncio.run(session())


def test_feedback_transfer_and_resolve_by_the_assigned_agent(workspace):
    """Runs late in the module: it resolves Ana's conversation."""
    ana, ids = workspace.client("ana"), workspace.ids
    url = f"/workspace/api/entries/{ids['ana']}"
    corrected = ana.post(f"{url}/correct-intent", json={"action_id": "ana-intent-0001", "message_id": "m-x-ana",
                                                          "corrected_intent": "get_refund"})  # fmt: skip
    assert corrected.status_code == 200, corrected.text
    unknown = ana.post(f"{url}/correct-intent", json={"action_id": "ana-intent-0002", "message_id": "m-x-ana",
                                                        "corrected_intent": "make_coffee"})  # fmt: skip
    assert unknown.status_code == 422 and "unknown intent" in unknown.json()["error"]
    not_ai = ana.post(f"{url}/rate", json={"action_id": "ana-rate-0001", "message_id": "m-x-ana", "rating": 2})
    assert not_ai.status_code == 422 and "AI agent's replies" in not_ai.json()["error"]
    full = ana.post(f"{url}/transfer", json={"action_id": "ana-transfer-01", "to_agent": "ben", "warm": True})
    assert full.status_code == 409 and "capacity" in full.json()["error"], "the router's refusal comes back"
    bad_code = ana.post(f"{url}/resolve", json={"action_id": "ana-resolve-01", "resolution_code": "whatever"})
    assert bad_code.status_code == 422
    resolved = ana.post(f"{url}/resolve", json={"action_id": "ana-resolve-02", "resolution_code": "resolved"})
    assert resolved.status_code == 200, resolved.text
    assert ana.get(url).status_code == 403, "resolved, it is no longer hers to read"

    reader = make_reader({"bootstrap.servers": workspace.bootstrap}, ["sf.feedback"], from_beginning=True)
    try:
        feedback = [json.loads(r.value) for r in consume_all(reader, idle_s=1.0, max_s=5.0) if r.value]
    finally:
        reader.close()
    by_kind = {f["kind"]: f for f in feedback}
    assert set(by_kind) == {"intent_correction", "resolution"}, "refused actions left no feedback"
    assert by_kind["intent_correction"]["original_intent"] == "track_order"
    assert by_kind["intent_correction"]["corrected_intent"] == "get_refund"
    assert by_kind["resolution"]["resolution_code"] == "resolved" and by_kind["resolution"]["agent_id"] == "ana"
    assert by_kind["resolution"]["first_response_s"] is not None, "Ana answered before she resolved"


def test_an_attack_from_many_addresses_gets_429s_and_does_not_lock_the_agent_out(workspace):
    """Ben signs in from his desk; 50 wrong passwords for him from 50 other addresses; he still signs in there.

    The addresses come in X-Forwarded-For, which uvicorn takes from a proxy on 127.0.0.1 (its default).
    """
    desk = {"x-forwarded-for": "198.51.100.7"}
    client = workspace.client()
    right = {"agent_id": "ben", "password": PASSWORDS["ben"]}
    assert client.post("/workspace/api/login", json=right, headers=desk).status_code == 200
    attempts = [
        client.post(
            "/workspace/api/login",
            json={"agent_id": "ben", "password": f"guess-{n}"},
            headers={"x-forwarded-for": f"203.0.113.{n}"},
        )
        for n in range(50)
    ]
    codes = [a.status_code for a in attempts]
    assert set(codes) == {401, 429} and codes.count(429) >= 20, codes
    assert all(int(a.headers["retry-after"]) >= 1 for a in attempts if a.status_code == 429)
    again = client.post("/workspace/api/login", json=right, headers=desk)
    assert again.status_code == 200, f"the attack locked ben out: {again.text}"


def test_too_many_failed_logins_pause_that_agent_from_that_address_only(workspace):
    """Last in the module: it pauses sam at 127.0.0.1."""
    client = workspace.client()
    codes = [
        client.post("/workspace/api/login", json={"agent_id": "sam", "password": f"guess-{n}"}).status_code
        for n in range(MAX_FAILURES + 1)
    ]
    assert codes == [401] * MAX_FAILURES + [429], codes
    paused = client.post("/workspace/api/login", json={"agent_id": "sam", "password": PASSWORDS["sam"]})
    assert paused.status_code == 429, "even the right password waits until the window has passed"
    assert "too many failed sign-ins" in paused.json()["error"] and int(paused.headers["retry-after"]) > 0
    elsewhere = client.post(
        "/workspace/api/login",
        json={"agent_id": "sam", "password": PASSWORDS["sam"]},
        headers={"x-forwarded-for": "192.0.2.50"},
    )
    assert elsewhere.status_code == 200, "a guesser at one address cannot lock sam out of another"

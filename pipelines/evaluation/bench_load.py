"""The load `supportflow bench` offers: customers, their conversations, and clients that speak to the ingress
as real ones do.

Conversations come from `data/bench_conversations.yaml`. Each gets a customer of its own (seeded in
the commerce backend with the orders its texts name, so playbook turns reach PostgreSQL) and a
channel: the web chat over a WebSocket signed in with a customer token, the app backend's REST call
with an API key, or a Twilio webhook signed with the account's auth token. A turn is sent only after
the answer to the previous one is on `sf.outbound` or `sf.escalations`, read by one consumer here;
latency is from the moment a turn is handed to the HTTP client to the moment its answer is read.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from confluent_kafka import Consumer
from twilio.request_validator import RequestValidator

from connectors.backends.commerce.seed import PRODUCTS, KnownCustomer, KnownOrder
from connectors.kafka import make_reader
from schemas import ContactAddress, CustomerProfile

MIX_FILE = Path(__file__).parent / "data" / "bench_conversations.yaml"
ORDER_STATES = ("pending", "processing", "shipped", "delivered")
FIRST_ORDER = 1_100_000  # below the generated seed's 3,000,000-9,999,999 and apart from the known 1000001-2000005
FIRST_CUSTOMER = 100_000  # C100000 on: the seed's customers are C000001-C00xxxx
TWILIO_NUMBER = "+15550000000"
BENCH_API_KEY_SCOPES = ["messages:write", "customers:act"]


@dataclass(frozen=True)
class Script:
    """One kind of conversation: its turns, each a list of phrasings ("" ends the conversation early)."""

    name: str
    weight: int
    turns: tuple[tuple[str, ...], ...]
    writes: str | None = None


@dataclass(frozen=True)
class Mix:
    channels: dict[str, int]
    scripts: tuple[Script, ...]
    sha256: str
    path: str

    def describe(self) -> dict[str, Any]:
        """What the JSON records about the texts: file, hash, shares, and how many phrasings."""
        total = sum(s.weight for s in self.scripts)
        return {
            "file": self.path,
            "sha256": self.sha256,
            "channels_percent": dict(self.channels),
            "conversations_percent": {s.name: round(100 * s.weight / total, 1) for s in self.scripts},
            "distinct_phrasings": sum(len(t) for s in self.scripts for t in s.turns),
        }


def load_mix(path: Path = MIX_FILE) -> Mix:
    raw = path.read_bytes()
    data = yaml.safe_load(raw)
    scripts = tuple(
        Script(
            name=entry["name"],
            weight=int(entry["weight"]),
            turns=tuple(tuple(t) if isinstance(t, list) else (t,) for t in entry["turns"]),
            writes=entry.get("writes"),
        )
        for entry in data["conversations"]
    )
    try:
        shown = str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        shown = str(path)
    return Mix({k: int(v) for k, v in data["channels"].items()}, scripts, hashlib.sha256(raw).hexdigest()[:16], shown)


@dataclass
class Conversation:
    index: int
    channel: str
    script: str
    texts: list[str]
    customer: KnownCustomer
    writes: str | None = None

    @property
    def customer_id(self) -> str:
        return self.customer.customer_id

    @property
    def phone(self) -> str:
        return self.customer.phone


def bench_customer(index: int, needs: Sequence[str]) -> KnownCustomer:
    """Customer C<FIRST_CUSTOMER + index>, one order in each state its texts name (numbers fixed by the index)."""
    sku = PRODUCTS[index % len(PRODUCTS)][0]
    orders = []
    for state in needs:
        number = str(FIRST_ORDER + 4 * index + ORDER_STATES.index(state))
        if state == "shipped":
            orders.append(KnownOrder(number, state, ((sku, 1),), 3, carrier="UPS", tracking_number=f"1ZBENCH{number}"))
        elif state == "delivered":
            orders.append(
                KnownOrder(number, state, ((sku, 2),), 6, carrier="UPS", tracking_number=f"1ZBD{number}",
                           delivered_days_ago=3)
            )  # fmt: skip
        else:
            orders.append(KnownOrder(number, state, ((sku, 1),), 0.1 if state == "pending" else 1))
    return KnownCustomer(
        customer_id=f"C{FIRST_CUSTOMER + index:06d}",
        name=f"Bench Customer {index}",
        email=f"bench.{index}@example.com",
        phone=f"+1555{index:07d}",
        zip=f"{10000 + index % 89999:05d}",
        tier="standard",
        currency="USD",
        street=f"{index % 900 + 1} Bench St",
        city="Springfield",
        country="US",
        payment_methods=(("card", "Visa •••• 1111"),),
        orders=tuple(orders),
    )


def plan(mix: Mix, messages: int, extra_conversations: int, seed: int, first_index: int) -> list[Conversation]:
    """Conversations whose turns add up to at least `messages`, plus `extra_conversations` for the clients
    still starting one when the budget runs out; phrasings, scripts and channels drawn from `seed`."""
    rng = random.Random(seed)
    channels, channel_weights = zip(*mix.channels.items(), strict=True)
    out: list[Conversation] = []

    def draw(index: int) -> Conversation:
        script = rng.choices(mix.scripts, weights=[s.weight for s in mix.scripts])[0]
        texts = []
        for phrasings in script.turns:
            text = rng.choice(phrasings)
            if not text:
                break
            texts.append(text)
        joined = " ".join(texts)
        customer = bench_customer(index, [state for state in ORDER_STATES if "{" + state + "}" in joined])
        values = {order.status: order.number for order in customer.orders}
        values |= {
            "email": customer.email,
            "zip": customer.zip,
            "new_address": f"{index % 97 + 2} Harbor Road, Oakland, {94600 + index % 20}, US",
        }
        channel = rng.choices(channels, weights=channel_weights)[0]
        return Conversation(index, channel, script.name, [t.format(**values) for t in texts], customer, script.writes)

    turns = 0
    while turns < messages:
        out.append(draw(first_index + len(out)))
        turns += len(out[-1].texts)
    for _ in range(extra_conversations):
        out.append(draw(first_index + len(out)))
    return out


def profiles_of(conversations: Sequence[Conversation]) -> list[CustomerProfile]:
    """What the shop publishes so the workers know whose phone a Twilio message comes from."""
    return [
        CustomerProfile(
            customer_id=c.customer_id,
            display_name=c.customer.name,
            contacts=[ContactAddress(channel=c.channel, address=c.phone)],  # type: ignore[arg-type]
        )
        for c in conversations
        if c.channel in ("sms", "whatsapp")
    ]


# ---- answers --------------------------------------------------------------------------------------


class Answers:
    """Reads `sf.outbound` and `sf.escalations` from their end in a thread; `wait(message_id)` is the first
    answer's (perf_counter time, kind). One batch of records is handed to the loop at a time."""

    def __init__(self, conf: dict[str, Any], fetch_max_wait_ms: int = 10) -> None:
        self._consumer: Consumer = make_reader(
            conf, ["sf.outbound", "sf.escalations"], from_beginning=False, fetch_max_wait_ms=fetch_max_wait_ms
        )
        self._waiting: dict[str, asyncio.Future[tuple[float, str]]] = {}
        self._early: dict[str, tuple[float, str]] = {}
        self._closed = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.answer_times: list[float] = []

    def wait_assigned(self, timeout_s: float = 30.0) -> None:
        """Reading from the end means from where the assignment lands: be assigned before the first send."""
        deadline = time.monotonic() + timeout_s
        while not self._consumer.assignment():
            self._consumer.poll(0.1)
            if time.monotonic() > deadline:
                raise TimeoutError("the answer reader got no partitions of sf.outbound/sf.escalations")

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="bench-answers", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self._loop is not None
        while not self._closed.is_set():
            batch = self._consumer.consume(num_messages=1000, timeout=0.1)
            now = time.perf_counter()
            found = []
            for msg in batch:
                if msg.error() or msg.value() is None:
                    continue
                data = json.loads(msg.value())
                if msg.topic() == "sf.escalations":
                    found.append((data.get("message_id"), "escalation"))
                else:
                    found.append((data.get("in_reply_to"), "reply"))
            if found:
                self._loop.call_soon_threadsafe(self._deliver, found, now)
        self._consumer.close()

    def _deliver(self, found: list[tuple[str | None, str]], at: float) -> None:
        for message_id, kind in found:
            if message_id is None:
                continue
            future = self._waiting.pop(message_id, None)
            if future is not None and not future.done():
                future.set_result((at, kind))
                self.answer_times.append(at)
            elif future is None and message_id not in self._early:
                self._early[message_id] = (at, kind)  # the answer beat the HTTP response home

    def expect(self, message_id: str) -> asyncio.Future[tuple[float, str]]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[float, str]] = loop.create_future()
        early = self._early.pop(message_id, None)
        if early is not None:
            future.set_result(early)
            self.answer_times.append(early[0])
        else:
            self._waiting[message_id] = future
        return future

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


# ---- clients ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """What real clients hold: the app backend's API key, the Twilio auth token, the shop's customer-token key."""

    api_key: str
    twilio_auth_token: str
    customer_token_secret: str


class Turned(Exception):
    """A turn the ingress refused (status and body kept for the results)."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:200]}")
        self.status = status


class ChannelClients:
    """One aiohttp session (keep-alive connection pool) for every channel; a WebSocket per web chat."""

    def __init__(self, base_url: str, credentials: Credentials, run: str, connections: int) -> None:
        from connectors.channels.session_tokens import CustomerTokens

        self.base_url = base_url
        self.run = run
        self.credentials = credentials
        self._tokens = CustomerTokens(credentials.customer_token_secret.encode())
        self._validator = RequestValidator(credentials.twilio_auth_token)
        self._twilio_url = f"{base_url}/webhooks/twilio/messages"
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections, keepalive_timeout=60),
            timeout=aiohttp.ClientTimeout(total=60),
        )
        self._sockets: dict[int, tuple[aiohttp.ClientWebSocketResponse, asyncio.Queue[str], asyncio.Task[None]]] = {}

    async def send(self, conversation: Conversation, turn: int, text: str) -> str:
        """Hand one turn to the ingress; returns the message id the answer will name."""
        if conversation.channel == "webchat":
            return await self._webchat(conversation, turn, text)
        send = self._twilio if conversation.channel in ("sms", "whatsapp") else self._rest
        try:
            return await send(conversation, turn, text)
        except aiohttp.ServerDisconnectedError:
            # the server closed an idle keep-alive connection as this request went out on it; a real
            # client sends again, and the message id (or Twilio's MessageSid) makes it the same message
            return await send(conversation, turn, text)

    async def _rest(self, conversation: Conversation, turn: int, text: str) -> str:
        message_id = f"{self.run}-{conversation.index}-{turn}"
        body = {
            "channel": conversation.channel,
            "sender": f"app-{conversation.customer_id}",
            "customer_id": conversation.customer_id,
            "text": text,
            "message_id": message_id,
        }
        headers = {"Authorization": f"Bearer {self.credentials.api_key}"}
        async with self._session.post(f"{self.base_url}/v1/messages", json=body, headers=headers) as response:
            if response.status != 202:
                raise Turned(response.status, await response.text())
            await response.read()
        return message_id

    async def _twilio(self, conversation: Conversation, turn: int, text: str) -> str:
        sid = "SM" + hashlib.md5(f"{self.run}-{conversation.index}-{turn}".encode()).hexdigest()
        sender = conversation.phone if conversation.channel == "sms" else f"whatsapp:{conversation.phone}"
        to = TWILIO_NUMBER if conversation.channel == "sms" else f"whatsapp:{TWILIO_NUMBER}"
        form = {"MessageSid": sid, "AccountSid": "ACbench", "From": sender, "To": to, "Body": text, "NumMedia": "0"}
        signature = self._validator.compute_signature(self._twilio_url, form)
        async with self._session.post(self._twilio_url, data=form, headers={"X-Twilio-Signature": signature}) as r:
            if r.status != 200:
                raise Turned(r.status, await r.text())
            await r.read()
        return f"tw-{sid}"

    async def _webchat(self, conversation: Conversation, turn: int, text: str) -> str:
        if conversation.index not in self._sockets:
            await self._open_chat(conversation)
        ws, acks, _ = self._sockets[conversation.index]
        client_message_id = f"{self.run}-{conversation.index}-{turn}"
        await ws.send_json({"type": "message", "text": text, "client_message_id": client_message_id})
        message_id = await asyncio.wait_for(acks.get(), timeout=30)
        if not message_id:
            raise Turned(400, "the web chat answered the message with an error frame")
        return message_id

    async def _open_chat(self, conversation: Conversation) -> None:
        ws = await self._session.ws_connect(f"{self.base_url.replace('http', 'ws', 1)}/v1/chat")
        token = self._tokens.mint(conversation.customer_id, ttl_s=3600)
        await ws.send_json({"type": "hello", "customer_token": token})
        welcome = await ws.receive_json(timeout=30)
        if welcome.get("type") != "welcome":
            await ws.close()
            raise Turned(403, json.dumps(welcome))
        acks: asyncio.Queue[str] = asyncio.Queue()

        async def frames() -> None:
            # the socket also carries the replies (the widget shows them); the answer times come from the
            # topic for every channel alike, so here they are only read off the socket
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                frame = json.loads(message.data)
                if frame.get("type") == "ack":
                    acks.put_nowait(frame["message_id"])
                elif frame.get("type") == "error":
                    acks.put_nowait("")

        self._sockets[conversation.index] = (ws, acks, asyncio.create_task(frames()))

    async def finish(self, conversation: Conversation) -> None:
        held = self._sockets.pop(conversation.index, None)
        if held is not None:
            ws, _, reader = held
            await ws.close()
            reader.cancel()

    async def close(self) -> None:
        for index in list(self._sockets):
            ws, _, reader = self._sockets.pop(index)
            await ws.close()
            reader.cancel()
        await self._session.close()


# ---- driving ---------------------------------------------------------------------------------------


@dataclass
class Turn:
    conversation: int
    script: str
    channel: str
    turn: int
    sent_at: float
    accepted_ms: float | None = None
    answered_at: float | None = None
    kind: str | None = None
    error: str | None = None

    @property
    def latency_ms(self) -> float | None:
        return None if self.answered_at is None else (self.answered_at - self.sent_at) * 1000.0


@dataclass
class Driven:
    turns: list[Turn] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0
    conversations_started: int = 0
    answer_times: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Asked:
    """One question asked alone over web chat and what came back (reply or escalation) after how long."""

    text: str
    message_id: str
    latency_ms: float
    kind: str


async def ask_one_at_a_time(
    base_url: str,
    credentials: Credentials,
    kafka_conf: dict[str, Any],
    questions: Sequence[str],
    *,
    run: str,
    timeout_s: float = 120.0,
    on_answer: Callable[[Asked], None] | None = None,
) -> list[Asked]:
    """Each question as the opening of a new web chat conversation, the next only once the last was
    answered: the latency of one turn on an otherwise idle stack, from the send to its answer on
    `sf.outbound` or `sf.escalations`."""
    answers = Answers(kafka_conf)
    answers.wait_assigned()
    answers.start(asyncio.get_running_loop())
    # each question's web chat socket stays open, and holds one of the pool's connections
    clients = ChannelClients(base_url, credentials, run=run, connections=len(questions) + 4)
    asked: list[Asked] = []
    try:
        for i, text in enumerate(questions):
            conversation = Conversation(index=i, channel="webchat", script="knowledge", texts=[text],
                                        customer=bench_customer(i, []))  # fmt: skip
            sent = time.perf_counter()
            message_id = await clients.send(conversation, 0, text)
            at, kind = await asyncio.wait_for(answers.expect(message_id), timeout=timeout_s)
            asked.append(Asked(text, message_id, (at - sent) * 1000.0, kind))
            if on_answer is not None:
                on_answer(asked[-1])
    finally:
        await clients.close()
        answers.close()
    return asked


class _Pacer:
    """Send slots at `rate`/s (open loop); a turn waiting for one gets it, else a new conversation starts."""

    def __init__(self, rate: float, total: int, start_conversation: Callable[[], bool]) -> None:
        self.rate = rate
        self.total = total
        self.start_conversation = start_conversation
        self.waiting: collections.deque[asyncio.Future[bool]] = collections.deque()
        self.done = False

    async def slot(self) -> bool:
        if self.done:  # every slot is given: a conversation still waiting for an answer sends no more
            return False
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        return await future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for k in range(self.total):
            delay = t0 + k / self.rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.waiting:
                self.waiting.popleft().set_result(True)
            elif not self.start_conversation():
                break
        self.done = True
        while self.waiting:
            self.waiting.popleft().set_result(False)


async def drive(
    base_url: str,
    conf: dict[str, Any],
    credentials: Credentials,
    conversations: Sequence[Conversation],
    messages: int,
    rate: float | None,
    concurrency: int,
    on_answer: Callable[[], None] = lambda: None,
    answer_timeout_s: float = 60.0,
) -> Driven:
    """Play `messages` turns: at most `concurrency` conversations at once, as fast as answers come
    (rate None), or paced at `rate` turns/s with as many conversations as that takes."""
    run = f"b{uuid.uuid4().hex[:8]}"
    answers = Answers(conf)
    await asyncio.to_thread(answers.wait_assigned)
    answers.start(asyncio.get_running_loop())
    clients = ChannelClients(base_url, credentials, run, connections=min(concurrency, 256))
    result = Driven()
    pending: Iterator[Conversation] = iter(conversations)
    budget = [messages]
    tasks: set[asyncio.Task[None]] = set()

    def take() -> bool:
        if budget[0] <= 0:
            return False
        budget[0] -= 1
        return True

    async def converse(conversation: Conversation, first_slot_taken: bool, slot: Callable[[], Any]) -> None:
        result.conversations_started += 1
        try:
            for number, text in enumerate(conversation.texts):
                if not (first_slot_taken and number == 0) and not await slot():
                    return
                turn = Turn(conversation.index, conversation.script, conversation.channel, number, time.perf_counter())
                result.turns.append(turn)
                try:
                    message_id = await clients.send(conversation, number, text)
                except (Turned, aiohttp.ClientError, TimeoutError) as exc:
                    turn.error = str(exc) or type(exc).__name__
                    return
                turn.accepted_ms = (time.perf_counter() - turn.sent_at) * 1000.0
                try:
                    turn.answered_at, turn.kind = await asyncio.wait_for(answers.expect(message_id), answer_timeout_s)
                except TimeoutError:
                    turn.error = f"no answer within {answer_timeout_s:.0f}s"
                    return
                on_answer()
                if turn.kind == "escalation":
                    return  # a human has the conversation now: the agent's part is over
        finally:
            await clients.finish(conversation)

    result.started = time.perf_counter()
    try:
        if rate is None:

            async def client() -> None:
                for conversation in pending:
                    if budget[0] <= 0:
                        return
                    await converse(conversation, False, lambda: asyncio.sleep(0, take()))

            await asyncio.gather(*(client() for _ in range(concurrency)))
        else:

            def start_conversation() -> bool:
                conversation = next(pending, None)
                if conversation is None:
                    return False
                task = asyncio.create_task(converse(conversation, True, pacer.slot))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                return True

            pacer = _Pacer(rate, messages, start_conversation)
            await pacer.run()
            if tasks:
                await asyncio.gather(*tasks)
    finally:
        result.finished = time.perf_counter()
        await clients.close()
        answers.close()
    result.answer_times = sorted(answers.answer_times)
    return result

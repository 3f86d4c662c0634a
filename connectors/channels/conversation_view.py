"""What the ingress shows of conversations: messages, replies and escalations, as they happen.

Fed from `sf.messages`, `sf.outbound` and `sf.escalations`; deduplicated by record id, so a
reply replayed after a worker crash is shown (and delivered) once. In memory and bounded: the
durable conversation store is Postgres (the data-layer issue).

`sf.reply.stream`'s chunks (a web chat reply while a model writes it) are passed on to the
sessions of their recipient and kept nowhere: `add_chunk` drops a chunk whose reply (or
escalation) is already here, and a repeated or out-of-order one of the same generation.

Who may read what is the gateway's to decide (connectors/channels/http_api.py): an API key with
`conversations:read` reads a whole conversation; a web chat session's own token reads only
`sender_items` of that session.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

from schemas import Escalation, Message, OutboundMessage, ReplyChunk

Kind = Literal["message", "reply", "escalation"]


@dataclass(frozen=True)
class ViewItem:
    kind: Kind
    id: str
    conversation_id: str
    in_reply_to: str | None
    record: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.id, "in_reply_to": self.in_reply_to, **self.record}

    def belongs_to(self, sender: str) -> bool:
        """An item of this sender: its message, or an answer addressed to it."""
        return (self.record.get("sender") if self.kind == "message" else self.record.get("recipient")) == sender


@dataclass
class _Conversation:
    items: list[ViewItem] = field(default_factory=list)
    subscribers: set[asyncio.Queue[ViewItem]] = field(default_factory=set)


class ConversationView:
    def __init__(self, max_conversations: int = 10_000, max_items: int = 200) -> None:
        self._conversations: OrderedDict[str, _Conversation] = OrderedDict()
        self._answers: OrderedDict[str, ViewItem] = OrderedDict()
        self._escalations: OrderedDict[str, ViewItem] = OrderedDict()
        self._waiters: dict[str, list[asyncio.Future[ViewItem]]] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._sender_conversation: OrderedDict[str, str] = OrderedDict()
        self._sender_subscribers: dict[str, set[asyncio.Queue[ViewItem | ReplyChunk]]] = {}
        self._streams: OrderedDict[str, tuple[str, int]] = OrderedDict()  # reply_to -> (generation, last seq)
        self.max_conversations, self.max_items = max_conversations, max_items

    def add(self, item: ViewItem) -> bool:
        """Record an item once; return False for a duplicate id."""
        if item.id in self._seen:
            return False
        self._remember(self._seen, item.id, None, self.max_conversations * 10)
        conversation = self._conversations.get(item.conversation_id) or _Conversation()
        self._remember(self._conversations, item.conversation_id, conversation, self.max_conversations)
        conversation.items = [*conversation.items, item][-self.max_items :]
        for queue in conversation.subscribers:
            queue.put_nowait(item)
        if item.in_reply_to and item.kind != "message":
            self._remember(self._answers, item.in_reply_to, item, self.max_conversations * 10)
            self._streams.pop(item.in_reply_to, None)  # its preview is over: later chunks are dropped
            if item.kind == "escalation":
                self._remember(self._escalations, item.in_reply_to, item, self.max_conversations * 10)
            for waiter in self._waiters.pop(item.in_reply_to, []):
                if not waiter.done():
                    waiter.set_result(item)
        return True

    def add_record(self, record: Message | OutboundMessage | Escalation) -> bool:
        if isinstance(record, Message) and record.control is not None:
            return False  # the workspace's handback: no one said anything
        data = record.model_dump(mode="json")
        if isinstance(record, Message):
            sender = record.sender
            item = ViewItem("message", record.message_id, record.conversation_id, None, data)
        elif isinstance(record, OutboundMessage):
            sender = record.recipient
            item = ViewItem("reply", record.reply_id, record.conversation_id, record.in_reply_to, data)
        else:
            sender = record.recipient
            item = ViewItem("escalation", record.escalation_id, record.conversation_id, record.message_id, data)
        added = self.add(item)
        if added and record.channel == "webchat":  # a web chat session follows its conversation by sender
            self._remember(self._sender_conversation, sender, record.conversation_id, self.max_conversations)
            for queue in self._sender_subscribers.get(sender, ()):
                queue.put_nowait(item)
        return added

    def add_chunk(self, chunk: ReplyChunk) -> bool:
        """Pass a streamed piece of a web chat reply to its recipient's sessions; False when it is dropped.

        Dropped: the reply or escalation it previews is already here (late), it repeats or precedes one
        already passed on, or nobody of that address is connected. A new generation of the same reply (the
        turn replayed on another worker) is announced to the sessions as a restart before its first piece.
        """
        if chunk.channel != "webchat" or chunk.reply_to in self._answers:
            return False
        queues = self._sender_subscribers.get(chunk.recipient)
        seen = self._streams.get(chunk.reply_to)
        if seen is not None and seen[0] == chunk.stream and chunk.seq <= seen[1]:
            return False
        self._remember(self._streams, chunk.reply_to, (chunk.stream, chunk.seq), self.max_conversations)
        if not queues:
            return False
        pending: list[ReplyChunk] = [chunk]
        if seen is not None and seen[0] != chunk.stream and chunk.kind != "restart":
            pending.insert(0, chunk.model_copy(update={"kind": "restart", "text": ""}))
        for queue in queues:
            for item in pending:
                queue.put_nowait(item)
        return True

    def conversation_of_sender(self, sender: str) -> str | None:
        return self._sender_conversation.get(sender)

    def sender_items(self, sender: str) -> list[ViewItem]:
        """What one web chat session may see: its own messages and the answers to them, nobody else's."""
        conversation_id = self._sender_conversation.get(sender)
        items = (self.conversation(conversation_id) or []) if conversation_id else []
        return [item for item in items if item.belongs_to(sender)]

    def subscribe_sender(self, sender: str) -> asyncio.Queue[ViewItem | ReplyChunk]:
        queue: asyncio.Queue[ViewItem | ReplyChunk] = asyncio.Queue()
        self._sender_subscribers.setdefault(sender, set()).add(queue)
        return queue

    def unsubscribe_sender(self, sender: str, queue: asyncio.Queue[ViewItem | ReplyChunk]) -> None:
        queues = self._sender_subscribers.get(sender)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self._sender_subscribers[sender]

    def conversation(self, conversation_id: str) -> list[ViewItem] | None:
        found = self._conversations.get(conversation_id)
        return list(found.items) if found else None

    def escalation(self, message_id: str) -> ViewItem | None:
        """The message's hand-over to a human, if it had one, whatever replies (notices) followed it."""
        return self._escalations.get(message_id)

    async def answer(self, message_id: str, timeout_s: float) -> ViewItem | None:
        """The reply or escalation for a message, waiting up to `timeout_s` for it."""
        if message_id in self._answers:
            return self._answers[message_id]
        if timeout_s <= 0:
            return None
        waiter: asyncio.Future[ViewItem] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(message_id, []).append(waiter)
        try:
            return await asyncio.wait_for(waiter, timeout_s)
        except TimeoutError:
            return None
        finally:
            waiters = self._waiters.get(message_id)
            if waiters and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._waiters[message_id]

    def subscribe(self, conversation_id: str) -> asyncio.Queue[ViewItem]:
        conversation = self._conversations.get(conversation_id)
        if conversation is None:
            conversation = _Conversation()
            self._remember(self._conversations, conversation_id, conversation, self.max_conversations)
        queue: asyncio.Queue[ViewItem] = asyncio.Queue()
        conversation.subscribers.add(queue)
        return queue

    def unsubscribe(self, conversation_id: str, queue: asyncio.Queue[ViewItem]) -> None:
        conversation = self._conversations.get(conversation_id)
        if conversation:
            conversation.subscribers.discard(queue)

    @staticmethod
    def _remember(store: OrderedDict[str, Any], key: str, value: Any, limit: int) -> None:
        store[key] = value
        store.move_to_end(key)
        while len(store) > limit:
            store.popitem(last=False)

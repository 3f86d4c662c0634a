"""Twilio: SMS and WhatsApp messages, voice calls, and the status callbacks of both, as form-encoded webhooks.

Twilio signs each request with the account's Auth Token over the exact public URL it called plus
the sorted form fields (`X-Twilio-Signature`); the twilio library's `RequestValidator` checks it, so
the URL must be the one Twilio saw: behind a proxy, set `public_base_url`. The query strings of the
URLs we hand Twilio (a call's turn, the message a redirect waits for) are covered by that signature,
so they come back as we wrote them.

TwiML is built with the library's `VoiceResponse` / `MessagingResponse`, never by hand.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response as TwilioResponse
from twilio.request_validator import RequestValidator, get_signature_algorithm
from twilio.rest import Client as TwilioClient
from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import VoiceResponse

from connectors.channels._common import clip, error, invalid_fields, not_configured, query_int, refuse
from connectors.channels.base import (
    InputChannel,
    OutputChannel,
    Pacer,
    PermanentSendError,
    ReplyStyle,
    Shaped,
    WebhookContext,
    message_parts,
    permanent_status,
    split_segments,
)
from connectors.channels.conversation_view import ViewItem
from schemas import CallRecording, DeliveryStatus, OutboundMessage, RawInbound, Record
from schemas.provider import MessageStatus, RecordingStatus
from schemas.text import refused_character

log = logging.getLogger("connectors.channels")

__all__ = [
    "GOODBYE",
    "GREETING",
    "HANDOVER",
    "MESSAGES_PATH",
    "ONE_MOMENT",
    "RECORDING_PATH",
    "SIGNATURE_HEADER",
    "SIGNATURE_SETTINGS_HEADER",
    "STATUS_PATH",
    "VOICE_PATH",
    "VOICE_WAIT_PATH",
    "FormParams",
    "TwilioInput",
    "TwilioSender",
    "VoiceCalls",
    "empty_twiml",
    "gather_twiml",
    "hold_twiml",
    "message_to_raw",
    "parse_form",
    "recording_from_form",
    "sms_reply",
    "status_from_form",
    "transfer_twiml",
    "verify_signature",
    "voice_action",
    "voice_reply",
    "voice_to_raw",
    "wait_url",
]

MESSAGES_PATH = "/webhooks/twilio/messages"
VOICE_PATH = "/webhooks/twilio/voice"
VOICE_WAIT_PATH = "/webhooks/twilio/voice/wait"
STATUS_PATH = "/webhooks/twilio/status"
RECORDING_PATH = "/webhooks/twilio/recording"
SIGNATURE_HEADER = "X-Twilio-Signature"
SIGNATURE_SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"
GREETING = "How can I help?"
ONE_MOMENT = "One moment, please."
SLOW_DOWN = "Sorry, I could not take that in. Please say it again in a moment."
HANDOVER = "Let me put you through to a colleague."
LATE_HANDOVER = "Sorry this is taking long. Let me put you through to a colleague."
GOODBYE = "Thank you for calling. Goodbye."


class FormParams(dict[str, list[str]]):
    """Form fields with repeats kept: Twilio signs every value, and `RequestValidator` reads `getall`."""

    def getall(self, name: str) -> list[str]:
        return self[name]

    def first(self, name: str) -> str | None:
        values = self.get(name)
        return values[0] if values else None


def parse_form(body: bytes) -> FormParams:
    """Decode an x-www-form-urlencoded body; ValueError if it is not UTF-8 (nothing Twilio sends)."""
    params = FormParams()
    for name, value in parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict", max_num_fields=500):
        params.setdefault(name, []).append(value)
    return params


def verify_signature(
    auth_token: str, url: str, params: FormParams, signature: str, signature_settings: str | None = None
) -> bool:
    """Twilio's own check (HMAC-SHA1 by default, SHA-256 when the settings header asks), constant-time."""
    try:
        return bool(
            RequestValidator(auth_token).validate(
                url, params, signature, algorithm=get_signature_algorithm(signature_settings)
            )
        )
    except ValueError:  # a URL whose port is not a number: it cannot be what Twilio signed
        return False


def _address(raw_from: str) -> tuple[str, str]:
    """(channel, sender): `whatsapp:+1555…` is WhatsApp through Twilio, anything else SMS."""
    if raw_from.startswith("whatsapp:"):
        return "whatsapp", raw_from.removeprefix("whatsapp:")
    return "sms", raw_from


def message_to_raw(params: FormParams) -> RawInbound | None:
    """An SMS/WhatsApp webhook as a RawInbound; None when it is not one (no sender or no MessageSid).

    The message id is derived from the MessageSid, so a webhook Twilio sends again is the same message.
    """
    sid = params.first("MessageSid") or params.first("SmsSid")
    raw_from = params.first("From")
    if not sid or not raw_from:
        return None
    channel, sender = _address(raw_from)
    if not sender:
        return None
    payload = {"provider": "twilio", "from": raw_from, "to": params.first("To"), "message_sid": sid}
    if (media := params.first("NumMedia")) and media != "0":
        payload["num_media"] = media
    return RawInbound(
        message_id=clip(f"tw-{sid}"),
        channel=channel,  # type: ignore[arg-type]
        sender=clip(sender, 320),
        address_verified=True,  # the From of a request Twilio signed
        text=params.first("Body") or "",
        provider_message_id=clip(sid),
        payload=payload,
    )


def voice_to_raw(params: FormParams, turn: int | None = None) -> RawInbound | None:
    """A call's transcribed answer as a RawInbound on channel voice; None without a caller or CallSid.

    One call has many turns under one CallSid, so the id adds a hash of the turn number (from the
    Gather action we wrote) and the transcript: a resent webhook maps to the same message, a new
    utterance to a new one, and the same words at a later turn ("yes", twice) too.
    """
    call_sid, caller, speech = params.first("CallSid"), params.first("From"), params.first("SpeechResult")
    if not call_sid or not caller or not speech:
        return None
    hashed = speech if turn is None else f"{turn}:{speech}"
    digest = hashlib.sha256(hashed.encode("utf-8")).hexdigest()[:12]
    payload: dict[str, Any] = {"provider": "twilio", "call_sid": call_sid, "from": caller, "to": params.first("To")}
    if turn is not None:
        payload["turn"] = turn
    if recording := params.first("RecordingUrl"):
        payload["recording_url"] = recording
    if confidence := params.first("Confidence"):
        payload["confidence"] = confidence
    return RawInbound(
        message_id=clip(f"tw-{call_sid}-{digest}"),
        channel="voice",
        sender=clip(caller, 320),
        address_verified=True,  # the caller of a request Twilio signed
        text=speech,
        provider_message_id=clip(f"{call_sid}:{digest}"),
        payload=payload,
    )


def voice_action(turn: int) -> str:
    """Where the caller's next answer is posted: the voice webhook, with the turn it answers."""
    return f"{VOICE_PATH}?{urlencode({'turn': turn})}"


def wait_url(message_id: str, turn: int, round_: int) -> str:
    """The follow-up a held call is redirected to, to wait again for `message_id`'s answer."""
    return f"{VOICE_WAIT_PATH}?{urlencode({'message_id': message_id, 'turn': turn, 'round': round_})}"


def gather_twiml(say: str = GREETING, action: str = VOICE_PATH, recording_callback: str | None = None) -> str:
    """Say `say` and listen; Twilio posts the transcript to `action` as SpeechResult.

    If the caller says nothing, Twilio falls through to the goodbye and the call ends. With
    `recording_callback`, the call is recorded from here on (`<Start><Recording>`), and Twilio posts
    the recording's URL there when it is ready.
    """
    response = VoiceResponse()
    if recording_callback:
        response.start().recording(recording_status_callback=recording_callback)
    gather = response.gather(input="speech", action=action, method="POST")
    gather.say(say)
    response.say(GOODBYE)
    return str(response)


def hold_twiml(redirect_to: str, say: str = ONE_MOMENT) -> str:
    """No answer yet: tell the caller, then have Twilio come back to `redirect_to` to wait again."""
    response = VoiceResponse()
    response.say(say)
    response.redirect(redirect_to, method="POST")
    return str(response)


def transfer_twiml(transfer_to: str | None, queue: str, say: str = HANDOVER) -> str:
    """Hand the caller to a person: `<Dial>` a number or a SIP URI, else `<Enqueue>` in a Twilio queue.

    Agents take callers off the queue by dialling it (`<Dial><Queue>`); the caller hears the
    queue's hold music meanwhile.
    """
    response = VoiceResponse()
    response.say(say)
    if transfer_to is None:
        response.enqueue(queue)
    elif transfer_to.startswith(("sip:", "sips:")):
        response.dial().sip(transfer_to)
    else:
        response.dial().number(transfer_to)
    return str(response)


def empty_twiml() -> str:
    """Nothing to send now: the reply goes out later through the senders, not in this response."""
    return str(MessagingResponse())


class _Form(BaseModel):
    """A callback's form fields we read (Twilio sends more, which are ignored); empty values are absent."""

    model_config = ConfigDict(extra="ignore", populate_by_name=False)

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_absent(cls, value: Any) -> Any:
        return None if value == "" else value

    @classmethod
    def of(cls, params: FormParams) -> Any:
        fields = {field.alias or name for name, field in cls.model_fields.items()}
        return cls.model_validate({name: params.first(name) for name in fields if params.first(name) is not None})


class StatusCallback(_Form):
    message_sid: str = Field(alias="MessageSid", min_length=1, max_length=64)
    message_status: MessageStatus = Field(alias="MessageStatus")
    error_code: int | None = Field(default=None, alias="ErrorCode", ge=0)
    to: str | None = Field(default=None, alias="To", max_length=320)


class RecordingCallback(_Form):
    recording_sid: str = Field(alias="RecordingSid", min_length=1, max_length=64)
    recording_url: str = Field(alias="RecordingUrl", min_length=1, max_length=2000, pattern=r"^https?://")
    call_sid: str = Field(alias="CallSid", min_length=1, max_length=64)
    recording_status: RecordingStatus = Field(default="completed", alias="RecordingStatus")
    recording_duration: int | None = Field(default=None, alias="RecordingDuration", ge=0)


def status_from_form(params: FormParams) -> DeliveryStatus:
    """A message status callback as a DeliveryStatus; pydantic's ValidationError when it is not one."""
    form = StatusCallback.of(params)
    return DeliveryStatus(
        message_sid=form.message_sid, status=form.message_status, error_code=form.error_code, recipient=form.to
    )


def recording_from_form(params: FormParams) -> CallRecording:
    """A recording status callback as a CallRecording; pydantic's ValidationError when it is not one."""
    form = RecordingCallback.of(params)
    return CallRecording(
        recording_sid=form.recording_sid,
        call_sid=form.call_sid,
        recording_url=form.recording_url,
        status=form.recording_status,
        duration_s=form.recording_duration,
    )


# ---- out: replies by SMS, WhatsApp and voice ------------------------------------------------

TWILIO_API_BASE_URL = "https://api.twilio.com"

GSM7_SEGMENT = 153
UCS2_SEGMENT = 67
GSM7_CHARS = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿"
    "abcdefghijklmnopqrstuvwxyzäöñüà"
)


def sms_segment_size(text: str) -> int:
    return GSM7_SEGMENT if set(text) <= GSM7_CHARS else UCS2_SEGMENT


def sms_reply(text: str, style: ReplyStyle) -> Shaped:
    """SMS: segments of 153 GSM-7 (or 67 UCS-2) characters, split on word boundaries."""
    return Shaped(text, split_segments(text, sms_segment_size(text)))


def voice_form(text: str, limit: int) -> str:
    """Whole sentences up to `limit` characters: speech cut mid-sentence confuses callers."""
    sentences = re.split(r"(?<=[.!?])\s+", text.strip())
    spoken = ""
    for sentence in sentences:
        if spoken and len(spoken) + 1 + len(sentence) > limit:
            break
        spoken = f"{spoken} {sentence}".strip()
    return spoken if len(spoken) <= limit else split_segments(spoken, limit)[0]


def voice_reply(text: str, style: ReplyStyle) -> Shaped:
    """Voice: whole sentences up to the limit; speech cut mid-sentence confuses callers."""
    spoken = voice_form(text, style.voice_limit)
    return Shaped(spoken, [spoken])


class _RebasedHttpClient(TwilioHttpClient):
    """twilio's HTTP client with `https://api.twilio.com` rewritten to a configured base URL.

    twilio-python hardcodes each domain's URL (ApiBase); rewriting at the HTTP client is the
    one place that covers every request without touching the generated classes.
    """

    def __init__(self, base_url: str, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self.base_url = base_url.rstrip("/")

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> TwilioResponse:
        if url.startswith(TWILIO_API_BASE_URL):
            url = self.base_url + url[len(TWILIO_API_BASE_URL) :]
        return super().request(method, url, *args, **kwargs)


def _whatsapp(number: str) -> str:
    return number if number.startswith("whatsapp:") else f"whatsapp:{number}"


class TwilioSender(OutputChannel):
    """SMS and WhatsApp through Twilio's Messages API: one message per part, paced per recipient.

    With `status_callback` (the public URL of `/webhooks/twilio/status`), Twilio reports each
    part's progress there (sent, delivered, undelivered with an error code, ...).

    The twilio client is synchronous (requests), so each call runs in a thread. Parts already
    accepted are remembered per reply while the process lives, so a retry after a transient
    failure on part 3 resumes at part 3 instead of resending parts 1-2.
    """

    provider = "twilio"

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        from_number: str | None = None,
        whatsapp_from: str | None = None,
        base_url: str = TWILIO_API_BASE_URL,
        min_interval_s: float = 1.0,
        timeout_s: float = 15.0,
        status_callback: str | None = None,
    ) -> None:
        self.from_number = from_number
        self.whatsapp_from = whatsapp_from
        self.status_callback = status_callback
        http_client = _RebasedHttpClient(base_url, timeout_s)
        self.client = TwilioClient(account_sid, auth_token, http_client=http_client)
        self.pacer = Pacer(min_interval_s)
        self._accepted: dict[str, list[str]] = {}

    def _ends(self, message: OutboundMessage) -> tuple[str, str]:
        if message.channel == "whatsapp":
            if not self.whatsapp_from:
                raise PermanentSendError("no Twilio WhatsApp sender number configured (twilio_whatsapp_from)")
            return _whatsapp(message.recipient), _whatsapp(self.whatsapp_from)
        if not self.from_number:
            raise PermanentSendError("no Twilio sender number configured (twilio_from_number)")
        return message.recipient, self.from_number

    async def send(self, message: OutboundMessage) -> str:
        to, from_ = self._ends(message)
        extra = {"status_callback": self.status_callback} if self.status_callback else {}
        accepted = self._accepted.setdefault(message.reply_id, [])
        for part in message_parts(message)[len(accepted) :]:
            try:
                async with self.pacer.slot(message.recipient):
                    created = await asyncio.to_thread(
                        self.client.messages.create, to=to, from_=from_, body=part, **extra
                    )
            except TwilioRestException as exc:
                if permanent_status(exc.status):
                    self._accepted.pop(message.reply_id, None)
                    raise PermanentSendError(f"twilio {exc.status}: {exc.msg} (code {exc.code})") from exc
                raise
            accepted.append(str(created.sid))
        return ",".join(self._accepted.pop(message.reply_id))

    async def aclose(self) -> None:
        session = self.client.http_client.session  # type: ignore[attr-defined]
        if session is not None:
            session.close()


# ---- in: messages, calls and status callbacks ----------------------------------------------

TWIML = "application/xml"
MAX_TURN = 10_000


@dataclass(frozen=True)
class VoiceCalls:
    """How a call is answered: where answers come from, how long to wait, whom to transfer to.

    `answer(message_id, timeout_s)` is the conversation view's wait for a message's reply or
    escalation; `escalation(message_id)` its hand-over, if any, which wins over the notices a
    workspace router sends after it (a call is transferred, not told its place in line).
    `spoken(reply_id, call_sid)`, when set, records that a reply was spoken in the call (the
    senders' ledger), so the senders do not keep it in the outbox as undelivered.
    """

    answer: Callable[[str, float], Awaitable[ViewItem | None]]
    escalation: Callable[[str], ViewItem | None] = lambda _message_id: None
    wait_s: float = 8.0
    rounds: int = 3
    transfer_to: str | None = None
    queue: str = "support"
    record_calls: bool = False
    spoken: Callable[[str, str], Awaitable[None]] | None = None


def _twiml(text: str) -> Response:
    return Response(text, media_type=TWIML)


class TwilioInput(InputChannel):
    """SMS and WhatsApp messages, voice calls and the status callbacks, each signed by Twilio.

    A voice turn is answered within the call: the webhook publishes the transcript, waits (a
    bounded `VoiceCalls.wait_s`) for the turn's reply or escalation on the ingress's conversation
    view, and answers TwiML that speaks the reply, or transfers the caller to a person, or says
    "one moment" and redirects Twilio to `/webhooks/twilio/voice/wait` to wait again (`rounds`
    times, then a transfer). The status and recording callbacks are mounted only when the
    topology has a topic for them.
    """

    name = "twilio"

    def __init__(
        self,
        auth_token: SecretStr | None,
        voice: VoiceCalls,
        public_base_url: str | None = None,
        delivery_topic: str | None = "sf.delivery",
        recordings_topic: str | None = "sf.recordings",
    ) -> None:
        self.auth_token = auth_token
        self.voice = voice
        self.public_base_url = public_base_url
        self.delivery_topic = delivery_topic
        self.recordings_topic = recordings_topic

    def routes(self, context: WebhookContext) -> list[BaseRoute]:
        self.context = context
        routes: list[BaseRoute] = [
            Route(MESSAGES_PATH, self.messages, methods=["POST"]),
            Route(VOICE_PATH, self.call, methods=["POST"]),
            Route(VOICE_WAIT_PATH, self.call_wait, methods=["POST"]),
        ]
        if self.delivery_topic is not None:
            routes.append(Route(STATUS_PATH, self.status, methods=["POST"]))
        if self.recordings_topic is not None:
            routes.append(Route(RECORDING_PATH, self.recording, methods=["POST"]))
        return routes

    async def verified(self, request: Request) -> FormParams | Response:
        """The form of a request Twilio signed, or the refusal."""
        if self.auth_token is None:
            return not_configured(request, "twilio", "twilio_auth_token")
        body = await self.context.read_body(request)
        if isinstance(body, Response):
            return body
        signature = request.headers.get(SIGNATURE_HEADER)
        if not signature:
            return refuse(request, "twilio", "missing_signature", f"missing {SIGNATURE_HEADER} header")
        try:
            params = parse_form(body)
        except ValueError:  # Twilio always sends UTF-8 forms, so this was never signed by it
            return refuse(request, "twilio", "bad_signature", f"{SIGNATURE_HEADER} does not match the request")
        url = str(request.url)
        if self.public_base_url:
            query = request.url.query
            url = self.public_base_url + request.url.path + (f"?{query}" if query else "")
        settings_header = request.headers.get(SIGNATURE_SETTINGS_HEADER)
        if not verify_signature(self.auth_token.get_secret_value(), url, params, signature, settings_header):
            return refuse(request, "twilio", "bad_signature", f"{SIGNATURE_HEADER} does not match the request")
        for name, values in params.items():  # the same characters a JSON body may not carry (schemas/text.py)
            found = next(filter(None, map(refused_character, (name, *values))), None)
            if found is not None:
                return error(422, f"the field {name[:80]!r} holds {found}, a control character that is not accepted")
        return params

    async def messages(self, request: Request) -> Response:
        params = await self.verified(request)
        if isinstance(params, Response):
            return params
        raw = message_to_raw(params)
        if raw is None:
            return error(400, "not a Twilio messaging webhook: From and MessageSid are required")
        return await self.context.admit([raw]) or Response(empty_twiml(), media_type=TWIML)

    async def mark_spoken(self, reply_id: str, call_sid: str) -> None:
        """Tell the senders' ledger; the caller heard the reply whether or not this works."""
        if self.voice.spoken is None:
            return
        try:
            await asyncio.wait_for(self.voice.spoken(reply_id, call_sid), timeout=2.0)
        except Exception as exc:  # the ledger is bookkeeping: never fail the call over it
            log.warning("voice: could not record reply %s as spoken in call %s: %s", reply_id, call_sid, exc)

    async def answer_call(self, message_id: str, call_sid: str, turn: int, round_: int) -> Response:
        """The TwiML for a turn: its reply spoken, a transfer, or "one moment" and a redirect to wait again."""
        voice = self.voice
        item = await voice.answer(message_id, voice.wait_s)
        if item is not None and item.kind != "escalation":
            item = voice.escalation(message_id) or item
        if item is None:
            if round_ >= voice.rounds:
                log.warning("voice: no answer to %s after %d wait(s); transferring the caller", message_id, round_ + 1)
                return _twiml(transfer_twiml(voice.transfer_to, voice.queue, LATE_HANDOVER))
            return _twiml(hold_twiml(wait_url(message_id, turn, round_ + 1)))
        if item.kind == "escalation":
            return _twiml(transfer_twiml(voice.transfer_to, voice.queue))
        text = str(item.record.get("text") or "").strip()
        if not text:  # nothing to say is no answer to give: a person takes it
            return _twiml(transfer_twiml(voice.transfer_to, voice.queue))
        await self.mark_spoken(item.id, call_sid)
        return _twiml(gather_twiml(text, voice_action(turn + 1)))

    def public_url(self, request: Request, path: str) -> str:
        base = self.public_base_url or str(request.base_url).rstrip("/")
        return base + path

    async def call(self, request: Request) -> Response:
        params = await self.verified(request)
        if isinstance(params, Response):
            return params
        turn = query_int(request, "turn", 1, MAX_TURN)
        if not params.first("SpeechResult"):
            # the call's first request (no turn yet) greets, and starts the recording if asked;
            # a turn with nothing heard asks again for the same turn
            recording = None
            if self.voice.record_calls and turn is None and self.recordings_topic is not None:
                recording = self.public_url(request, RECORDING_PATH)
            return _twiml(gather_twiml(GREETING, voice_action(turn or 1), recording))
        raw = voice_to_raw(params, turn)
        if raw is None:
            return error(400, "not a Twilio voice webhook: From and CallSid are required")
        refused = await self.context.admit([raw])
        if refused is not None and refused.status_code == 429:
            # not published; a non-TwiML answer would be read to the caller as an application error
            return _twiml(gather_twiml(SLOW_DOWN, voice_action(turn or 1)))
        if refused is not None:
            return refused
        return await self.answer_call(raw.message_id, str(raw.payload["call_sid"]), turn or 1, 0)

    async def call_wait(self, request: Request) -> Response:
        params = await self.verified(request)
        if isinstance(params, Response):
            return params
        message_id = request.query_params.get("message_id") or ""
        call_sid = params.first("CallSid") or ""
        turn = query_int(request, "turn", 1, MAX_TURN)
        round_ = query_int(request, "round", 1, 100)
        # the URL is ours (Twilio signed what we wrote), and a call only waits for its own turns
        if not call_sid or not message_id.startswith(f"tw-{call_sid}-") or turn is None or round_ is None:
            return error(400, "not a redirect of ours: message_id of this CallSid, turn and round are required")
        return await self.answer_call(message_id, call_sid, turn, round_)

    async def callback(
        self, request: Request, parse: Callable[[FormParams], Record], topic: str | None, what: str
    ) -> Response:
        """A signed status callback (no customer words): validated, published as its record, 204."""
        params = await self.verified(request)
        if isinstance(params, Response):
            return params
        try:
            record = parse(params)
        except ValidationError as exc:
            return error(400, f"not a Twilio {what}: {invalid_fields(exc)}")
        assert topic is not None
        await self.context.publish(topic, record.partition_key(), record.to_bytes())
        return Response(status_code=204)

    async def status(self, request: Request) -> Response:
        return await self.callback(request, status_from_form, self.delivery_topic, "message status callback")

    async def recording(self, request: Request) -> Response:
        return await self.callback(request, recording_from_form, self.recordings_topic, "recording status callback")

"""The webhook endpoints: verify the provider's signature first, then adapt, rate-limit and publish.

Nothing reaches a topic before the signature holds, and refused requests are not dead-lettered:
unsigned bodies are anyone's input, and keeping them would let a stranger fill the topic.

A voice turn is answered within the call: the webhook publishes the transcript, waits (a bounded
`VoiceCalls.wait_s`) for the turn's reply or escalation on the ingress's conversation view, and
answers TwiML that speaks the reply, or transfers the caller to a person, or says "one moment" and
redirects Twilio to `/webhooks/twilio/voice/wait` to wait again (`rounds` times, then a transfer).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from pydantic import SecretStr, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from connectors.channels import meta, slack, teams, twilio
from connectors.channels._common import not_configured, refuse
from connectors.channels.admit import Admission, too_many
from connectors.channels.conversation_view import ViewItem
from connectors.redis.rate_limit import RateLimiter
from schemas import RawInbound, Record

__all__ = ["ChannelSecrets", "VoiceCalls", "webhook_routes"]

log = logging.getLogger("connectors.channels")

Publish = Callable[[str, str | None, bytes], Awaitable[None]]
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


@dataclass(frozen=True)
class ChannelSecrets:
    """The providers' secrets (unset: that provider's endpoints answer 503) and the public base URL."""

    twilio_auth_token: SecretStr | None = None
    meta_app_secret: SecretStr | None = None
    meta_verify_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    public_base_url: str | None = None
    teams_app_id: str | None = None  # the audience of the Bot Connector's tokens (not a secret)
    teams_openid_metadata_url: str = teams.OPENID_METADATA_URL


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _query_int(request: Request, name: str, low: int, high: int) -> int | None:
    value = request.query_params.get(name)
    if value is None or not value.isdigit():
        return None
    number = int(value)
    return number if low <= number <= high else None


def webhook_routes(
    secrets: ChannelSecrets,
    publish: Publish,
    limiter: RateLimiter,
    voice: VoiceCalls,
    ingress_topic: str = "sf.ingress",
    delivery_topic: str | None = "sf.delivery",
    recordings_topic: str | None = "sf.recordings",
    max_body_bytes: int = 64_000,
    clock: Callable[[], float] = time.time,
) -> list[Route]:
    """The provider routes, to mount next to the ingress API's own.

    The status and recording callbacks are mounted only when the topology has a topic for them.
    """

    async def read_body(request: Request) -> bytes | Response:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_body_bytes:
            return _error(413, f"body is {declared} bytes; the limit is {max_body_bytes}")
        body = await request.body()
        if len(body) > max_body_bytes:
            return _error(413, f"body exceeds {max_body_bytes} bytes")
        return body

    admission = Admission(publish, limiter, ingress_topic)

    async def admit(records: Sequence[RawInbound]) -> Response | None:
        """Publish what the channel's limits allow; 429 if any was held back, for the provider to resend."""
        refused = await admission.admit_all(records)
        return None if refused is None else too_many(refused[0].channel, refused[1])

    async def twilio_verified(request: Request) -> twilio.FormParams | Response:
        """The form of a request Twilio signed, or the refusal."""
        if secrets.twilio_auth_token is None:
            return not_configured(request, "twilio", "twilio_auth_token")
        body = await read_body(request)
        if isinstance(body, Response):
            return body
        signature = request.headers.get(twilio.SIGNATURE_HEADER)
        if not signature:
            return refuse(request, "twilio", "missing_signature", f"missing {twilio.SIGNATURE_HEADER} header")
        try:
            params = twilio.parse_form(body)
        except ValueError:  # Twilio always sends UTF-8 forms, so this was never signed by it
            return refuse(request, "twilio", "bad_signature", f"{twilio.SIGNATURE_HEADER} does not match the request")
        url = str(request.url)
        if secrets.public_base_url:
            query = request.url.query
            url = secrets.public_base_url + request.url.path + (f"?{query}" if query else "")
        settings_header = request.headers.get(twilio.SIGNATURE_SETTINGS_HEADER)
        if not twilio.verify_signature(
            secrets.twilio_auth_token.get_secret_value(), url, params, signature, settings_header
        ):
            return refuse(request, "twilio", "bad_signature", f"{twilio.SIGNATURE_HEADER} does not match the request")
        return params

    async def twilio_messages(request: Request) -> Response:
        params = await twilio_verified(request)
        if isinstance(params, Response):
            return params
        raw = twilio.message_to_raw(params)
        if raw is None:
            return _error(400, "not a Twilio messaging webhook: From and MessageSid are required")
        return await admit([raw]) or Response(twilio.empty_twiml(), media_type=TWIML)

    def twiml(text: str) -> Response:
        return Response(text, media_type=TWIML)

    async def mark_spoken(reply_id: str, call_sid: str) -> None:
        """Tell the senders' ledger; the caller heard the reply whether or not this works."""
        if voice.spoken is None:
            return
        try:
            await asyncio.wait_for(voice.spoken(reply_id, call_sid), timeout=2.0)
        except Exception as exc:  # the ledger is bookkeeping: never fail the call over it
            log.warning("voice: could not record reply %s as spoken in call %s: %s", reply_id, call_sid, exc)

    async def answer_call(message_id: str, call_sid: str, turn: int, round_: int) -> Response:
        """The TwiML for a turn: its reply spoken, a transfer, or "one moment" and a redirect to wait again."""
        item = await voice.answer(message_id, voice.wait_s)
        if item is not None and item.kind != "escalation":
            item = voice.escalation(message_id) or item
        if item is None:
            if round_ >= voice.rounds:
                log.warning("voice: no answer to %s after %d wait(s); transferring the caller", message_id, round_ + 1)
                return twiml(twilio.transfer_twiml(voice.transfer_to, voice.queue, twilio.LATE_HANDOVER))
            return twiml(twilio.hold_twiml(twilio.wait_url(message_id, turn, round_ + 1)))
        if item.kind == "escalation":
            return twiml(twilio.transfer_twiml(voice.transfer_to, voice.queue))
        text = str(item.record.get("text") or "").strip()
        if not text:  # nothing to say is no answer to give: a person takes it
            return twiml(twilio.transfer_twiml(voice.transfer_to, voice.queue))
        await mark_spoken(item.id, call_sid)
        return twiml(twilio.gather_twiml(text, twilio.voice_action(turn + 1)))

    def public_url(request: Request, path: str) -> str:
        base = secrets.public_base_url or str(request.base_url).rstrip("/")
        return base + path

    async def twilio_voice(request: Request) -> Response:
        params = await twilio_verified(request)
        if isinstance(params, Response):
            return params
        turn = _query_int(request, "turn", 1, MAX_TURN)
        if not params.first("SpeechResult"):
            # the call's first request (no turn yet) greets, and starts the recording if asked;
            # a turn with nothing heard asks again for the same turn
            recording = None
            if voice.record_calls and turn is None and recordings_topic is not None:
                recording = public_url(request, twilio.RECORDING_PATH)
            return twiml(twilio.gather_twiml(twilio.GREETING, twilio.voice_action(turn or 1), recording))
        raw = twilio.voice_to_raw(params, turn)
        if raw is None:
            return _error(400, "not a Twilio voice webhook: From and CallSid are required")
        refused = await admit([raw])
        if refused is not None and refused.status_code == 429:
            # not published; a non-TwiML answer would be read to the caller as an application error
            return twiml(twilio.gather_twiml(twilio.SLOW_DOWN, twilio.voice_action(turn or 1)))
        if refused is not None:
            return refused
        return await answer_call(raw.message_id, str(raw.payload["call_sid"]), turn or 1, 0)

    async def twilio_voice_wait(request: Request) -> Response:
        params = await twilio_verified(request)
        if isinstance(params, Response):
            return params
        message_id = request.query_params.get("message_id") or ""
        call_sid = params.first("CallSid") or ""
        turn = _query_int(request, "turn", 1, MAX_TURN)
        round_ = _query_int(request, "round", 1, 100)
        # the URL is ours (Twilio signed what we wrote), and a call only waits for its own turns
        if not call_sid or not message_id.startswith(f"tw-{call_sid}-") or turn is None or round_ is None:
            return _error(400, "not a redirect of ours: message_id of this CallSid, turn and round are required")
        return await answer_call(message_id, call_sid, turn, round_)

    async def twilio_callback(
        request: Request, parse: Callable[[twilio.FormParams], Record], topic: str | None, what: str
    ) -> Response:
        """A signed status callback (no customer words): validated, published as its record, 204."""
        params = await twilio_verified(request)
        if isinstance(params, Response):
            return params
        try:
            record = parse(params)
        except ValidationError as exc:
            return _error(400, f"not a Twilio {what}: {_fields(exc)}")
        assert topic is not None
        await publish(topic, record.partition_key(), record.to_bytes())
        return Response(status_code=204)

    async def twilio_status(request: Request) -> Response:
        return await twilio_callback(request, twilio.status_from_form, delivery_topic, "message status callback")

    async def twilio_recording(request: Request) -> Response:
        return await twilio_callback(request, twilio.recording_from_form, recordings_topic, "recording status callback")

    async def meta_handshake(request: Request) -> Response:
        if secrets.meta_verify_token is None:
            return not_configured(request, "meta", "meta_verify_token")
        challenge = meta.handshake_challenge(request.query_params, secrets.meta_verify_token.get_secret_value())
        if challenge is None:
            return refuse(request, "meta", "bad_verify_token", "hub.mode must be subscribe with our hub.verify_token")
        return PlainTextResponse(challenge)

    async def meta_messages(request: Request) -> Response:
        if secrets.meta_app_secret is None:
            return not_configured(request, "meta", "meta_app_secret")
        body = await read_body(request)
        if isinstance(body, Response):
            return body
        signature = request.headers.get(meta.SIGNATURE_HEADER)
        if not signature:
            return refuse(request, "meta", "missing_signature", f"missing {meta.SIGNATURE_HEADER} header")
        if not meta.verify_signature(secrets.meta_app_secret.get_secret_value(), body, signature):
            return refuse(request, "meta", "bad_signature", f"{meta.SIGNATURE_HEADER} does not match the body")
        try:
            data = json.loads(body)
        except ValueError:
            return _error(400, "body is not JSON")
        # statuses and unknown shapes get 200 too: a non-2xx makes Meta resend them for days
        return await admit(meta.payload_to_raw(data)) or JSONResponse({"status": "ok"})

    async def slack_events(request: Request) -> Response:
        if secrets.slack_signing_secret is None:
            return not_configured(request, "slack", "slack_signing_secret")
        body = await read_body(request)
        if isinstance(body, Response):
            return body
        signature = request.headers.get(slack.SIGNATURE_HEADER)
        timestamp = request.headers.get(slack.TIMESTAMP_HEADER)
        if not signature or not timestamp:
            return refuse(
                request,
                "slack",
                "missing_signature",
                f"missing {slack.SIGNATURE_HEADER} or {slack.TIMESTAMP_HEADER} header",
            )
        reason = slack.check_signature(
            secrets.slack_signing_secret.get_secret_value(), body, timestamp, signature, clock()
        )
        if reason == "stale_timestamp":
            return refuse(
                request, "slack", reason, f"{slack.TIMESTAMP_HEADER} is more than {slack.MAX_AGE_S}s from now"
            )
        if reason is not None:
            return refuse(request, "slack", "bad_signature", f"{slack.SIGNATURE_HEADER} does not match the body")
        try:
            data = json.loads(body)
        except ValueError:
            return _error(400, "body is not JSON")
        if isinstance(data, dict) and data.get("type") == "url_verification":
            return JSONResponse({"challenge": str(data.get("challenge", ""))})
        raw = slack.payload_to_raw(data)
        return await admit([raw] if raw else []) or JSONResponse({"status": "ok"})

    teams_auth = None
    if secrets.teams_app_id:
        teams_auth = teams.BotFrameworkAuth(secrets.teams_app_id, secrets.teams_openid_metadata_url)

    routes = [
        Route(twilio.MESSAGES_PATH, twilio_messages, methods=["POST"]),
        Route(twilio.VOICE_PATH, twilio_voice, methods=["POST"]),
        Route(twilio.VOICE_WAIT_PATH, twilio_voice_wait, methods=["POST"]),
        Route(meta.PATH, meta_handshake, methods=["GET"]),
        Route(meta.PATH, meta_messages, methods=["POST"]),
        Route(slack.PATH, slack_events, methods=["POST"]),
        Route(teams.PATH, teams.messages_endpoint(teams_auth, read_body, admit), methods=["POST"]),
    ]
    if delivery_topic is not None:
        routes.append(Route(twilio.STATUS_PATH, twilio_status, methods=["POST"]))
    if recordings_topic is not None:
        routes.append(Route(twilio.RECORDING_PATH, twilio_recording, methods=["POST"]))
    return routes


def _fields(exc: ValidationError) -> str:
    """Which fields were wrong, without echoing their values (they are outside input)."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())

"""Twilio: SMS and WhatsApp messages, and speech from voice calls, as form-encoded webhooks.

Twilio signs each request with the account's Auth Token over the exact public URL it called plus
the sorted form fields (`X-Twilio-Signature`); the twilio library's `RequestValidator` checks it, so
the URL must be the one Twilio saw: behind a proxy, set `public_base_url`.
"""

from __future__ import annotations

import hashlib
from urllib.parse import parse_qsl

from twilio.request_validator import RequestValidator, get_signature_algorithm
from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import VoiceResponse

from connectors.channels._common import clip
from schemas import RawInbound

__all__ = [
    "MESSAGES_PATH",
    "SIGNATURE_HEADER",
    "SIGNATURE_SETTINGS_HEADER",
    "VOICE_PATH",
    "FormParams",
    "empty_twiml",
    "gather_twiml",
    "message_to_raw",
    "parse_form",
    "verify_signature",
    "voice_to_raw",
]

MESSAGES_PATH = "/webhooks/twilio/messages"
VOICE_PATH = "/webhooks/twilio/voice"
SIGNATURE_HEADER = "X-Twilio-Signature"
SIGNATURE_SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"
GREETING = "How can I help?"
HANDLING = "Thanks, we are on it. Anything else?"


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
        text=params.first("Body") or "",
        provider_message_id=clip(sid),
        payload=payload,
    )


def voice_to_raw(params: FormParams) -> RawInbound | None:
    """A call's transcribed answer as a RawInbound on channel voice; None without a caller or CallSid.

    One call has many turns under one CallSid, so the id adds a hash of the transcript: a resent
    webhook maps to the same message, a new utterance to a new one.
    """
    call_sid, caller, speech = params.first("CallSid"), params.first("From"), params.first("SpeechResult")
    if not call_sid or not caller or not speech:
        return None
    turn = hashlib.sha256(speech.encode("utf-8")).hexdigest()[:12]
    payload = {"provider": "twilio", "call_sid": call_sid, "from": caller, "to": params.first("To")}
    if recording := params.first("RecordingUrl"):
        payload["recording_url"] = recording
    if confidence := params.first("Confidence"):
        payload["confidence"] = confidence
    return RawInbound(
        message_id=clip(f"tw-{call_sid}-{turn}"),
        channel="voice",
        sender=clip(caller, 320),
        text=speech,
        provider_message_id=clip(f"{call_sid}:{turn}"),
        payload=payload,
    )


def gather_twiml(say: str = GREETING, action: str = VOICE_PATH) -> str:
    """Ask the caller to speak; Twilio posts the transcript back to `action` as SpeechResult."""
    response = VoiceResponse()
    gather = response.gather(input="speech", action=action, method="POST")
    gather.say(say)
    return str(response)


def empty_twiml() -> str:
    """Nothing to send now: the reply goes out later through the senders, not in this response."""
    return str(MessagingResponse())

"""The webhook endpoints: verify the provider's signature first, then adapt, rate-limit and publish.

Nothing reaches `sf.ingress` before the signature holds, and refused requests are not dead-lettered:
unsigned bodies are anyone's input, and keeping them would let a stranger fill the topic.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from connectors.channels import meta, slack, teams, twilio
from connectors.channels._common import not_configured, refuse
from connectors.rate_limit import RateLimiter, retry_after_header
from schemas import RawInbound

__all__ = ["ChannelSecrets", "webhook_routes"]

Publish = Callable[[str, str | None, bytes], Awaitable[None]]
TWIML = "application/xml"


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


def webhook_routes(
    secrets: ChannelSecrets,
    publish: Publish,
    limiter: RateLimiter,
    ingress_topic: str = "sf.ingress",
    max_body_bytes: int = 64_000,
    clock: Callable[[], float] = time.time,
) -> list[Route]:
    """The provider routes, to mount next to the ingress API's own."""

    async def read_body(request: Request) -> bytes | Response:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_body_bytes:
            return _error(413, f"body is {declared} bytes; the limit is {max_body_bytes}")
        body = await request.body()
        if len(body) > max_body_bytes:
            return _error(413, f"body exceeds {max_body_bytes} bytes")
        return body

    async def admit(records: Sequence[RawInbound]) -> Response | None:
        """Publish what the channel's limits allow; 429 if any was held back, for the provider to resend.

        A resend republishes the ones already sent under the same message ids, which the stream drops.
        """
        refused = None
        for raw in records:
            decision = await limiter.allow(raw.channel, raw.sender)
            if not decision.allowed:
                refused = refused or (raw, decision)
                continue
            await publish(ingress_topic, raw.partition_key(), raw.to_bytes())
        if refused is None:
            return None
        raw, decision = refused
        response = _error(
            429, f"too many {raw.channel} messages from this sender; retry in {decision.retry_after_s:.0f}s"
        )
        response.headers["Retry-After"] = retry_after_header(decision)
        return response

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

    async def twilio_voice(request: Request) -> Response:
        params = await twilio_verified(request)
        if isinstance(params, Response):
            return params
        if not params.first("SpeechResult"):
            return Response(twilio.gather_twiml(), media_type=TWIML)
        raw = twilio.voice_to_raw(params)
        if raw is None:
            return _error(400, "not a Twilio voice webhook: From and CallSid are required")
        return await admit([raw]) or Response(twilio.gather_twiml(twilio.HANDLING), media_type=TWIML)

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

    return [
        Route(twilio.MESSAGES_PATH, twilio_messages, methods=["POST"]),
        Route(twilio.VOICE_PATH, twilio_voice, methods=["POST"]),
        Route(meta.PATH, meta_handshake, methods=["GET"]),
        Route(meta.PATH, meta_messages, methods=["POST"]),
        Route(slack.PATH, slack_events, methods=["POST"]),
        Route(teams.PATH, teams.messages_endpoint(teams_auth, read_body, admit), methods=["POST"]),
    ]

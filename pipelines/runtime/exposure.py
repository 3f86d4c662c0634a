"""No open doors by default: what may listen beyond this machine, and what an operator must say to allow it.

The embedded default listens on 127.0.0.1, where an open REST API and the demo agents are a
developer's convenience. On any other address (0.0.0.0 in a container, a LAN address) the same
start would expose them to a network, so it is refused with the setting that fixes it, unless
the operator opts in explicitly; an opted-in open API is reported as a warning at start and on
`/healthz`, for as long as it runs.
"""

from __future__ import annotations

import ipaddress

from pipelines.runtime.settings import Settings

__all__ = ["OpenDoorError", "check_ingress_exposure", "check_workspace_exposure", "is_loopback"]


class OpenDoorError(Exception):
    """A start that would expose an unprotected door; the message names the settings that fix it."""


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only; a host name other than localhost may resolve anywhere."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_ingress_exposure(settings: Settings) -> list[str]:
    """The warnings to show while the ingress runs; OpenDoorError if it would serve an open API to a network."""
    host = settings.http_host
    if settings.api_keys or is_loopback(host):
        return []
    if not settings.allow_open_api:
        raise OpenDoorError(
            f"refusing to serve the REST API on {host} without API keys: anyone who can reach it could post as any "
            "customer. Set SUPPORTFLOW_API_KEYS (a JSON list, e.g. from a secrets file), or listen on 127.0.0.1 "
            "(SUPPORTFLOW_HTTP_HOST), or — on a trusted network only — set SUPPORTFLOW_ALLOW_OPEN_API=true"
        )
    return [
        f"the REST API on {host} is OPEN: no API keys are set and SUPPORTFLOW_ALLOW_OPEN_API=true; anyone who can "
        "reach it may post as any customer and read any conversation. Set SUPPORTFLOW_API_KEYS"
    ]


def check_workspace_exposure(settings: Settings) -> None:
    """OpenDoorError if the workspace would listen on a network with the generated demo team.

    The demo team's passwords are printed at start, so in a deployment they sit in the console's
    and the log collector's history; a network-facing workspace signs in only its own agents file.
    """
    host = settings.workspace_host
    if is_loopback(host) or settings.workspace_agents_file is not None:
        return
    raise OpenDoorError(
        f"refusing to serve the agent workspace on {host} with the generated demo team, whose passwords are printed "
        "to the console and its logs: set SUPPORTFLOW_WORKSPACE_AGENTS_FILE to your agents file (hashes from "
        "`supportflow workspace hash-password`), or listen on 127.0.0.1 (SUPPORTFLOW_WORKSPACE_HOST)"
    )

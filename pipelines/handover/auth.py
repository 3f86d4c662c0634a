"""Who may use the agent workspace: the agents file, password hashes, session tokens, login throttling.

- **Agents file** (YAML, validated with pydantic): `agents: [AgentSpec, ...]`, each with a
  `password_hash`. `supportflow workspace hash-password` prints a hash to paste in.
- **Password hashes** are `hashlib.scrypt` in the form `scrypt$<n>$<r>$<p>$<salt>$<hash>` (salt and
  hash base64, 16 and 32 bytes; n=2^14, r=8, p=1 by default: about 16 MB and 50 ms per check, so a
  stolen file is slow to attack and a login stays quick). Compared in constant time.
- **Tokens** are JWTs (PyJWT, HS256, the key from settings) carrying the agent id and an expiry;
  the page keeps one in an HttpOnly cookie, scripts and tests may send it as a bearer token. The
  role and queues are read from the agents file on every request, never trusted from the token.
- **Login throttling** (`LoginThrottle`): per (agent id, address) and per address, failures pause
  (429); per agent id across addresses they only slow sign-ins from addresses the agent never
  used, so nobody can lock an agent out.
- **Demo agents**: with no agents file configured, the first start writes one into the data dir
  with random passwords and returns them once for the console; they are never in the repository.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jwt
import yaml
from pydantic import ValidationError

from pipelines.handover.config import AgentsFile
from schemas.workspace import AgentSpec, QueueEntry

__all__ = [
    "DEMO_AGENTS",
    "AgentsFileError",
    "Claims",
    "LoginThrottle",
    "TokenError",
    "Tokens",
    "check_hashes",
    "ensure_demo_agents",
    "hash_password",
    "load_agents",
    "may_access",
    "may_act",
    "verify_password",
]

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SALT_BYTES, HASH_BYTES = 16, 32
ISSUER = "supportflow-workspace"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    # maxmem above OpenSSL's 32 MB default, which n=2^15 would exceed
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=length)


def hash_password(password: str, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """`scrypt$n$r$p$salt$hash` of `password` with a fresh random salt."""
    if not password:
        raise ValueError("a password may not be empty")
    salt = os.urandom(SALT_BYTES)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(_scrypt(password, salt, n, r, p, HASH_BYTES))}"


def _parse_hash(encoded: str) -> tuple[int, int, int, bytes, bytes]:
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("expected scrypt$<n>$<r>$<p>$<salt>$<hash> (see `supportflow workspace hash-password`)")
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, digest = base64.b64decode(parts[4], validate=True), base64.b64decode(parts[5], validate=True)
    except ValueError as exc:
        raise ValueError(f"malformed scrypt hash: {exc}") from None
    if n < 2**10 or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 16 or len(salt) < 8 or len(digest) < 16:
        raise ValueError("scrypt parameters out of range (n a power of two >= 1024, r 1..64, p 1..16)")
    return n, r, p, salt, digest


def verify_password(password: str, encoded: str) -> bool:
    """Whether `password` matches the hash; a malformed hash matches nothing."""
    try:
        n, r, p, salt, digest = _parse_hash(encoded)
    except ValueError:
        return False
    return hmac.compare_digest(_scrypt(password, salt, n, r, p, len(digest)), digest)


# A hash of a random password: a login for an unknown agent id costs as much as for a known one,
# so the answer's timing does not tell which agent ids exist.
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


class AgentsFileError(ValueError):
    """The agents file is missing or invalid; the message names the file and the field."""


def check_hashes(agents: list[AgentSpec]) -> None:
    """Every agent's password hash is one `verify_password` can read (else ValueError naming the agent)."""
    for agent in agents:
        try:
            _parse_hash(agent.password_hash)
        except ValueError as exc:
            raise ValueError(f"agent {agent.agent_id!r}: password_hash: {exc}") from None


def load_agents(path: Path) -> list[AgentSpec]:
    """The agents file (pipelines/handover/config.py's format) for signing in: at least one agent, every
    hash well-formed; AgentsFileError names the file and each problem."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise AgentsFileError(f"{path}: cannot read the agents file: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise AgentsFileError(f"{path}: not valid YAML: {exc}") from None
    try:
        agents = AgentsFile.model_validate(data).agents
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors())
        raise AgentsFileError(f"{path}: {problems}") from None
    if not agents:
        raise AgentsFileError(f"{path}: no agents: nobody could sign in")
    try:
        check_hashes(agents)
    except ValueError as exc:
        raise AgentsFileError(f"{path}: {exc}") from None
    return agents


# The demo team `supportflow run` creates: two agents with different skills and a supervisor.
DEMO_AGENTS: tuple[dict[str, Any], ...] = (
    {"agent_id": "ana", "display_name": "Ana Lopez", "role": "agent", "skills": ["*"], "languages": ["en", "es"],
     "capacity": 3, "queues": ["general", "billing"]},
    {"agent_id": "ben", "display_name": "Ben Okafor", "role": "agent",
     "skills": ["order", "shipping_address", "delivery"],
     "languages": ["en"], "capacity": 3, "queues": ["general"]},
    {"agent_id": "sam", "display_name": "Sam Weber", "role": "supervisor", "skills": ["*"], "languages": ["en", "de"],
     "capacity": 5, "queues": ["general", "billing"]},
)  # fmt: skip


def ensure_demo_agents(path: Path) -> dict[str, str] | None:
    """Write the demo agents file with fresh random passwords if `path` does not exist.

    Returns {agent id: password} when it wrote the file (to be shown once), else None. The file
    holds only hashes and is readable by its owner alone.
    """
    if path.exists():
        return None
    passwords = {spec["agent_id"]: secrets.token_urlsafe(9) for spec in DEMO_AGENTS}
    agents = [{**spec, "password_hash": hash_password(passwords[spec["agent_id"]])} for spec in DEMO_AGENTS]
    check_hashes(AgentsFile.model_validate({"agents": agents}).agents)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        "# Agents of the supportflow workspace (demo team, written by the first start).\n"
        "# Passwords are scrypt hashes: `supportflow workspace hash-password` makes a new one.\n"
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(header + yaml.safe_dump({"agents": agents}, sort_keys=False, allow_unicode=True))
    return passwords


class TokenError(Exception):
    """A token that does not open the workspace: `reason` is "expired" or "invalid"."""

    def __init__(self, reason: Literal["expired", "invalid"], message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Claims:
    agent_id: str
    expires_at: float


class Tokens:
    """Signed session tokens (JWT, HS256) for one agent, valid for `ttl_s`."""

    def __init__(self, secret: bytes, ttl_s: float = 8 * 3600) -> None:
        if len(secret) < 32:
            raise ValueError("the workspace token secret needs at least 32 bytes")
        self.secret = secret
        self.ttl_s = ttl_s

    def issue(self, agent_id: str, now: float | None = None, ttl_s: float | None = None) -> str:
        issued = time.time() if now is None else now
        claims = {
            "iss": ISSUER,
            "sub": agent_id,
            "iat": int(issued),
            "exp": int(issued + (self.ttl_s if ttl_s is None else ttl_s)),
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self.secret, algorithm="HS256")

    def verify(self, token: str) -> Claims:
        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=["HS256"],  # never "none", never a key the token names
                issuer=ISSUER,
                options={"require": ["exp", "sub", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("expired", "the session has expired; sign in again") from None
        except jwt.PyJWTError:
            raise TokenError("invalid", "the session token is not valid; sign in again") from None
        return Claims(agent_id=str(claims["sub"]), expires_at=float(claims["exp"]))


class LoginThrottle:
    """Throttles failed sign-ins without letting anyone lock an agent out.

    Failures count in a sliding window of `window_s`, under three keys:

    - **(agent id, address)**: `max_failures` wrong passwords for one agent from one address pause
      that pair (429 until the window passes): a guesser at one address stops, the agent's own
      address is untouched.
    - **address**: `max_per_address` failures from one address, for any agent ids, pause the address.
    - **agent id**, from every address: past `max_per_agent`, sign-ins *slow down* rather than stop.
      An address the agent has signed in from before passes as usual; any other address gets one
      attempt per backoff interval (1 s, doubling with each further failure, at most `max_backoff_s`),
      the rest 429 with Retry-After. So an attacker spreading guesses over many addresses is slowed
      to a trickle, and the agent at their usual desk is never locked out.

    State is in this process: the workspace is one process (the web app beside the one escalation
    router that owns the queue), so there is no replica to share it with. A restart forgets it,
    known addresses included: after one, an agent at a new address is slowed, never refused.
    """

    def __init__(
        self,
        max_failures: int = 5,
        window_s: float = 300.0,
        max_per_address: int = 20,
        max_per_agent: int = 20,
        max_backoff_s: float = 60.0,
        known_for_s: float = 30 * 86400.0,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_per_address = max_per_address
        self.max_per_agent = max_per_agent
        self.max_backoff_s = max_backoff_s
        self.known_for_s = known_for_s
        self._failures: dict[str, deque[float]] = {}
        self._known: dict[str, dict[str, float]] = {}  # agent id -> {address: last sign-in}
        self._next_slot: dict[str, float] = {}  # agent id -> when an unknown address may try again

    def _recent(self, key: str, now: float) -> deque[float]:
        failures = self._failures.setdefault(key, deque())
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        return failures

    def _known_address(self, agent_id: str, client: str, now: float) -> bool:
        seen = self._known.get(agent_id, {}).get(client)
        return seen is not None and seen > now - self.known_for_s

    def retry_after(self, agent_id: str, client: str, now: float | None = None) -> float | None:
        """Seconds until this attempt may be made, or None to check the password now.

        Allowing an attempt from an unknown address while the agent id is slowed takes the
        agent id's one slot until the next backoff interval.
        """
        now = time.monotonic() if now is None else now
        waits = []
        pauses = ((f"pair:{client} {agent_id}", self.max_failures), (f"client:{client}", self.max_per_address))
        for key, limit in pauses:
            failures = self._recent(key, now)
            if len(failures) >= limit:
                waits.append(failures[0] + self.window_s - now)
        if waits:
            return max(waits)
        excess = len(self._recent(f"agent:{agent_id}", now)) - self.max_per_agent
        if excess < 0 or self._known_address(agent_id, client, now):
            return None
        slot = self._next_slot.get(agent_id, 0.0)
        if now < slot:
            return slot - now
        self._next_slot[agent_id] = now + min(2.0**excess, self.max_backoff_s)
        return None

    def failed(self, agent_id: str, client: str, now: float | None = None) -> float:
        """Count a failure; returns its time. Count each attempt *before* checking its password (and call
        `succeeded` if it was right): concurrent guesses then cannot all slip in under a limit."""
        now = time.monotonic() if now is None else now
        for key in (f"pair:{client} {agent_id}", f"client:{client}", f"agent:{agent_id}"):
            self._recent(key, now).append(now)
        if len(self._failures) > 100_000:  # bounded: forget keys with no recent failure
            self._failures = {k: v for k, v in self._failures.items() if v and v[-1] > now - self.window_s}
        return now

    def succeeded(self, agent_id: str, client: str, attempt: float) -> None:
        """The attempt counted at `attempt` was right: it is no failure, the pair's earlier failures are
        forgotten, and the address is known. The address's earlier failures stay, so a guesser who
        knows one password cannot clear its count for the others."""
        for key in (f"client:{client}", f"agent:{agent_id}"):
            with contextlib.suppress(KeyError, ValueError):
                self._failures[key].remove(attempt)
        self._failures.pop(f"pair:{client} {agent_id}", None)
        known = self._known.setdefault(agent_id, {})
        known[client] = attempt
        if len(known) > 50:  # bounded: the agent's most recent addresses
            for address in sorted(known, key=known.__getitem__)[: len(known) - 50]:
                del known[address]


def check_password(agents: dict[str, AgentSpec], agent_id: str, password: str) -> AgentSpec | None:
    """The agent these credentials sign in, or None; as slow for an unknown id as for a wrong password."""
    agent = agents.get(agent_id)
    ok = verify_password(password, agent.password_hash if agent is not None else _DUMMY_HASH)
    return agent if ok and agent is not None else None


def may_access(agent: AgentSpec, entry: QueueEntry) -> bool:
    """Whether the agent may see the entry: theirs, or waiting in one of their queues; a supervisor, any."""
    if agent.role == "supervisor" or entry.agent_id == agent.agent_id:
        return True
    return entry.status == "waiting" and ("*" in agent.queues or entry.queue in agent.queues)


def may_act(agent: AgentSpec, entry: QueueEntry) -> bool:
    """Whether the agent may answer or change the entry: assigned to them; a supervisor, any.

    A waiting entry of their queue is theirs to read, not to answer: the router gives it to one
    agent, so two people never answer the same customer at once.
    """
    return agent.role == "supervisor" or entry.agent_id == agent.agent_id

"""The workspace's sign-in pieces: scrypt hashes, the agents file, the demo team, tokens, the login throttle."""

from __future__ import annotations

import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipelines.handover.auth import (
    AgentsFileError,
    LoginThrottle,
    TokenError,
    Tokens,
    check_password,
    ensure_demo_agents,
    hash_password,
    load_agents,
    verify_password,
)
from pipelines.runtime.settings import PROJECT_DIR


def test_a_hash_verifies_its_password_only_and_never_repeats():
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first != second, "a fresh salt each time"
    assert first.startswith("scrypt$16384$8$1$")
    assert verify_password("correct horse", first) and verify_password("correct horse", second)
    assert not verify_password("correct hors", first)
    for broken in ("", "scrypt$1$8$1$AAAA$AAAA", "bcrypt$whatever", first.replace("$", "$x", 1)):
        assert not verify_password("correct horse", broken)
    with pytest.raises(ValueError):
        hash_password("")


def test_the_agents_file_is_refused_whole_with_the_file_and_field_named(tmp_path: Path):
    good = {"agent_id": "ana", "password_hash": hash_password("pw-ana-123")}
    cases = {
        "no-agents.yaml": ({"agents": []}, "no agents"),
        "bad-hash.yaml": ({"agents": [{**good, "password_hash": "plain-text"}]}, "password_hash"),
        "bad-field.yaml": ({"agents": [{**good, "capacity": 0}]}, "capacity"),
        "twice.yaml": ({"agents": [good, good]}, "twice"),
    }
    for name, (data, field) in cases.items():
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data))
        with pytest.raises(AgentsFileError) as refused:
            load_agents(path)
        assert str(path) in str(refused.value) and field in str(refused.value), (name, str(refused.value))
    with pytest.raises(AgentsFileError, match="cannot read"):
        load_agents(tmp_path / "missing.yaml")


def test_the_demo_team_is_written_once_with_random_passwords_readable_by_its_owner_only(tmp_path: Path):
    path = tmp_path / "data" / "workspace-agents.yaml"
    passwords = ensure_demo_agents(path)
    assert passwords is not None and set(passwords) == {"ana", "ben", "sam"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert not any(password in text for password in passwords.values()), "only hashes are stored"
    agents = {a.agent_id: a for a in load_agents(path)}
    assert agents["sam"].role == "supervisor"
    assert all(check_password(agents, name, password) is not None for name, password in passwords.items())
    assert ensure_demo_agents(path) is None, "the second start leaves the file (and its passwords) alone"
    assert ensure_demo_agents(tmp_path / "other.yaml") != passwords, "another install gets other passwords"


def test_unknown_agents_and_wrong_passwords_look_the_same_and_take_as_long(tmp_path: Path):
    path = tmp_path / "agents.yaml"
    path.write_text(yaml.safe_dump({"agents": [{"agent_id": "ana", "password_hash": hash_password("pw-ana-123")}]}))
    agents = {a.agent_id: a for a in load_agents(path)}
    timings = {}
    for who, password in (("ana", "wrong"), ("nobody", "wrong")):
        started = time.perf_counter()
        assert check_password(agents, who, password) is None
        timings[who] = time.perf_counter() - started
    assert timings["nobody"] > timings["ana"] / 4, "an unknown id still pays for a scrypt check"
    assert check_password(agents, "ana", "pw-ana-123") is agents["ana"]


def test_tokens_carry_the_agent_and_expire():
    tokens = Tokens(b"k" * 32, ttl_s=60)
    claims = tokens.verify(tokens.issue("ana"))
    assert claims.agent_id == "ana" and claims.expires_at > time.time() + 50
    with pytest.raises(TokenError) as expired:
        tokens.verify(tokens.issue("ana", now=time.time() - 120))
    assert expired.value.reason == "expired"
    with pytest.raises(TokenError) as forged:
        tokens.verify(Tokens(b"x" * 32).issue("ana"))
    assert forged.value.reason == "invalid"
    import jwt

    unsigned = jwt.encode({"sub": "ana", "exp": int(time.time()) + 60, "iss": "supportflow-workspace"}, None, "none")
    with pytest.raises(TokenError):
        tokens.verify(unsigned)
    with pytest.raises(ValueError):
        Tokens(b"short")


def guess(throttle: LoginThrottle, agent_id: str, client: str, now: float) -> float | None:
    """One wrong password as the workspace tries it: the check, then the attempt counted as failed."""
    wait = throttle.retry_after(agent_id, client, now=now)
    if wait is None:
        throttle.failed(agent_id, client, now=now)
    return wait


def test_failures_pause_one_agent_from_one_address_and_a_busy_address_but_not_the_agent_elsewhere():
    throttle = LoginThrottle(max_failures=3, window_s=60, max_per_address=5, max_per_agent=100)
    assert [guess(throttle, "ana", "10.0.0.1", now=100 + n) for n in range(3)] == [None] * 3
    assert throttle.retry_after("ana", "10.0.0.1", now=103) == pytest.approx(57), "this pair is paused"
    assert throttle.retry_after("ana", "10.0.0.2", now=103) is None, "ana from her own address is not"
    assert guess(throttle, "ben", "10.0.0.1", now=104) is None
    assert guess(throttle, "cy", "10.0.0.1", now=105) is None
    assert throttle.retry_after("dee", "10.0.0.1", now=106) == pytest.approx(54), "five failures pause the address"
    assert throttle.retry_after("ana", "10.0.0.1", now=161) is None, "the window passed"


def test_an_attack_from_many_addresses_cannot_lock_the_agent_out_of_their_own_address():
    throttle = LoginThrottle(max_failures=5, window_s=300, max_per_address=20, max_per_agent=20)
    attempt = throttle.failed("ana", "198.51.100.7", now=0)  # yesterday's sign-in from her desk
    throttle.succeeded("ana", "198.51.100.7", attempt)
    waits = [guess(throttle, "ana", f"203.0.113.{n}", now=10 + n * 0.01) for n in range(50)]
    refused = [w for w in waits if w is not None]
    assert waits[:20] == [None] * 20, "the first failures are only counted"
    assert len(refused) == 29 and all(0 < w <= 1 for w in refused), "then one guess per backoff slot, the rest 429"
    assert throttle.retry_after("ana", "198.51.100.7", now=10.6) is None, "her own address still signs in"


def test_the_slowdown_backs_off_exponentially_up_to_a_cap_and_ends_with_the_window():
    throttle = LoginThrottle(max_failures=5, window_s=300, max_per_address=20, max_per_agent=4, max_backoff_s=8)
    now = 0.0
    for n in range(4):
        assert guess(throttle, "ana", f"203.0.113.{n}", now=now) is None
    intervals = []
    for n in range(6):  # each guess waits as long as it is told, then gets the slot
        wait = throttle.retry_after("ana", f"198.18.0.{n}", now=now)
        if wait is not None:
            now += wait
            assert throttle.retry_after("ana", f"198.18.0.{n}", now=now) is None
        throttle.failed("ana", f"198.18.0.{n}", now=now)
        intervals.append(wait or 0.0)
    assert intervals == pytest.approx([0, 1, 2, 4, 8, 8]), "1 s doubling per failure, capped"
    assert throttle.retry_after("ana", "198.18.1.1", now=now + 300) is None, "the failures left the window"


def test_a_right_password_clears_its_pair_but_not_the_addresss_other_failures():
    throttle = LoginThrottle(max_failures=3, window_s=60, max_per_address=3, max_per_agent=100)
    guess(throttle, "ana", "10.0.0.1", now=1)
    guess(throttle, "ben", "10.0.0.1", now=2)
    attempt = throttle.failed("ana", "10.0.0.1", now=3)  # counted before its check, as the workspace does
    throttle.succeeded("ana", "10.0.0.1", attempt)
    assert len(throttle._failures["client:10.0.0.1"]) == 2, "the right attempt is no failure; the wrong ones stay"
    assert throttle._failures.get("pair:10.0.0.1 ana") is None
    guess(throttle, "cy", "10.0.0.1", now=4)
    assert throttle.retry_after("ana", "10.0.0.1", now=5) is not None, "knowing ana's password unlocks no guessing"


def test_concurrent_guesses_are_counted_before_their_checks_end():
    """The workspace counts an attempt before scrypt runs: a burst cannot all pass the check at once."""
    throttle = LoginThrottle(max_failures=3, window_s=60, max_per_address=100, max_per_agent=100)
    admitted = 0
    for _ in range(10):  # ten requests in flight, none of whose password checks has finished
        if throttle.retry_after("ana", "10.0.0.1", now=1) is None:
            throttle.failed("ana", "10.0.0.1", now=1)
            admitted += 1
    assert admitted == 3


def test_hash_password_command_prints_a_hash_that_verifies():
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "workspace", "hash-password", "--password-stdin"],
        input="a-long-password\n", capture_output=True, text=True, cwd=PROJECT_DIR, timeout=60, check=True,
    )  # fmt: skip
    assert verify_password("a-long-password", result.stdout.strip())
    short = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "workspace", "hash-password", "--password-stdin"],
        input="short\n", capture_output=True, text=True, cwd=PROJECT_DIR, timeout=60,
    )  # fmt: skip
    assert short.returncode == 2 and "at least 8 characters" in short.stderr

"""Fast tier: the pure rules of identities (tokens, credentials, anonymous mode, limits)."""

from __future__ import annotations

import base64
from datetime import datetime

import pytest

from opus.auth import (
    Caller,
    credentials,
    may_change,
    may_run,
    may_see,
    new_token,
    split_token,
    user_limits,
)
from opus.config import Settings
from opus.errors import Unauthorized
from opus.jobdefs.model import Execution, JobDefinition
from opus.store.users import GroupRecord, UserRecord


def test_tokens_are_random_prefixed_and_only_their_hash_is_kept() -> None:
    key, digest, token = new_token()
    assert token.startswith(f"opus_{key}.")
    secret = token.split(".", 1)[1]
    assert len(base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))) >= 16
    assert secret not in digest and len(digest) == 64
    assert split_token(token) == (key, secret)
    assert new_token()[2] != token
    for bad in ("", "opus_", "opus_abc", "opus_.x", "bearer opus_a.b", "x" * 40):
        assert split_token(bad) is None


def test_credentials_basic_and_bearer() -> None:
    basic = base64.b64encode(b"alice:opus_k.s").decode()
    assert credentials(f"Basic {basic}") == ("alice", "opus_k.s")
    assert credentials("Bearer opus_k.s") == (None, "opus_k.s")
    assert credentials("bearer   opus_k.s ") == (None, "opus_k.s")
    for bad in ("Basic !!!", "Basic " + base64.b64encode(b"nocolon").decode(), "Digest x", ""):
        with pytest.raises(Unauthorized):
            credentials(bad)


@pytest.mark.parametrize(
    ("host", "allowed", "expected"),
    [
        ("127.0.0.1", None, True),
        ("::1", None, True),
        ("localhost", None, True),
        ("0.0.0.0", None, False),
        ("192.168.1.5", None, False),
        ("0.0.0.0", True, True),
        ("127.0.0.1", False, False),
    ],
)
def test_anonymous_only_on_loopback_unless_set(
    host: str, allowed: bool | None, expected: bool
) -> None:
    assert Settings(host=host, allow_anonymous=allowed).anonymous is expected


def test_who_may_see_and_change() -> None:
    alice = Caller("alice", frozenset({"ztf"}))
    admin = Caller("root", admin=True)
    public = Caller(None, anonymous_public=True)
    assert may_see(alice, "alice") and may_change(alice, "alice")
    assert may_see(alice, "bob", {"ztf"}) and not may_change(alice, "bob")
    assert not may_see(alice, "bob", {"hess"})
    assert may_see(admin, "bob") and may_change(admin, "bob")
    assert may_see(public, None) and not may_see(public, "alice")
    assert not may_see(Caller("alice"), None)  # anonymous mode off: anonymous jobs hidden
    assert not may_see(Caller(None), None)


def _jobdef(groups: list[str]) -> JobDefinition:
    return JobDefinition(name="x", groups=groups, execution=Execution(script="true"))


def test_definitions_restricted_to_groups() -> None:
    assert may_run(Caller(None), _jobdef([]))
    assert may_run(Caller("a", frozenset({"ztf"})), _jobdef(["ztf", "hess"]))
    assert not may_run(Caller("a", frozenset({"tides"})), _jobdef(["ztf"]))
    assert may_run(Caller("root", admin=True), _jobdef(["ztf"]))


def test_limits_own_then_most_generous_group_then_server() -> None:
    settings = Settings(max_active_jobs=10, max_execution_duration=100)
    now = datetime(2026, 1, 1)
    user = UserRecord("a", False, now, None, None, None)
    groups = [
        GroupRecord("g1", "", now, 3, 50, None),
        GroupRecord("g2", "", now, 5, None, 2.0),
    ]
    assert user_limits(settings, user, []).max_active_jobs == 10
    found = user_limits(settings, user, groups)
    assert (found.max_active_jobs, found.max_execution_duration) == (5, 50)
    assert found.max_destruction_days == 2.0
    own = UserRecord("a", False, now, 1, 7, None)
    assert user_limits(settings, own, groups).max_active_jobs == 1
    unlimited = [*groups, GroupRecord("g3", "", now, 0, None, None)]
    assert user_limits(settings, user, unlimited).max_active_jobs == 0

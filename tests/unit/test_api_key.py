"""The ApiKey aggregate: field rules, rotation and revocation, replay through the codec."""

from __future__ import annotations

from functools import reduce
from typing import Any
from uuid import uuid4

import pytest

from commands.api_keys import KEY_RE, KEY_ROLES, KEY_SCOPES, actor_of
from commands.codec import MsgspecMapper
from commands.context import Role, Scope
from domain.api_key import ApiKey, api_key_id
from domain.errors import Conflict, ValidationFailed
from domain.meta import EventMeta

META = EventMeta(actor="ada", correlation_id="c-1")


def _key(**overrides: Any) -> ApiKey:
    args: dict[str, Any] = {
        "prefix": "abcde12345",
        "name": "gateway north 7",
        "roles": ["viewer"],
        "scopes": ["ingest", "ingest"],
        "secret_id": uuid4(),
        "meta": META,
    }
    args.update(overrides)
    return ApiKey.create(**args, known_roles=KEY_ROLES, known_scopes=KEY_SCOPES)


def test_created_key_holds_its_grants_and_acts_as_its_prefix() -> None:
    key = _key()
    assert key.id == api_key_id("abcde12345")
    assert (key.roles, key.scopes, key.generation, key.active) == (
        ("viewer",),
        ("ingest",),
        1,
        True,
    )
    actor = actor_of(key)
    assert actor.subject == "apikey:abcde12345"
    assert actor.roles == {Role.VIEWER} and actor.scopes == {Scope.INGEST}


@pytest.mark.parametrize(
    ("overrides", "field", "rule"),
    [
        ({"prefix": "ABC"}, "prefix", "format"),
        ({"name": ""}, "name", "format"),
        ({"name": "x" * 101}, "name", "format"),
        ({"name": "<script>"}, "name", "format"),
        ({"roles": ["customer"]}, "roles[0]", "allowed"),
        ({"scopes": ["ingest", "all"]}, "scopes[1]", "allowed"),
        ({"roles": [], "scopes": []}, "scopes", "required"),
    ],
)
def test_field_rules(overrides: dict[str, Any], field: str, rule: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        _key(**overrides)
    assert (field, rule) in {(e.field, e.rule) for e in refused.value.errors}


def test_rotation_and_revocation() -> None:
    key = _key()
    first = key.secret_id
    second = uuid4()
    key.rotate(second, EventMeta(actor="bob", correlation_id="c-2"))
    assert (key.generation, key.secret_id, key.rotated_by) == (2, second, "bob")
    with pytest.raises(ValidationFailed):
        key.revoke("  ", META)
    key.revoke("leaked", EventMeta(actor="cat", correlation_id="c-3"))
    assert not key.active and key.revoked_by == "cat" and key.revoke_reason == "leaked"
    with pytest.raises(Conflict, match="already revoked"):
        key.revoke("again", META)
    with pytest.raises(Conflict, match="revoked"):
        key.rotate(uuid4(), META)
    assert first != key.secret_id


def test_events_replay_through_the_codec_and_carry_no_secret() -> None:
    key = _key()
    key.rotate(uuid4(), META)
    key.revoke("done", META)
    events = key.collect_events()
    mapper = MsgspecMapper()
    stored = [mapper.to_stored_event(e) for e in events]
    for record in stored:
        state = record.state.decode()
        assert 'secret"' not in state and "digest" not in state
    decoded: list[Any] = [mapper.to_domain_event(s) for s in stored]
    replayed: Any = reduce(lambda agg, e: e.mutate(agg), decoded, None)
    assert isinstance(replayed, ApiKey)
    assert (replayed.generation, replayed.secret_id, replayed.active) == (2, key.secret_id, False)


def test_key_format() -> None:
    assert KEY_RE.match("hes_abcde12345_" + "A" * 43)
    for bad in ("hes_abcde12345_" + "A" * 42, "hes_ABCDE12345_" + "A" * 43, "abcde12345"):
        assert not KEY_RE.match(bad)

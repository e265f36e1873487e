"""Structured logs: JSON lines with correlation ids and extras; secret-shaped text scrubbed."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest

from api.graphql.redaction import without_values
from config.logs import (
    CORRELATION_ID,
    JsonFormatter,
    ScrubSecrets,
    TextFormatter,
    configure,
    scrub,
)
from config.settings import Settings

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJpdnkifQ.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
KEY = "hes_abcde12345_" + "Q" * 43


def test_scrub_removes_tokens_keys_and_url_passwords() -> None:
    text = (
        f"Authorization: Bearer {JWT} key={KEY} ApiKey sEcReTvAlUe123 "
        "postgresql://hes:hunter2@db:5432/hes nats://u:p4ss@nats:4222"
    )
    clean = scrub(text)
    for secret in (JWT, "Q" * 43, "sEcReTvAlUe123", "hunter2", "p4ss"):
        assert secret not in clean
    assert "hes_abcde12345_<redacted>" in clean  # the public prefix stays, for support
    assert "postgresql://hes:<redacted>@db:5432/hes" in clean


def _logger(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(ScrubSecrets())
    logger = logging.getLogger(f"test-logs-{id(stream)}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return logger, stream


def test_json_lines_carry_correlation_id_extras_and_scrubbed_arguments() -> None:
    logger, stream = _logger(JsonFormatter())
    token = CORRELATION_ID.set("req-42")
    try:
        logger.warning("refused %s", f"Bearer {JWT}", extra={"subject": "ivy", "n": 3})
        try:
            raise ValueError(f"bad key {KEY}")
        except ValueError:
            logger.exception("failed")
    finally:
        CORRELATION_ID.reset(token)
    logger.info("outside")
    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "refused Bearer <redacted-jwt>"
    assert (first["level"], first["correlation_id"], first["subject"], first["n"]) == (
        "WARNING",
        "req-42",
        "ivy",
        3,
    )
    assert "Q" * 43 not in second["exception"] and "ValueError" in second["exception"]
    assert "correlation_id" not in third
    assert JWT not in stream.getvalue()


def test_text_format_appends_the_correlation_id() -> None:
    logger, stream = _logger(TextFormatter())
    token = CORRELATION_ID.set("req-7")
    try:
        logger.info("hello")
    finally:
        CORRELATION_ID.reset(token)
    assert stream.getvalue().rstrip().endswith("hello [req-7]")


def test_settings_never_show_their_secrets() -> None:
    settings = Settings.of(
        database_url="postgresql://hes:pg-pass-1@db/hes",
        redis_url="redis://:redis-pass-2@cache:6379/0",
        jwt_secret="jwt-secret-" + "3" * 30,
        smtp_password="smtp-pass-4",
    )
    for text in (repr(settings), str(settings), f"{settings}"):
        for secret in ("pg-pass-1", "redis-pass-2", "3" * 30, "smtp-pass-4"):
            assert secret not in text
    assert "postgresql://hes:<redacted>@db/hes" in repr(settings)


def test_graphql_coercion_errors_lose_the_echoed_value() -> None:
    key = "00112233445566778899aabbccddeeff"
    for message, kept in (
        (
            f"Variable '$i' has invalid value: Expected value of type 'MeterKeysInput' not to"
            f" include unknown field 'x', found: {{'ek': '{key}', 'x': 1}}.",
            "unknown field 'x' (value not shown).",
        ),
        (f"String cannot represent a non string value: ['{key}']", "non string value"),
        (f'Int cannot represent non-integer value: "{key}"', "non-integer value"),
    ):
        cleaned = without_values(message)
        assert key not in cleaned and kept in cleaned
    assert without_values("no meter found: use a serial") == "no meter found: use a serial"


def test_configured_logging_follows_a_swapped_and_closed_stderr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        swapped = io.StringIO()
        monkeypatch.setattr(sys, "stderr", swapped)
        configure("INFO", "text")  # as an in-process CLI run does, under a runner's stream
        swapped.close()
        now = io.StringIO()
        monkeypatch.setattr(sys, "stderr", now)

        logging.getLogger("test-logs-swap").warning("after the swap")

        assert "WARNING test-logs-swap: after the swap" in now.getvalue()
        assert "Logging error" not in now.getvalue()
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)

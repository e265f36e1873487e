"""Settings sections: each checks its own fields and names the variable and the rule it broke."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from config.settings import (
    ApiSettings,
    AuthSettings,
    DatabaseSettings,
    DetectorSettings,
    DlmsSettings,
    InsightSettings,
    LoggingSettings,
    NatsSettings,
    NotificationSettings,
    ReadingSettings,
    RuntimeSettings,
    Section,
    Settings,
    SettingsError,
)

ROOT = Path(__file__).resolve().parents[2]

BAD: list[tuple[type[Section], dict[str, str], str]] = [
    (DatabaseSettings, {"HES_DB_SCHEMA": "Hes-1"}, "HES_DB_SCHEMA='Hes-1': must be a lower-case"),
    (NatsSettings, {"HES_NATS_PREFIX": "a.b"}, "HES_NATS_PREFIX='a.b': letters, digits"),
    (NatsSettings, {"HES_STREAM_REPLICAS": "6"}, "HES_STREAM_REPLICAS: must be between 1 and 5"),
    (ReadingSettings, {"HES_READING_PARTITIONS": "0"}, "HES_READING_PARTITIONS: must be between"),
    (ReadingSettings, {"HES_READING_WRITERS": "65"}, "HES_READING_WRITERS 1..64"),
    (ReadingSettings, {"HES_READING_FETCH_BATCH": "10001"}, "HES_READING_FETCH_BATCH 1..10000"),
    (ReadingSettings, {"HES_READING_ACK_WAIT_SECONDS": "0.5"}, "HES_READING_ACK_WAIT_SECONDS"),
    (ReadingSettings, {"HES_READING_LEASE_SECONDS": "1"}, "HES_READING_LEASE_SECONDS: must be"),
    (ReadingSettings, {"HES_RETENTION_1M_DAYS": "0"}, "HES_RETENTION_*_DAYS: must be at least 1"),
    (DetectorSettings, {"HES_OVERLOAD_WINDOWS": "4"}, "HES_OVERLOAD_WINDOWS in 1..3"),
    (DetectorSettings, {"HES_OVERLOAD_THRESHOLD_PCT": "0"}, "HES_OVERLOAD_THRESHOLD_PCT must be"),
    (DetectorSettings, {"HES_COMM_MISSED_INTERVALS": "0"}, "HES_COMM_MISSED_INTERVALS must be"),
    (DetectorSettings, {"HES_ANOMALY_DROP_PCT": "100"}, "HES_ANOMALY_DROP_PCT in (0, 100)"),
    (DetectorSettings, {"HES_DETECTOR_INTERVAL_SECONDS": "0"}, "HES_DETECTOR_INTERVAL_SECONDS"),
    (InsightSettings, {"HES_INSIGHTS_WINDOW_DAYS": "7"}, "HES_INSIGHTS_WINDOW_DAYS in 14..91"),
    (InsightSettings, {"HES_INSIGHTS_ANOMALY_ALERT_SCORE": "0"}, "(0, 100]"),
    (InsightSettings, {"HES_INSIGHTS_EARLY_WARNING_PCT": "-1"}, "0 (off) or positive"),
    (DlmsSettings, {"HES_DLMS_PUSH_LAYOUT": "1.0.99.7.0.255:0:35"}, "HES_DLMS_PUSH_LAYOUT: push"),
    (DlmsSettings, {"HES_DLMS_CONCURRENCY": "0"}, "HES_DLMS_CONCURRENCY 1..10000"),
    (DlmsSettings, {"HES_DLMS_RETRIES": "11"}, "HES_DLMS_RETRIES 0..10"),
    (DlmsSettings, {"HES_DLMS_PUSH_PORT": "65536"}, "HES_DLMS_PUSH_PORT 0..65535"),
    (DlmsSettings, {"HES_DLMS_TIMEOUT_SECONDS": "0"}, "HES_DLMS_TIMEOUT_SECONDS > 0"),
    (DlmsSettings, {"HES_DLMS_PROFILE_DAYS": "61"}, "HES_DLMS_PROFILE_DAYS: must be between"),
    (DlmsSettings, {"HES_DLMS_DEFAULT_PROFILE": "Not A Name"}, "HES_DLMS_DEFAULT_PROFILE"),
    (DlmsSettings, {"HES_DLMS_SYSTEM_TITLE": "48455348"}, "HES_DLMS_SYSTEM_TITLE: must be 16"),
    (DlmsSettings, {"HES_DLMS_SCHEDULE": "registers=often"}, "HES_DLMS_SCHEDULE/HES_DLMS_GROUP"),
    (NotificationSettings, {"HES_WEBHOOK_ALLOWED_NETWORKS": "x"}, "HES_WEBHOOK_ALLOWED_NETWORKS"),
    (NotificationSettings, {"HES_NOTIFICATION_MAX_ATTEMPTS": "21"}, "HES_NOTIFICATION_MAX_ATTE"),
    (NotificationSettings, {"HES_NOTIFICATION_BACKOFF_FACTOR": "0.5"}, "BACKOFF_FACTOR: must be"),
    (NotificationSettings, {"HES_NOTIFICATION_TIMEOUT_SECONDS": "0"}, "BACKOFF/TIMEOUT_SECONDS"),
    (NotificationSettings, {"HES_NOTIFICATION_CONCURRENCY": "0"}, "HES_NOTIFICATION_CONCURRENCY"),
    (ApiSettings, {"HES_PORT": "0"}, "HES_PORT=0: must be between 1 and 65535"),
    (ApiSettings, {"HES_METRICS_TOKEN": "short"}, "HES_METRICS_TOKEN: must have at least 16"),
    (ApiSettings, {"HES_RATE_LIMIT_PER_MINUTE": "0"}, "HES_RATE_LIMIT_PER_MINUTE: must be at"),
    (ApiSettings, {"HES_TRUSTED_PROXIES": "not-a-network"}, "HES_TRUSTED_PROXIES: "),
    (ApiSettings, {"HES_MAX_BODY_BYTES": "1023"}, "HES_MAX_BODY_BYTES: must be at least 1024"),
    (ApiSettings, {"HES_DANGEROUS_PER_HOUR": "0"}, "HES_DANGEROUS_BULK_THRESHOLD/PER_HOUR"),
    (ApiSettings, {"HES_CORS_ORIGINS": "ftp://x"}, "HES_CORS_ORIGINS: 'ftp://x' is not an origin"),
    (AuthSettings, {"HES_JWT_SECRET": "short"}, "HES_JWT_SECRET: must have at least 32"),
    (AuthSettings, {"HES_JWT_JWKS_URL": "http://idp.example/certs"}, "HES_JWT_JWKS_URL: must be"),
    (AuthSettings, {"HES_JWT_LEEWAY_SECONDS": "301"}, "HES_JWT_LEEWAY_SECONDS: must be between"),
    (
        AuthSettings,
        {"HES_JWT_JWKS_URL": "https://idp.example/certs", "HES_JWT_JWKS_FILE": "/tmp/jwks"},
        "HES_JWT_JWKS_URL and HES_JWT_JWKS_FILE: set at most one",
    ),
    (LoggingSettings, {"HES_LOG_FORMAT": "xml"}, "HES_LOG_FORMAT='xml': json or text"),
    (RuntimeSettings, {"HES_METRICS_PORT": "eighty"}, "HES_METRICS_PORT: Expected `int | null`"),
]


@pytest.mark.parametrize(("section", "env", "message"), BAD, ids=[str(b[1]) for b in BAD])
def test_a_bad_value_is_refused_by_its_section_naming_the_variable(
    section: type[Section], env: dict[str, str], message: str
) -> None:
    assert set(env) <= set(section.variables())  # the variable belongs to this section
    with pytest.raises(SettingsError, match=re.escape(message)):
        Settings.from_env(env)


def test_sections_check_their_fields_when_built_directly() -> None:
    with pytest.raises(SettingsError, match="HES_READING_PARTITIONS"):
        ReadingSettings(partitions=0)
    with pytest.raises(SettingsError, match="HES_PORT=70000"):
        ApiSettings(port=70_000)
    with pytest.raises(SettingsError, match="HES_DB_SCHEMA"):
        Settings().replace(db_schema="Bad Schema")


def test_every_variable_has_one_field_in_one_section() -> None:
    seen: dict[str, str] = {}
    for name, section in Settings.sections().items():
        for variable in section.variables():
            assert variable.startswith("HES_") and variable == variable.upper()
            assert variable not in seen, f"{variable} in {seen.get(variable)} and {name}"
            seen[variable] = name
    assert len(seen) == 85  # 4 HES_INSIGHTS_* (issue 17)


def test_from_env_fills_each_section_and_keeps_defaults() -> None:
    settings = Settings.from_env(
        {
            "HES_DATABASE_URL": "postgresql://hes@127.0.0.1:5432/hes",
            "HES_NATS_URL": "nats://127.0.0.1:4222, nats://127.0.0.1:4223",
            "HES_NATS_PREFIX": "T1_",
            "HES_READING_PARTITIONS": "4",
            "HES_DLMS_PROFILE_DIR": "/etc/hes/profiles",
            "HES_RUN_WORKERS": "false",
            "HES_PORT": "",  # empty: the default
        }
    )
    assert settings.database.url == "postgresql://hes@127.0.0.1:5432/hes"
    assert settings.nats.servers == ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223"]
    assert settings.nats.stream("READINGS") == "T1_READINGS"
    assert settings.nats.subject("hes.ingest.>") == "t1_.hes.ingest.>"
    assert settings.readings.partitions == 4
    assert settings.dlms.profile_dir == Path("/etc/hes/profiles")
    assert settings.runtime.run_workers is False
    assert settings.api.port == 8000
    assert settings.events_source == "urn:hes:hes"
    assert settings.database.eventsourcing_env()["POSTGRES_PORT"] == "5432"


def test_of_and_replace_take_variable_names_without_the_prefix() -> None:
    settings = Settings.of(db_schema="one", reading_partitions=2, jwt_issuer="idp")
    assert (settings.database.schema, settings.readings.partitions) == ("one", 2)
    assert settings.auth.jwt_issuer == "idp"
    changed = settings.replace(nats_prefix="X_", event_source="urn:x")
    assert (changed.nats.prefix, changed.events_source, changed.database.schema) == (
        "X_",
        "urn:x",
        "one",
    )
    assert settings.nats.prefix == ""  # a copy: the original is unchanged
    with pytest.raises(TypeError, match="HES_NO_SUCH_THING does not exist"):
        settings.replace(no_such_thing=1)


def test_settings_import_no_adapter() -> None:
    tree = ast.parse((ROOT / "config" / "settings.py").read_text())
    imported = {
        node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert not {m for m in imported if m.split(".")[0] in ("adapters", "projections", "api")}

"""structlog set-up: secret redaction, JSON/console rendering, level filter, on/off switch."""

from __future__ import annotations

import io
import json
from collections import namedtuple
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from planes import logs
from planes.logs import REDACTED, SWITCH, RedactSecrets, configure_logging, is_secret_key, set_level


@pytest.fixture(autouse=True)
def _restore_structlog(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # configure_logging changes process-wide state: structlog's config, the switch and the
    # remembered stream. Put all three back so other tests see structlog's defaults.
    monkeypatch.setattr(SWITCH, "enabled", True)
    monkeypatch.setattr(logs, "_configured", {})
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


class _TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def redact(**event: Any) -> dict[str, Any]:
    return dict(RedactSecrets()(None, "info", dict(event)))


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


SECRET_KEYS = [
    "api_key",
    "apiKey",
    "API_SECRET",
    "bot_token",
    "password",
    "passwd",
    "passphrase",
    "secret_key",
    "private_key",
    "privateKey",
    "signature",
    "authorization",
    "Authorization",
    "key",
    "Key",
    "hmac_key",
    "key_id",
    "cookie",
    "credentials",
    # Anything containing "token" is redacted, counters included: the regex errs on the safe side.
    "tokens_count",
]
INNOCENT_KEYS = ["symbol", "keys", "monkey", "keyboard", "hotkey", "author", "event", "price"]


# -- RedactSecrets -----------------------------------------------------------------------


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_secret_keys_are_redacted(key: str) -> None:
    assert is_secret_key(key)
    assert redact(event="login", **{key: "s3cr3t"})[key] == REDACTED


@pytest.mark.parametrize("key", INNOCENT_KEYS)
def test_innocent_keys_are_kept(key: str) -> None:
    assert not is_secret_key(key)
    assert redact(**{key: "BTCUSDT"})[key] == "BTCUSDT"


def test_event_is_never_redacted() -> None:
    out = redact(event="token refreshed for api_key", token="abc")  # noqa: S106 - a fake secret to redact

    assert out["event"] == "token refreshed for api_key"
    assert out["token"] == REDACTED


def test_secrets_in_nested_dicts_are_redacted() -> None:
    out = redact(
        event="request",
        request={"headers": {"Authorization": "Bearer x", "Accept": "json"}, "url": "/v5"},
    )

    assert out["request"] == {
        "headers": {"Authorization": REDACTED, "Accept": "json"},
        "url": "/v5",
    }


def test_secrets_in_lists_of_dicts_are_redacted() -> None:
    out = redact(
        event="accounts",
        accounts=[{"name": "main", "api_key": "k1"}, {"name": "sub", "secret": "s2"}],
        pairs=({"symbol": "BTCUSDT", "signature": "sig"},),
    )

    assert out["accounts"] == [
        {"name": "main", "api_key": REDACTED},
        {"name": "sub", "secret": REDACTED},
    ]
    assert out["pairs"] == ({"symbol": "BTCUSDT", "signature": REDACTED},)
    assert isinstance(out["pairs"], tuple)


def test_a_secret_key_redacts_its_whole_value() -> None:
    out = redact(event="x", credentials={"user": "bob", "pw": "x"}, tokens=["a", "b"])

    assert out["credentials"] == REDACTED
    assert out["tokens"] == REDACTED


def test_none_stays_none() -> None:
    out = redact(event="x", api_key=None, nested={"password": None})

    assert out["api_key"] is None
    assert out["nested"] == {"password": None}


def test_plain_values_in_lists_are_kept() -> None:
    out = redact(event="x", symbols=["BTCUSDT", "ETHUSDT"], prices=(1, 2))

    assert out["symbols"] == ["BTCUSDT", "ETHUSDT"]
    assert out["prices"] == (1, 2)


def test_namedtuples_survive_redaction() -> None:
    level = namedtuple("level", ["price", "qty"])

    out = redact(event="book", best=level(100, 2), levels=[level(99, 1)])

    assert out["best"] == level(100, 2)
    assert type(out["best"]) is level
    assert out["levels"] == [level(99, 1)]


def test_redaction_through_a_configured_logger() -> None:
    with capture_logs(processors=[RedactSecrets()]) as captured:
        structlog.get_logger().info("connect", api_key="k", symbol="BTCUSDT")

    assert captured == [
        {"event": "connect", "api_key": REDACTED, "symbol": "BTCUSDT", "log_level": "info"}
    ]


# -- configure_logging -------------------------------------------------------------------


def test_json_format_writes_one_object_per_line() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    log = structlog.get_logger()

    log.info("order.sent", symbol="BTCUSDT", api_key="sk-live-1", nested={"bot_token": "t-9"})
    log.warning("feed.stale", lag_ms=1500)

    first, second = json_lines(stream)
    assert first["event"] == "order.sent"
    assert first["level"] == "info"
    assert first["symbol"] == "BTCUSDT"
    assert first["api_key"] == REDACTED
    assert first["nested"] == {"bot_token": REDACTED}
    assert first["timestamp"].endswith("Z")
    assert second == {
        "event": "feed.stale",
        "lag_ms": 1500,
        "level": "warning",
        "timestamp": second["timestamp"],
    }
    assert "sk-live-1" not in stream.getvalue()
    assert "t-9" not in stream.getvalue()


def test_json_format_renders_exceptions() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)

    try:
        _ = 1 / 0
    except ZeroDivisionError:
        structlog.get_logger().exception("handler.failed", password="p")  # noqa: S106 - a fake secret to redact

    (line,) = json_lines(stream)
    assert line["level"] == "error"
    assert "ZeroDivisionError" in line["exception"]
    assert line["password"] == REDACTED


def test_console_format_renders_text() -> None:
    stream = io.StringIO()
    configure_logging("info", "console", stream=stream)

    structlog.get_logger().info("order.sent", symbol="BTCUSDT", api_key="k")

    text = stream.getvalue()
    assert text.count("\n") == 1
    assert "order.sent" in text
    assert "info" in text
    assert "symbol=BTCUSDT" in text
    assert f"api_key={REDACTED}" in text
    assert "\x1b[" not in text  # no colours on a stream that is not a terminal
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_auto_format_is_json_when_not_a_tty() -> None:
    stream = io.StringIO()
    configure_logging("info", "auto", stream=stream)

    structlog.get_logger().info("hello")

    assert json_lines(stream)[0]["event"] == "hello"


def test_auto_format_is_console_on_a_tty() -> None:
    stream = _TTY()
    configure_logging("info", "auto", stream=stream)

    structlog.get_logger().info("hello", n=1)

    text = stream.getvalue()
    assert "hello" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_level_filter_drops_debug_at_info() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    log = structlog.get_logger()

    log.debug("noise")
    log.info("kept")
    log.error("also.kept")

    assert [line["event"] for line in json_lines(stream)] == ["kept", "also.kept"]


def test_level_names_are_case_insensitive() -> None:
    stream = io.StringIO()
    configure_logging("WARNING", "json", stream=stream)

    structlog.get_logger().info("dropped")
    structlog.get_logger().warning("kept")

    assert [line["event"] for line in json_lines(stream)] == ["kept"]


def test_switch_off_drops_everything() -> None:
    stream = io.StringIO()
    configure_logging("debug", "json", enabled=False, stream=stream)
    log = structlog.get_logger()

    log.debug("a")
    log.critical("b")

    assert stream.getvalue() == ""
    assert SWITCH.enabled is False


def test_switch_can_be_turned_back_on() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    log = structlog.get_logger()

    SWITCH.enabled = False
    log.info("off")
    SWITCH.enabled = True
    log.info("on")

    assert [line["event"] for line in json_lines(stream)] == ["on"]


def test_set_level_changes_the_level() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    log = structlog.get_logger()

    log.debug("before")
    set_level("debug")
    log.debug("after")
    set_level("error")
    log.warning("dropped")
    log.error("kept")

    assert [line["event"] for line in json_lines(stream)] == ["after", "kept"]


def test_set_level_keeps_format_stream_and_switch() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", enabled=False, stream=stream)

    set_level("debug")
    structlog.get_logger().debug("still.off")

    assert SWITCH.enabled is False
    assert stream.getvalue() == ""

    SWITCH.enabled = True
    structlog.get_logger().debug("on.again")
    assert json_lines(stream)[0]["event"] == "on.again"


def test_bound_context_is_rendered_and_redacted() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)

    structlog.get_logger().bind(plane="market", secret="s").info("tick")  # noqa: S106 - a fake secret

    (line,) = json_lines(stream)
    assert line["plane"] == "market"
    assert line["secret"] == REDACTED

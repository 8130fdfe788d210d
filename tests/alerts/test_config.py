"""The ``alerts`` section as the loader reads it: webhooks, secrets from the environment, every
mistake reported with its line (and never a webhook URL, which may carry a token)."""

from __future__ import annotations

import pytest

from gateway.config.load import ConfigError, parse_text
from gateway.config.schema import EVENTS


def test_webhooks_with_defaults_and_a_secret_from_the_environment() -> None:
    config = parse_text(
        "alerts:\n"
        "  webhooks:\n"
        "    - {url: 'https://hooks.example.com/T0/B0/xyz/', secret: '${ALERT_SECRET}'}\n"
        "    - url: http://127.0.0.1:9000/alerts\n"
        "      secret: plain\n"
        "      events: [upstream.up, key.revoked]\n"
        "      format: slack\n"
        "  give_up_after: 3600\n",
        "t.yaml",
        env={"ALERT_SECRET": "from-env"},
    )
    first, second = config.alerts.webhooks
    assert first.url == "https://hooks.example.com/T0/B0/xyz/"  # kept as written
    assert (first.secret, first.events, first.format) == ("from-env", EVENTS, "json")
    assert second.events == ("key.revoked", "upstream.up") and second.format == "slack"
    assert config.alerts.give_up_after == 3600
    assert (config.alerts.timeout, config.alerts.down_after) == (10.0, 10.0)
    assert "from-env" not in repr(config) and "hooks.example.com" not in repr(config)


def test_no_alerts_section_means_no_webhooks() -> None:
    assert parse_text("{}", "t.yaml", env={}).alerts.webhooks == ()


def test_mistakes_are_reported_at_their_lines() -> None:
    text = (
        "alerts:\n"
        "  webhooks:\n"
        "    - {url: 'ftp://hooks.example.com/SECRET-TOKEN', secret: '${UNSET}'}\n"
        "    - {url: 'http://a.example', secret: s, events: [key.deleted], format: xml}\n"
        "    - {secret: s, colour: red}\n"
        "    - {url: 'http://b.example', secret: s, events: []}\n"
        "  timeout: 0\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_text(text, "t.yaml", env={})
    errors = caught.value.errors
    assert errors == [
        "t.yaml:3: alerts.webhooks[0].secret: must not be empty: every POST is signed with it "
        '(X-Gateway-Signature); e.g. secret: "${ALERT_SECRET}"',
        "t.yaml:3: alerts.webhooks[0].url: expected an http:// or https:// URL with a host",
        "t.yaml:4: alerts.webhooks[1].events: unknown event 'key.deleted'; use "
        + ", ".join(EVENTS),
        "t.yaml:4: alerts.webhooks[1].format: must be one of json, slack; got 'xml'",
        "t.yaml:5: alerts.webhooks[2].colour: unknown setting",
        "t.yaml:5: alerts.webhooks[2].url: is required",
        "t.yaml:6: alerts.webhooks[3].events: expected a non-empty list of " + ", ".join(EVENTS),
        "t.yaml:7: alerts.timeout: must be > 0.0, got 0",
    ]
    assert not any("SECRET-TOKEN" in e for e in errors)


def test_the_same_url_and_format_twice_is_an_error() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_text(
            "alerts:\n  webhooks:\n"
            "    - {url: 'http://a.example/x', secret: s, events: [key.revoked]}\n"
            "    - {url: 'http://a.example/x', secret: t, format: slack}\n"
            "    - {url: 'http://a.example/x', secret: t, events: [upstream.up]}\n",
            "t.yaml",
            env={},
        )
    assert caught.value.errors == [
        "t.yaml:5: alerts.webhooks[2]: another webhook has this url and format; merge their "
        "events into one"
    ]

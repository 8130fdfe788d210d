"""The loader: every error of a file at once, as FILE:LINE: dotted.path: message; env vars;
the embedded default and the examples load."""

from __future__ import annotations

import glob
import ipaddress
import textwrap

import pytest

from gateway.cli import main
from gateway.config.load import ConfigError, load_file, parse_text

GOOD = """\
upstreams:
  a: {url: "http://127.0.0.1:8000"}
models:
  m: {upstreams: [a]}
"""


def errors_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_text(textwrap.dedent(text), "f.yaml", env or {})
    return info.value.errors


BROKEN = [
    ("unknown top key", "listn: {port: 1}\n", ["f.yaml:1: listn: unknown setting"]),
    (
        "unknown nested key",
        "listen:\n  host: 127.0.0.1\n  prot: 80\n",
        ["f.yaml:3: listen.prot: unknown setting"],
    ),
    (
        "port out of range",
        "listen: {port: 70000}\n",
        ["f.yaml:1: listen.port: must be from 0 to 65535, got 70000"],
    ),
    (
        "port not a number",
        "listen:\n  port: eighty\n",
        ["f.yaml:2: listen.port: expected a whole number ≥ 0, got 'eighty'"],
    ),
    (
        "bad store scheme",
        "store: {url: 'mysql://x'}\n",
        [
            "f.yaml:1: store.url: 'mysql' is not a store; use memory://, redis://, rediss:// "
            "or redis+cluster://"
        ],
    ),
    (
        "bad on_error",
        "store:\n  on_error: maybe\n",
        ["f.yaml:2: store.on_error: must be one of closed, open; got 'maybe'"],
    ),
    (
        "bad trusted proxy",
        "network:\n  trusted_proxies:\n    - 10.0.0.0/8\n    - 10.0.0.300\n",
        ["f.yaml:4: network.trusted_proxies[1]: '10.0.0.300' is not an IP address or CIDR network"],
    ),
    (
        "memory store with workers",
        "listen: {workers: 4}\n",
        [
            "f.yaml:1: listen.workers: memory:// cannot be shared by 4 worker processes; "
            "set store.url to a redis:// URL or run one worker"
        ],
    ),
    (
        "model names an unknown upstream",
        "upstreams:\n  a: {url: 'http://x:1'}\nmodels:\n  m:\n    upstreams: [a, b]\n",
        ["f.yaml:5: models.m.upstreams[1]: unknown upstream 'b'; define it under upstreams"],
    ),
    (
        "upstream url",
        "upstreams:\n  a: {url: 'ftp://x'}\n",
        ["f.yaml:2: upstreams.a.url: 'ftp://x' is not an http:// or https:// URL"],
    ),
    (
        "upstream without url",
        "upstreams:\n  a: {weight: 2}\n",
        ["f.yaml:2: upstreams.a.url: is required"],
    ),
    (
        "static key with a key instead of a hash",
        "keys:\n  static:\n    - {id: k, owner: o, sha256: sk_gw_abc}\n",
        [
            "f.yaml:3: keys.static[0].sha256: expected the SHA-256 of the key as 64 hex digits "
            "(never the key itself)"
        ],
    ),
    (
        "static key bad permission and cidr",
        "keys:\n  static:\n    - id: k\n      owner: o\n      sha256: '"
        + "a" * 64
        + "'\n      permissions: [chat, admin]\n      ip_whitelist: ['1.2.3.0/33']\n",
        [
            "f.yaml:6: keys.static[0].permissions: unknown permission 'admin'; "
            "use audio, chat, embeddings, images, vision",
            "f.yaml:7: keys.static[0].ip_whitelist[0]: '1.2.3.0/33' is not an IP address or "
            "CIDR network",
        ],
    ),
    (
        "default plan not defined",
        "plans:\n  free: {max_keys: 1}\ndefault_plan: gold\n",
        ["f.yaml:3: default_plan: 'gold' is not one of the plans (free)"],
    ),
    (
        "route prefix and upstream",
        "routes:\n  - {prefix: api, upstream: portal, auth: maybe}\n",
        [
            "f.yaml:2: routes[0].auth: must be one of none, key, optional; got 'maybe'",
            "f.yaml:2: routes[0].prefix: 'api' must start and end with '/', e.g. /api/files/",
            "f.yaml:2: routes[0].upstream: unknown upstream 'portal'; define it under upstreams",
        ],
    ),
    (
        "duplicate key in a mapping",
        "listen:\n  port: 1\n  port: 2\n",
        ["f.yaml:3: listen.port: appears twice"],
    ),
    (
        "admin on a public address without a token",
        "admin: {host: 0.0.0.0}\n",
        ["f.yaml:1: admin.token: required when admin.host is '0.0.0.0' (not loopback)"],
    ),
    (
        "alias collides with a model",
        "upstreams: {a: {url: 'http://x:1'}}\nmodels:\n  m: {upstreams: [a]}\n"
        "  n: {upstreams: [a], aliases: [m]}\n",
        ["f.yaml:4: models.n.aliases: 'm' already names model 'm'"],
    ),
    (
        "not yaml",
        "listen: [1, 2\n",
        ["f.yaml:2: (yaml): expected ',' or ']', but got '<stream end>'"],
    ),
    ("a list at the top", "- 1\n- 2\n", ["f.yaml:1: (top): expected a mapping of settings"]),
    (
        "required env var",
        "admin: {token: '${TOKEN:?set the admin token}'}\n",
        ["f.yaml:1: admin.token: environment variable TOKEN is not set: set the admin token"],
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_broken_configs_report_every_error_with_its_line(text: str, expected: list[str]) -> None:
    assert errors_of(text) == expected


def test_many_errors_are_reported_at_once() -> None:
    text = "listen: {port: -1, workers: 0}\nstore: {timeout_ms: 0}\nnope: 1\n"
    assert errors_of(text) == [
        "f.yaml:1: listen.port: must be from 0 to 65535, got -1",
        "f.yaml:1: listen.workers: must be from 1 to 256, got 0",
        "f.yaml:2: store.timeout_ms: must be from 1 to 60000, got 0",
        "f.yaml:3: nope: unknown setting",
    ]


def test_environment_variables_are_substituted_and_typed() -> None:
    text = GOOD + "listen:\n  port: ${P}\n  host: ${H:-0.0.0.0}\n  workers: ${W:-3}\n"
    text += "store: {url: 'redis://${RH:-localhost}:6379/0'}\n"
    config = parse_text(text, "f.yaml", {"P": "8181", "RH": "10.1.2.3"})
    assert config.listen.port == 8181
    assert config.listen.host == "0.0.0.0"
    assert config.listen.workers == 3
    assert config.store.url == "redis://10.1.2.3:6379/0"


def test_quoted_substitution_stays_a_string() -> None:
    text = GOOD + "listen: {port: '${P}'}\n"
    assert errors_of(text, {"P": "8181"}) == [
        "f.yaml:5: listen.port: expected a whole number ≥ 0, got '8181'"
    ]


def test_unset_variable_reads_as_not_set() -> None:
    config = parse_text(GOOD + "admin: {token: '${NOPE}'}\n", "f.yaml", {})
    assert config.admin.token is None


def test_parsed_values_are_typed() -> None:
    text = GOOD + textwrap.dedent("""\
        network: {trusted_proxies: [10.0.0.0/8, '::1']}
        keys:
          static:
            - {id: k1, owner: acme, sha256: '%s', ip_whitelist: [203.0.113.0/24],
               expires_at: 2027-02-20T00:00:00Z, models: [m]}
        """) % ("A" * 64)
    config = parse_text(text, "f.yaml", {})
    assert config.network.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    key = config.keys.static[0]
    assert key.sha256 == "a" * 64
    assert key.expires_at == 1803081600.0
    assert key.models == frozenset({"m"})
    assert config.models["m"].upstream_model == "m"


def test_embedded_default_and_examples_load() -> None:
    files = ["config/gateway.yaml", *sorted(glob.glob("config/examples/*.yaml"))]
    assert len(files) >= 2, "the examples are missing"
    env = {"GATEWAY_ADMIN_TOKEN": "t" * 32, "REDIS_URL": "redis://127.0.0.1:6379/0"}
    for path in files:
        load_file(path, env)


def test_check_command_exit_codes(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    import pathlib

    assert isinstance(tmp_path, pathlib.Path)
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen:\n  port: x\nstore: {url: 'nope://'}\n")
    assert main(["check", "--config", str(good)]) == 0
    assert main(["check", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"{bad}:2: listen.port: expected a whole number ≥ 0, got 'x'",
        f"{bad}:3: store.url: 'nope' is not a store; use memory://, redis://, rediss:// "
        "or redis+cluster://",
    ]
    assert main(["check", "--config", str(tmp_path / "missing.yaml")]) == 2


def test_text_settings_keep_what_was_written() -> None:
    """An unquoted value that YAML would read as a number stays text where text is expected."""
    text = GOOD + "admin:\n  token: ${TOKEN}\nupstreams:\n  a: {url: 'http://x:1', api_key: 0x1f}\n"
    text = text.replace('upstreams:\n  a: {url: "http://127.0.0.1:8000"}\n', "", 1)
    config = parse_text(text, "f.yaml", {"TOKEN": "0x1f"})
    assert config.admin.token == "0x1f"
    assert config.upstreams["a"].api_key == "0x1f"
    assert errors_of("admin: {token: [1, {a: 2}]}\n") == [
        "f.yaml:1: admin.token: expected a string, got [1, {'a': 2}]"
    ]


@pytest.mark.parametrize("prefix", ["/api//x/", "/api/../x/", "/api/%2e/", "/a/./b/"])
def test_a_route_prefix_must_be_a_normal_path(prefix: str) -> None:
    """Request paths are normalized before routing, so a prefix with '//', dot segments or an
    escape could never match: the config says so instead of serving nothing."""
    text = (
        "upstreams: {p: {url: 'http://127.0.0.1:1'}}\nmodels: {}\n"
        f"routes: [{{prefix: '{prefix}', upstream: p}}]\n"
    )
    with pytest.raises(ConfigError, match="must be a normal path"):
        parse_text(text, "t.yaml", {})

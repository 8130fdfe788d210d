"""Which config file is read: ``--config``, else ``$GATEWAY_CONFIG``, else ``config/gateway.yaml``
of the working directory, else the embedded default shipped inside the package."""

from __future__ import annotations

import pathlib

import pytest

from gateway.config.load import (
    DEFAULT_PATH,
    Source,
    embedded_path,
    embedded_text,
    load_file,
    locate,
)


def test_the_order_of_the_places(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert locate(None, {}) == Source(embedded_path(), embedded=True)
    (tmp_path / "config").mkdir()
    (tmp_path / DEFAULT_PATH).write_text("{}\n")
    assert locate(None, {}) == Source(DEFAULT_PATH)
    assert locate(None, {"GATEWAY_CONFIG": "env.yaml"}) == Source("env.yaml")
    assert locate("given.yaml", {"GATEWAY_CONFIG": "env.yaml"}) == Source("given.yaml")


def test_the_embedded_default_is_a_file_of_the_package_and_loads() -> None:
    path = pathlib.Path(embedded_path())
    assert path.name == "default.yaml" and path.parent.name == "gateway"
    assert path.read_text(encoding="utf-8") == embedded_text()
    config = load_file(str(path), {})
    assert config.keys.demo and config.store.is_memory and config.mock_worker is not None
    assert config.listen.host == "127.0.0.1" and config.listen.port == 8080
    ports = load_file(str(path), {"GATEWAY_PORT": "18080", "GATEWAY_ADMIN_PORT": "19090"})
    assert (ports.listen.port, ports.admin.port) == (18080, 19090)

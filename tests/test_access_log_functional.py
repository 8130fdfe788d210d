"""One JSON access-log line per request, correlated by request id, with the fields
docs/operations.md lists and never a secret or a body."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from tests.clients import AUTH, TEST_KEY
from tests.conftest import access_log_fields, mock_gateway


async def test_access_lines(mock: Any, capfd: pytest.CaptureFixture[str]) -> None:
    server = await mock_gateway(mock)
    secret_prompt = "the-body-must-never-be-logged"
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"http://127.0.0.1:{server.port}/v1/chat/completions",
            json={
                "model": "m",
                "stream": True,
                "agent_id": "agent-7",
                "region": "oslo",
                "messages": [{"role": "user", "content": f"say:3 {secret_prompt}"}],
            },
            headers={**AUTH, "X-Request-ID": "trace-abc"},
        ) as r:
            await r.read()
        async with http.get(
            f"http://127.0.0.1:{server.port}/v1/models",
            headers={"Authorization": "Bearer wrong-key"},
        ) as r:
            assert r.status == 401
    await server.stop()  # flushes the buffered access log
    lines = [
        orjson.loads(line)
        for line in capfd.readouterr().err.splitlines()
        if line.startswith('{"request_id"')
    ]
    assert len(lines) == 2
    chat, refused = lines
    assert set(chat) == set(access_log_fields())
    assert chat["request_id"] == "trace-abc"
    assert (chat["status"], chat["model"], chat["upstream"], chat["stream"]) == (
        200,
        "m",
        "mock",
        True,
    )
    assert (chat["key_id"], chat["owner"], chat["client_ip"]) == ("test", "tests", "127.0.0.1")
    assert (chat["agent_id"], chat["region"], chat["dialect"]) == ("agent-7", "oslo", "openai")
    assert chat["completion_tokens"] == 3 and chat["ttft_ms"] is not None
    assert (refused["status"], refused["error"], refused["key_id"]) == (
        401,
        "invalid_api_key",
        None,
    )
    text = str(lines)
    assert secret_prompt not in text and TEST_KEY not in text and "wrong-key" not in text

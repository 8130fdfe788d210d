"""The official SDKs pointed at a gateway; every client made here is closed after its test."""

from __future__ import annotations

from typing import Any

import anthropic
import openai

from gateway.server import Server

OPEN: list[openai.AsyncOpenAI | anthropic.AsyncAnthropic] = []


def sdk(server: Server, api_key: str = "client-secret", **kw: Any) -> openai.AsyncOpenAI:
    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{server.port}/v1", api_key=api_key, max_retries=0, **kw
    )
    OPEN.append(client)
    return client


def claude(server: Server, api_key: str = "client-secret", **kw: Any) -> anthropic.AsyncAnthropic:
    client = anthropic.AsyncAnthropic(
        base_url=f"http://127.0.0.1:{server.port}", api_key=api_key, max_retries=0, **kw
    )
    OPEN.append(client)
    return client


async def close_all() -> None:
    while OPEN:
        await OPEN.pop().close()

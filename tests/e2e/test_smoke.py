"""A first look: the gateway answers through the simulator, streaming and not."""

from __future__ import annotations

import httpx

from tests.support.servers import ServerThread
from tests.support.sse_check import check_stream


def test_gateway_streams_and_answers(gateway: ServerThread) -> None:
    body = {"model": "sim/stream", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        whole = client.post("/v1/chat/completions", json=body)
        assert whole.status_code == 200, whole.text
        text = whole.json()["choices"][0]["message"]["content"]
        streamed = client.post("/v1/chat/completions", json={**body, "stream": True})
        assert streamed.status_code == 200, streamed.text
        report = check_stream(streamed.content)
        assert report.content == text

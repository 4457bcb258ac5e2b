"""`smneuron invoke --stream`: events joined across any chunking, tokens printed in order."""

from __future__ import annotations

import io
import json

import pytest

from smneuron.tools.aws.invoke import InvokeError
from smneuron.tools.aws.stream import JSONLINES, SSE, EventReader, endpoint_chunks, print_tokens

EVENTS = [
    {"token": {"id": 1, "text": " the"}, "generated_text": None},
    {"token": {"id": 2, "text": " caf\u00e9"}, "generated_text": None},
    {"token": {"id": 3, "text": "!"}, "generated_text": " the caf\u00e9!"},
]


def sse(events) -> bytes:
    return b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events)


def jsonl(events) -> bytes:
    return b"".join((json.dumps(e) + "\n").encode() for e in events)


@pytest.mark.parametrize(("media", "encode"), [(SSE, sse), (JSONLINES, jsonl)])
@pytest.mark.parametrize("size", [1, 3, 7, 1000])
def test_events_survive_any_chunking(media, encode, size):
    data = encode(EVENTS)
    reader = EventReader(media)
    found = []
    for start in range(0, len(data), size):
        found += reader.feed(data[start : start + size])
    assert found == EVENTS


class FakeRuntime:
    """A sagemaker-runtime client answering InvokeEndpointWithResponseStream from bytes."""

    def __init__(self, data: bytes, size: int) -> None:
        self.data, self.size, self.calls = data, size, []

    def invoke_endpoint_with_response_stream(self, **kwargs):
        self.calls.append(kwargs)
        parts = [self.data[i : i + self.size] for i in range(0, len(self.data), self.size)]
        return {"Body": iter({"PayloadPart": {"Bytes": part}} for part in parts)}


def test_tokens_are_printed_in_order_from_the_payload_parts():
    client = FakeRuntime(sse(EVENTS), 5)
    out = io.BytesIO()
    chunks = endpoint_chunks(
        client, "ep", b'{"inputs": "x"}', content_type="application/json", accept=SSE
    )
    last = print_tokens(chunks, SSE, out)
    assert out.getvalue().decode() == " the caf\u00e9!\n"
    assert last["generated_text"] == " the caf\u00e9!"
    assert client.calls == [
        {
            "EndpointName": "ep",
            "Body": b'{"inputs": "x"}',
            "ContentType": "application/json",
            "Accept": SSE,
        }
    ]


def test_an_error_event_fails_the_command_with_its_message():
    data = sse(EVENTS[:1]) + b'event: error\ndata: {"error": "deadline passed"}\n\n'
    with pytest.raises(InvokeError, match="deadline passed"):
        print_tokens([data], SSE, io.BytesIO())

"""`smneuron invoke --stream`: InvokeEndpointWithResponseStream, tokens printed as they come.

The endpoint streams Server-Sent Events (``Accept: text/event-stream``, the default) or JSON
Lines (``application/jsonlines``); SageMaker cuts them into ``PayloadPart`` chunks with no
regard for event boundaries, so ``EventReader`` joins the chunks back into whole events.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

from smneuron.errors import ClientError
from smneuron.tools.aws.invoke import InvokeError

SSE = "text/event-stream"
JSONLINES = "application/jsonlines"
STREAM_TYPES = (SSE, JSONLINES)


class EventReader:
    """Bytes in any chunking -> whole events (dicts), for SSE or JSON Lines."""

    def __init__(self, media_type: str) -> None:
        self.media_type = media_type
        self._buffer = b""
        self._error = False

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        self._buffer += chunk
        events = []
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            event = self._line(line.decode("utf-8").rstrip("\r"))
            if event is not None:
                events.append(event)
        return events

    def _line(self, line: str) -> dict[str, Any] | None:
        if self.media_type == JSONLINES:
            return json.loads(line) if line.strip() else None
        if line.startswith("event:"):
            self._error = line.split(":", 1)[1].strip() == "error"
            return None
        if not line.startswith("data:"):
            return None  # a blank line ends an event; comments (":") are keep-alives
        event = json.loads(line[len("data:") :].strip())
        if self._error and isinstance(event, dict):
            event.setdefault("error", "stream error")
        self._error = False
        return event


def endpoint_chunks(
    client: Any, endpoint_name: str, body: bytes, *, content_type: str, accept: str, **extra: str
) -> Iterator[bytes]:
    """The ``PayloadPart`` bytes of InvokeEndpointWithResponseStream as they arrive."""
    from botocore.exceptions import BotoCoreError
    from botocore.exceptions import ClientError as AwsClientError

    kwargs: dict[str, Any] = {
        "EndpointName": endpoint_name,
        "Body": body,
        "ContentType": content_type,
        "Accept": accept,
        **{key: value for key, value in extra.items() if value},
    }
    try:
        response = client.invoke_endpoint_with_response_stream(**kwargs)
        for event in response["Body"]:
            part = event.get("PayloadPart")
            if part and part.get("Bytes"):
                yield part["Bytes"]
    except AwsClientError as err:  # EventStreamError (ModelStreamError...) is one too
        error = err.response.get("Error", {})
        message = f"{endpoint_name}: {error.get('Code', 'error')}: {error.get('Message', err)}"
        status = err.response.get("OriginalStatusCode")
        if status and 400 <= int(status) < 500:
            raise ClientError(message, status_code=int(status)) from err
        raise InvokeError(message) from err
    except BotoCoreError as err:
        raise InvokeError(f"{endpoint_name}: {err}") from err


def local_chunks(
    port: int, body: bytes, *, content_type: str, accept: str, timeout_s: float = 60.0
) -> Iterator[bytes]:
    """The same stream from a local-mode endpoint (the SDK's local client cannot stream)."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=body,
        headers={"Content-Type": content_type, "Accept": accept},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            while chunk := reply.read1(65536):
                yield chunk
    except urllib.error.HTTPError as err:
        detail = err.read().decode("utf-8", "replace")
        if 400 <= err.code < 500:
            raise ClientError(f"local endpoint: {detail}", status_code=err.code) from err
        raise InvokeError(f"local endpoint: {err.code} {detail}") from err
    except urllib.error.URLError as err:
        raise InvokeError(f"local endpoint on port {port}: {err.reason}") from err


def print_tokens(chunks: Iterable[bytes], media_type: str, out: BinaryIO) -> dict[str, Any]:
    """Write each token's text to ``out`` as it arrives (flushed); the last event."""
    reader = EventReader(media_type)
    last: dict[str, Any] = {}
    for chunk in chunks:
        for event in reader.feed(chunk):
            if "error" in event:
                raise InvokeError(f"the stream failed: {event['error']}")
            token = event.get("token") or {}
            out.write(str(token.get("text", "")).encode("utf-8"))
            out.flush()
            last = event
    out.write(b"\n")
    out.flush()
    return last

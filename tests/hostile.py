"""A battery of malformed and hostile requests as data, for every tier that serves HTTP.

Each ``Case`` is one request and the status a correct server answers. The in-process tests
(tests/unit/serving/test_hostile.py) run the cases that reach the handler (``transport`` is
False) through ``WorkerRuntime.invoke``; the HTTP tiers send every case with ``send()`` to a
running server and check it with ``problems()``: a 4xx JSON error without a trace, and the
server still answering ``/ping`` afterwards. ``raw`` cases are sent byte for byte (request
smuggling and framing); their error body is JSON only where nginx is in front.
"""

from __future__ import annotations

import io
import json
import pickle
import random
import socket
from dataclasses import dataclass, field

import numpy as np

JSON = "application/json"
JSONL = "application/jsonlines"
CSV = "text/csv"
TEXT = "text/plain"
NPY = "application/x-npy"


@dataclass(frozen=True)
class Case:
    """One hostile request.

    Attributes:
        name: a short id (used as the pytest id).
        method, path, headers, body: the request (``Content-Length`` is added by ``send``).
        expected: the status a correct server answers.
        transport: the case is about HTTP itself (method, path, framing), not the handler.
        raw: the exact bytes to send instead (framing cases); ``method`` etc. are ignored.
        also: other statuses a server may answer for a ``raw`` case (front-dependent).
    """

    name: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    expected: int
    transport: bool = False
    raw: bytes | None = None
    also: frozenset[int] = field(default_factory=frozenset)

    @property
    def content_type(self) -> str | None:
        return self.headers.get("Content-Type")

    @property
    def accept(self) -> str | None:
        return self.headers.get("Accept")


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=array.dtype.hasobject)
    return buffer.getvalue()


def _npz() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, inputs=np.array(["a", "b"]))
    return buffer.getvalue()


def _npy_header(shape: str, descr: str = "<U4") -> bytes:
    """A version 1.0 NPY header declaring ``shape`` followed by 8 bytes of data."""
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}".encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"a\0\0\0b\0\0\0"


def _random(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _post(name: str, body: bytes, content_type: str | None, expected: int, **headers) -> Case:
    all_headers = {"Content-Type": content_type} if content_type else {}
    all_headers.update({key.replace("_", "-"): value for key, value in headers.items()})
    return Case(name, "POST", "/invocations", all_headers, body, expected)


def _raw(name: str, request: bytes, expected: int, also: tuple[int, ...] = ()) -> Case:
    return Case(name, "POST", "/invocations", {}, b"", expected, True, request, frozenset(also))


DEEP = 100_000
HUGE_INT = b"9" * 5000
DEEP_OBJECT = b'{"inputs": ' + b'{"a": ' * DEEP + b"1" + b"}" * DEEP + b"}"
HUGE_TOP_K = b'{"inputs": "x", "parameters": {"top_k": ' + HUGE_INT + b"}}"

CASES: list[Case] = [
    # JSON
    _post("json-truncated", b'{"inputs": ', JSON, 400),
    _post("json-empty-body", b"", JSON, 400),
    _post("json-no-content-type-empty", b"", None, 400),
    _post("json-deep-list", b"[" * DEEP + b"]" * DEEP, JSON, 400),
    _post("json-deep-object", DEEP_OBJECT, JSON, 400),
    _post("json-huge-int", b'{"inputs": ' + HUGE_INT + b"}", JSON, 400),
    _post("json-huge-int-top-k", HUGE_TOP_K, JSON, 400),
    _post("json-lone-surrogate", b'"\\ud800"', JSON, 400),
    _post("json-lone-surrogate-in-list", b'{"inputs": ["ok", "\\udfff"]}', JSON, 400),
    _post("json-inputs-number", b'{"inputs": 3}', JSON, 400),
    _post("json-inputs-empty-list", b'{"inputs": []}', JSON, 400),
    _post("json-inputs-nested-list", b'{"inputs": [["a"]]}', JSON, 400),
    _post("json-inputs-mixed-list", b'{"inputs": ["a", 1]}', JSON, 400),
    _post("json-no-inputs-field", b'{"text": "x"}', JSON, 400),
    _post("json-parameters-not-object", b'{"inputs": "x", "parameters": [1]}', JSON, 400),
    _post("json-top-k-zero", b'{"inputs": "x", "parameters": {"top_k": 0}}', JSON, 400),
    _post("json-top-k-string", b'{"inputs": "x", "parameters": {"top_k": "2"}}', JSON, 400),
    _post("json-top-k-bool", b'{"inputs": "x", "parameters": {"top_k": true}}', JSON, 400),
    _post("json-not-utf8", b'"\xff\xfe"', JSON, 400),
    _post("json-utf16", '"hello"'.encode("utf-16"), JSON, 400),
    _post("json-null", b"null", JSON, 400),
    _post("json-nan", b"NaN", JSON, 400),
    _post("json-random-bytes", _random(1, 512), JSON, 400),
    _post("json-charset-latin1-body", b'"caf\xe9"', "application/json; charset=latin-1", 400),
    # JSON Lines
    _post("jsonl-bad-line", b'"a"\n{broken\n', JSONL, 400),
    _post("jsonl-only-blank-lines", b"\n\n  \n", JSONL, 400),
    _post("jsonl-number-line", b"1\n", JSONL, 400),
    _post("jsonl-lone-surrogate", b'"ok"\n"\\ud800"\n', JSONL, 400),
    _post("jsonl-deep-line", b"[" * DEEP + b"\n", JSONL, 400),
    _post("jsonl-random-bytes", _random(2, 512), JSONL, 400),
    # CSV
    _post("csv-empty-body", b"", CSV, 400),
    _post("csv-field-over-the-csv-limit", b'"' + b"a" * 200_000 + b'"\n', CSV, 400),
    _post("csv-not-utf8", b"caf\xe9\n", CSV, 400),
    _post("csv-random-bytes", _random(3, 512), CSV, 400),
    # text/plain
    _post("text-empty-body", b"", TEXT, 400),
    _post("text-only-whitespace", b"  \n\t ", TEXT, 400),
    _post("text-not-utf8", b"\xc3\x28", TEXT, 400),
    # NPY
    _post("npy-npz-archive", _npz(), NPY, 400),
    _post("npy-object-dtype-pickle", _npy(np.array(["a", 1], dtype=object)), NPY, 400),
    _post("npy-raw-pickle", pickle.dumps(["a", "b"]), NPY, 400),
    _post("npy-huge-declared-shape", _npy_header("(1000000000000,)"), NPY, 400),
    _post("npy-negative-shape", _npy_header("(-1,)"), NPY, 400),
    _post("npy-float-dtype", _npy(np.zeros(3)), NPY, 400),
    _post("npy-2d-strings", _npy(np.array([["a", "b"]])), NPY, 400),
    _post("npy-non-utf8-bytes", _npy(np.array([b"ok", b"\xff\xfe"])), NPY, 400),
    _post("npy-header-unclosed-paren", _npy_header("(3,"), NPY, 400),
    _post("npy-truncated-header", b"\x93NUMPY\x01\x00\xff\x00{'descr'", NPY, 400),
    _post("npy-empty-array", _npy(np.array([], dtype="<U1")), NPY, 400),
    _post("npy-empty-body", b"", NPY, 400),
    _post("npy-random-bytes", _random(4, 512), NPY, 400),
    # Content types and Accept
    _post("content-type-unsupported", b"<a/>", "application/xml", 415),
    _post("content-type-garbage", b'"x"', "////", 415),
    _post("accept-image", b'"x"', JSON, 406, Accept="image/png"),
    _post("accept-q-zero-only", b'"x"', JSON, 406, Accept="application/json;q=0"),
    _post("accept-garbage", b'"x"', JSON, 406, Accept=";;;,,,"),
    _post("accept-npy-for-labels", b'"x"', JSON, 406, Accept=NPY),
    # Limits (defaults: 1000 inputs per request)
    _post("too-many-inputs", json.dumps({"inputs": ["a"] * 1001}).encode(), JSON, 413),
    # HTTP itself: methods, paths, framing
    Case("get-invocations", "GET", "/invocations", {}, b"", 405, True),
    Case("put-invocations", "PUT", "/invocations", {"Content-Type": JSON}, b'"x"', 405, True),
    Case("delete-ping", "DELETE", "/ping", {}, b"", 405, True),
    Case("post-ping", "POST", "/ping", {"Content-Type": JSON}, b'"x"', 405, True),
    Case("unknown-path", "GET", "/admin", {}, b"", 404, True),
    _raw(
        "conflicting-content-length",
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
        b"Content-Length: 3\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        400,
    ),
    _raw(
        "content-length-and-chunked",
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    _raw(
        "negative-content-length",
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
        b"Content-Length: -1\r\nConnection: close\r\n\r\nhello",
        400,
    ),
    _raw(
        "underscore-content-length",
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
        b"Content-Length: 1_0\r\nConnection: close\r\n\r\nhellohello",
        400,
    ),
    _raw(
        "non-hex-chunk-size",
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    _raw("garbage-request-line", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
]

HANDLER_CASES = [case for case in CASES if not case.transport]


# --------------------------------------------------------------------------------------------
# Sending and checking


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def request_bytes(case: Case, host: str = "127.0.0.1") -> bytes:
    if case.raw is not None:
        return case.raw
    lines = [f"{case.method} {case.path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in case.headers.items()]
    if case.body or case.method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(case.body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + case.body


def send(case: Case, host: str, port: int, timeout: float = 60.0) -> Reply:
    """Send ``case`` on a fresh connection and read the whole answer (the server closes)."""
    with socket.create_connection((host, port), timeout=timeout) as conn:
        conn.sendall(request_bytes(case, host))
        chunks = []
        while True:
            try:
                chunk = conn.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return parse_reply(b"".join(chunks))


def parse_reply(data: bytes) -> Reply:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError):
        return Reply(0, {}, data)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
    return Reply(status, headers, body)


def _dechunk(body: bytes) -> bytes:
    out, rest = b"", body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out, rest = out + rest[:size], rest[size + 2 :]
    return out


def problems(case: Case, status: int, body: bytes, *, json_required: bool = True) -> list[str]:
    """What is wrong with an answer to ``case`` (empty: it is right)."""
    found = []
    allowed = {case.expected} | set(case.also)
    if status not in allowed:
        found.append(f"status {status}, expected {sorted(allowed)}")
    text = body.decode("utf-8", "replace")
    if "Traceback" in text or 'File "' in text:
        found.append("a traceback reached the client")
    if json_required:
        try:
            error = json.loads(body)
        except ValueError:
            found.append(f"error body is not JSON: {text[:120]!r}")
        else:
            if not isinstance(error, dict) or not error.get("error"):
                found.append(f"error JSON has no message: {text[:120]!r}")
            elif error.get("code") not in (None, status):
                found.append(f"error JSON code {error.get('code')} != status {status}")
    return found

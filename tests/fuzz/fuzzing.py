"""`make fuzz`: generated requests across content types and Accepts against a running server.

Every answer must be a 2xx or a 4xx; a 4xx must be a JSON error without a trace; no worker
may die. Cases are generated from a seed (reproducible), sent by a few threads over
keep-alive connections to 127.0.0.1, and bounded by a count and a time limit. Prints the
cases sent, the count per status, the 5xx count and the worker deaths seen in the log.

    python tests/fuzz/fuzzing.py                         # starts `serve` (gunicorn) itself
    python tests/fuzz/fuzzing.py --cases 300 --seconds 120
    python tests/fuzz/fuzzing.py --url http://127.0.0.1:8080 --log server.log
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import random
import re
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for _path in (ROOT / "src", ROOT / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from hostserver import Server  # noqa: E402  (after the sys.path set-up above)

CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "application/jsonlines",
    "text/csv",
    "text/plain",
    "application/x-npy",
    None,
    "application/xml",
    "",
]
ACCEPTS = [
    None,
    "*/*",
    "application/json",
    "application/jsonlines",
    "text/csv",
    "application/x-npy",
    "text/*",
    "image/png",
    "application/json;q=0.2, text/csv;q=0.9",
    "application/x-npy, */*;q=0.1",
]
ALPHABET = "abc xyz FREE win 0123 \n\r\t,\"'{}[]\\é漢字🙂\u2028\u0085\x00"


# --------------------------------------------------------------------------------------------
# Case generation


def _text(rng: random.Random, longest: int = 40) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, longest)))


def _json_value(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 2**63, rng.randint(-(10**6), 10**6), 1.5, -0.0])
    if kind in (3, 4):
        return _text(rng)
    if kind in (5, 6):
        return [_json_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {_text(rng, 8): _json_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def _parameters(rng: random.Random) -> dict:
    choice = rng.randrange(5)
    if choice == 0:
        return {}
    if choice == 1:
        return {"top_k": rng.choice([1, 2, 3, 0, -1, 10**30, "2", True, None, 1.5])}
    return {_text(rng, 6): _json_value(rng)}


def _valid(rng: random.Random, content_type: str | None) -> bytes:
    import numpy as np

    texts = [_text(rng) for _ in range(rng.randint(1, 6))]
    kind = (content_type or "application/json").split(";")[0]
    if kind == "application/jsonlines":
        return "\n".join(json.dumps(t, ensure_ascii=rng.random() < 0.5) for t in texts).encode()
    if kind == "text/csv":
        import csv

        out = io.StringIO()
        csv.writer(out).writerows([[t, rng.randint(0, 1)] for t in texts])
        return out.getvalue().encode()
    if kind == "text/plain":
        return texts[0].encode()
    if kind == "application/x-npy":
        buffer = io.BytesIO()
        np.save(buffer, np.array([t.rstrip("\x00") for t in texts]))
        return buffer.getvalue()
    inputs: object = texts if rng.random() < 0.6 else texts[0]
    return json.dumps({"inputs": inputs, "parameters": _parameters(rng)}).encode()


def _mutate(rng: random.Random, body: bytes) -> bytes:
    data = bytearray(body)
    for _ in range(rng.randint(1, 4)):
        action = rng.randrange(4)
        if action == 0 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif action == 1 and data:
            del data[rng.randrange(len(data)) :]
        elif action == 2:
            data[rng.randrange(len(data) + 1) : 0] = rng.randbytes(rng.randint(1, 8))
        elif data:
            start = rng.randrange(len(data))
            data[start:start] = data[start : start + rng.randint(1, 16)] * rng.randint(1, 8)
    return bytes(data)


def _npy_header(rng: random.Random) -> bytes:
    descr = rng.choice(["<U4", ">U2", "|S3", "<f8", "|O", "<U0", "|V8", "<i4", "bogus"])
    shape = tuple(rng.choice([0, 1, 2, -1, 10**12]) for _ in range(rng.randint(0, 3)))
    header = f"{{'descr': '{descr}', 'fortran_order': {rng.random() < 0.2}, 'shape': {shape}, }}"
    raw = header.encode()
    raw += b" " * (63 - (len(raw) + 10) % 64) + b"\n"
    version = rng.choice([b"\x01\x00", b"\x02\x00", b"\x03\x00", b"\x09\x00"])
    length = len(raw).to_bytes(2 if version == b"\x01\x00" else 4, "little")
    return b"\x93NUMPY" + version + length + raw + rng.randbytes(rng.randint(0, 32))


@dataclass(frozen=True)
class Request:
    content_type: str | None
    accept: str | None
    body: bytes


def generate(rng: random.Random) -> Request:
    from hostile import HANDLER_CASES

    content_type = rng.choice(CONTENT_TYPES)
    accept = rng.choice(ACCEPTS)
    if rng.random() < 0.05:
        content_type = "".join(rng.choice("abc/;=*+ -x") for _ in range(rng.randint(0, 20)))
    if rng.random() < 0.05:
        accept = "".join(rng.choice("abc/;=*,q.0123 -") for _ in range(rng.randint(0, 30)))
    strategy = rng.randrange(10)
    if strategy <= 2:
        body = _valid(rng, content_type)
    elif strategy <= 4:
        body = _mutate(rng, _valid(rng, content_type))
    elif strategy == 5:
        body = rng.randbytes(rng.randint(0, 2048))
    elif strategy == 6:
        body = json.dumps(_json_value(rng)).encode()
    elif strategy == 7:
        body = _npy_header(rng)
    elif strategy == 8:
        case = rng.choice(HANDLER_CASES)
        content_type, body = case.content_type, case.body
        accept = case.accept if rng.random() < 0.5 else accept
    else:
        body = _valid(rng, content_type) * rng.randint(1, 50)
    return Request(content_type, accept, body)


# --------------------------------------------------------------------------------------------
# Sending


@dataclass
class Tally:
    cases: int = 0
    statuses: Counter = field(default_factory=Counter)
    bad_errors: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def server_errors(self) -> int:
        return sum(n for code, n in self.statuses.items() if isinstance(code, int) and code >= 500)


def _check(request: Request, status: int, headers: dict[str, str], body: bytes) -> str | None:
    if 200 <= status < 300:
        return None
    text = body.decode("utf-8", "replace")
    if "Traceback" in text:
        return "traceback in the body"
    try:
        error = json.loads(body)
    except ValueError:
        return f"non-JSON error body: {text[:80]!r}"
    if not isinstance(error, dict) or not error.get("error"):
        return f"error JSON without a message: {text[:80]!r}"
    return None


def run_cases(
    url: str,
    cases: int,
    seconds: float,
    seed: int = 0,
    concurrency: int = 4,
    progress: Callable[[Tally], None] | None = None,
) -> Tally:
    parsed = urllib.parse.urlsplit(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    tally = Tally()
    stop_at = time.monotonic() + seconds
    local = threading.local()

    def connection() -> http.client.HTTPConnection:
        if getattr(local, "conn", None) is None:
            local.conn = http.client.HTTPConnection(host, port, timeout=60)
        return local.conn

    def one(index: int) -> None:
        if time.monotonic() > stop_at:
            return
        request = generate(random.Random(f"{seed}-{index}"))
        headers = {"Content-Length": str(len(request.body))}
        if request.content_type is not None:
            headers["Content-Type"] = request.content_type
        if request.accept is not None:
            headers["Accept"] = request.accept
        for attempt in (0, 1):
            try:
                conn = connection()
                conn.request("POST", "/invocations", body=request.body, headers=headers)
                response = conn.getresponse()
                body = response.read()
                status = response.status
                answer_headers = {k.lower(): v for k, v in response.getheaders()}
                if answer_headers.get("connection", "").lower() == "close":
                    conn.close()
                    local.conn = None
                break
            except (OSError, http.client.HTTPException) as err:
                local.conn = None
                if attempt == 1:
                    with tally.lock:
                        tally.cases += 1
                        tally.statuses[f"no answer ({type(err).__name__})"] += 1
                        tally.failures.append(f"case {index}: {err!r}")
                    return
        problem = _check(request, status, answer_headers, body)
        with tally.lock:
            tally.cases += 1
            tally.statuses[status] += 1
            if status >= 500:
                tally.failures.append(f"case {index}: {status} {body[:160]!r}")
            if problem:
                tally.bad_errors.append(f"case {index}: {status} {problem}")
            if progress and tally.cases % 1000 == 0:
                progress(tally)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(cases)))
    return tally


# --------------------------------------------------------------------------------------------
# A server of its own


DEATHS = re.compile(
    r"Worker \(pid:\d+\) was sent|WORKER TIMEOUT|Worker exiting|worker process died|"
    r"Backend worker process died"
)
BOOTS = re.compile(r"Booting worker with pid")


def worker_deaths(log_text: str, workers: int) -> int:
    """Workers that died or were replaced, as the stacks log them."""
    boots = len(BOOTS.findall(log_text))
    return max(len(DEATHS.findall(log_text)), boots - workers if boots else 0)


def ping(url: str) -> int | None:
    """The status of GET /ping, or None when nothing answers."""
    parsed = urllib.parse.urlsplit(url)
    try:
        conn = http.client.HTTPConnection(parsed.hostname or "127.0.0.1", parsed.port, timeout=2)
        conn.request("GET", "/ping")
        status = conn.getresponse().status
        conn.close()
        return status
    except (OSError, http.client.HTTPException):
        return None


class LocalServer(Server):
    """`serve` in a subprocess on a free loopback port: the integration tests' ``Server`` with
    the fuzz run's settings (the default batch delay, ``workers`` workers) and a plain ping."""

    def __init__(self, base: Path, stack: str = "gunicorn", workers: int = 1) -> None:
        self.workers = workers
        env = {
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")]),
            "SAGEMAKER_MODEL_SERVER_WORKERS": str(workers),
            "SMNEURON_MAX_BATCH_DELAY_MS": "5",
        }
        super().__init__(stack, base, base / "server.log", env=env)

    def ping(self, timeout: float = 2.0) -> int | None:  # type: ignore[override]
        return ping(self.url)


def build_model(base: Path) -> None:
    from servingfixtures import build_artifact

    build_artifact(base / "model", "text-classification")


def report(tally: Tally, seconds: float, deaths: int | str, ping: int | None) -> dict:
    statuses = {str(k): v for k, v in sorted(tally.statuses.items(), key=lambda kv: str(kv[0]))}
    return {
        "cases": tally.cases,
        "seconds": round(seconds, 1),
        "statuses": statuses,
        "server_errors_5xx": tally.server_errors,
        "bad_error_bodies": len(tally.bad_errors),
        "worker_deaths": deaths,
        "ping_after": ping,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running server (default: start `serve` here)")
    parser.add_argument("--log", type=Path, help="its log, to count worker deaths")
    parser.add_argument("--stack", default="gunicorn", choices=["gunicorn", "mms"])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=900)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args(argv)
    server = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.url is None:
            print("building a tiny classifier artifact and starting serve ...", flush=True)
            build_model(Path(tmp))
            server = LocalServer(Path(tmp), args.stack)
            server.wait_ready()
            url = server.url
        else:
            url = args.url.rstrip("/")
        started = time.monotonic()
        try:
            tally = run_cases(
                url,
                args.cases,
                args.seconds,
                args.seed,
                args.concurrency,
                progress=lambda t: print(f"  {t.cases} cases, {t.server_errors} 5xx", flush=True),
            )
            elapsed = time.monotonic() - started
            if server is not None:
                time.sleep(0.5)
                after = server.ping()
                deaths: int | str = worker_deaths(server.log_text(), server.workers)
            else:
                after = ping(url)
                log_text = args.log.read_text(errors="replace") if args.log else None
                deaths = worker_deaths(log_text, 1) if log_text is not None else "unknown"
        finally:
            if server is not None:
                server.stop()
    summary = report(tally, elapsed, deaths, after)
    print(f"fuzz: {summary['cases']} cases in {summary['seconds']} s against {url}")
    print(f"  statuses: {summary['statuses']}")
    print(f"  5xx: {summary['server_errors_5xx']}  bad error bodies: {summary['bad_error_bodies']}")
    print(f"  worker deaths: {deaths}  /ping after: {after}")
    for line in (tally.failures + tally.bad_errors)[:20]:
        print("  ", line)
    print(json.dumps(summary))
    clean = not tally.server_errors and not tally.bad_errors and deaths in (0, "unknown")
    return 0 if clean and after == 200 else 1


if __name__ == "__main__":
    sys.exit(main())

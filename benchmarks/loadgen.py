"""Closed-loop load generator of `make bench`: N keep-alive clients on loopback, bounded runs.

Each of ``concurrency`` threads holds one ``http.client`` keep-alive connection and POSTs the
next body of a fixed message mix as soon as its previous answer arrived (a closed loop: the
offered load is what the server can take at that concurrency). A level first runs a warm-up
(excluded from every figure), then measures until ``max_requests`` requests have started or
``max_seconds`` have passed, whichever comes first, and reports throughput, p50/p90/p99 latency
and errors (any status other than 200, or no answer).

The message mix: spam-style texts from 10 to 400 characters, the same list for every server,
sent in the Hugging Face toolkit's ``{"inputs": "..."}`` JSON form (which our handler also
accepts).

    python benchmarks/loadgen.py --port 8080 --concurrency 1,4,16 --seconds 10
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Protocol

HOST = "127.0.0.1"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
# Sizes of the mix, in characters: mostly short texts (as SMS and chat), a tail of long ones.
MIX_LENGTHS = (10, 18, 26, 35, 48, 60, 75, 90, 110, 140, 170, 210, 260, 320, 400)
_WORDS = {
    "ham": (
        "hi are we still on for lunch tomorrow can you send me the slides from this morning "
        "running late start without me see you at the station thanks for dinner last night "
        "call me when you get home did you feed the cat the meeting moved to three"
    ).split(),
    "spam": (
        "WINNER you have been selected for a cash prize reply YES to claim now urgent your "
        "account is suspended verify your password at the link below free entry call 0800 "
        "now congratulations claim your free cruise before midnight text STOP to opt out"
    ).split(),
}


def message_mix(seed: int = 0) -> list[str]:
    """The fixed mix: one ham and one spam text per length in ``MIX_LENGTHS``, interleaved."""
    rng = random.Random(seed)
    texts = []
    for length in MIX_LENGTHS:
        for kind in ("ham", "spam"):
            words: list[str] = []
            while len(" ".join(words)) < length:
                words.append(rng.choice(_WORDS[kind]))
            text = " ".join(words)[:length].rstrip()
            texts.append(text[0].upper() + text[1:])
    rng.shuffle(texts)
    return texts


def bodies(texts: list[str]) -> list[bytes]:
    return [json.dumps({"inputs": text}).encode() for text in texts]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered) - 1e-9)))
    return ordered[rank - 1]


@dataclass
class LevelResult:
    """The figures of one concurrency level (warm-up excluded)."""

    concurrency: int
    requests: int = 0  # answered with 200 in the measured window
    errors: int = 0
    seconds: float = 0.0
    throughput_rps: float = 0.0
    p50_ms: float = float("nan")
    p90_ms: float = float("nan")
    p99_ms: float = float("nan")
    mean_ms: float = float("nan")
    error_samples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class HttpSender:
    """One keep-alive connection POSTing to ``path``; reconnects after a failure."""

    def __init__(self, host: str, port: int, path: str, timeout_s: float) -> None:
        self.host, self.port, self.path, self.timeout_s = host, port, path, timeout_s
        self.conn: http.client.HTTPConnection | None = None

    def send(self, body: bytes) -> tuple[int, bytes]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        try:
            self.conn.request(
                "POST",
                self.path,
                body=body,
                headers={"Content-Type": "application/json", "Accept": "application/json"},
            )
            reply = self.conn.getresponse()
            data = reply.read()
            if reply.getheader("Connection", "").lower() == "close":
                self.close()
            return reply.status, data
        except (OSError, http.client.HTTPException) as err:
            self.close()
            return 0, repr(err).encode()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Sender(Protocol):
    """What one closed-loop client uses: send a body, get (status, reply); close at the end."""

    def send(self, body: bytes) -> tuple[int, bytes]: ...

    def close(self) -> None: ...


def closed_loop(
    make_sender: Callable[[], Sender],
    payloads: list[bytes],
    concurrency: int,
    *,
    max_requests: int,
    max_seconds: float,
    warm_up_s: float = 2.0,
    join_slack_s: float = 65.0,
) -> LevelResult:
    """``concurrency`` threads, each with its own sender, in a closed loop over ``payloads``.

    Bounded: the threads stop issuing at ``warm_up_s + max_seconds`` or once ``max_requests``
    measured requests have started; a request still in flight then gets ``join_slack_s``.
    """
    lock = threading.Lock()
    latencies: list[float] = []
    result = LevelResult(concurrency)
    state = {"next": 0, "started": 0, "last_done": 0.0}
    began = time.monotonic()
    measure_from = began + warm_up_s
    deadline = measure_from + max_seconds

    def worker() -> None:
        sender = make_sender()
        try:
            while True:
                with lock:
                    now = time.monotonic()
                    measured = now >= measure_from
                    if now >= deadline or (measured and state["started"] >= max_requests):
                        return
                    if measured:
                        state["started"] += 1
                    body = payloads[state["next"] % len(payloads)]
                    state["next"] += 1
                sent = time.monotonic()
                status, data = sender.send(body)
                done = time.monotonic()
                if not measured:
                    continue
                with lock:
                    if status == 200:
                        latencies.append(1000 * (done - sent))
                    else:
                        result.errors += 1
                        if len(result.error_samples) < 5:
                            result.error_samples.append(f"{status} {data[:160]!r}")
                    state["last_done"] = max(state["last_done"], done)
        finally:
            sender.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0) + join_slack_s)
    end = state["last_done"] or time.monotonic()
    result.seconds = max(end - measure_from, 1e-9)
    result.requests = len(latencies)
    result.throughput_rps = result.requests / result.seconds
    if latencies:
        result.p50_ms = percentile(latencies, 50)
        result.p90_ms = percentile(latencies, 90)
        result.p99_ms = percentile(latencies, 99)
        result.mean_ms = sum(latencies) / len(latencies)
    return result


def run_level(
    port: int,
    payloads: list[bytes],
    concurrency: int,
    *,
    max_requests: int,
    max_seconds: float,
    warm_up_s: float = 2.0,
    host: str = HOST,
    path: str = "/invocations",
    timeout_s: float = 60.0,
) -> LevelResult:
    """One closed-loop level against ``host:port`` (loopback only) over HTTP keep-alive."""
    if host not in LOOPBACK:
        raise ValueError(f"the load generator targets loopback only, not {host}")
    return closed_loop(
        lambda: HttpSender(host, port, path, timeout_s),
        payloads,
        concurrency,
        max_requests=max_requests,
        max_seconds=max_seconds,
        warm_up_s=warm_up_s,
        join_slack_s=timeout_s + 5,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="a server on 127.0.0.1")
    parser.add_argument("--concurrency", default="1,4,16,64")
    parser.add_argument("--requests", type=int, default=2000, help="bound per level")
    parser.add_argument("--seconds", type=float, default=20.0, help="bound per level")
    parser.add_argument("--warm-up", type=float, default=2.0)
    args = parser.parse_args()
    payloads = bodies(message_mix())
    for level in (int(x) for x in args.concurrency.split(",")):
        r = run_level(
            args.port,
            payloads,
            level,
            max_requests=args.requests,
            max_seconds=args.seconds,
            warm_up_s=args.warm_up,
        )
        print(
            f"c={level:<3} {r.throughput_rps:7.1f} req/s  p50 {r.p50_ms:7.1f} ms  "
            f"p90 {r.p90_ms:7.1f} ms  p99 {r.p99_ms:7.1f} ms  errors {r.errors}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

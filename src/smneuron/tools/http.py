"""Local servers on the build host: a free port, and polling a URL until it answers.

The one polling loop of the tools, the tests and the benchmarks (local endpoints, serving
containers, host servers): the monotonic clock, a bounded wait, an optional check that the
server process is still alive, and the last answer in the error.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable

Answer = int | str  # an HTTP status, or why there was none ("connection refused")


class NotReadyError(RuntimeError):
    """The server did not answer as wanted before the deadline, or it exited."""

    def __init__(self, url: str, message: str, last: Answer, exited: str | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.last = last  # the last answer seen
        self.exited = exited  # why the server stopped, when it did


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (``host=""``: free on every interface)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def probe(url: str, timeout_s: float = 2.0) -> Answer:
    """GET ``url`` once: its HTTP status, or what stopped it from answering."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as err:
        return err.code
    except urllib.error.URLError as err:
        return str(err.reason)
    except OSError as err:
        return str(err) or type(err).__name__


def wait_until(
    url: str,
    timeout_s: float,
    *,
    ready: Callable[[Answer], bool] = lambda answer: answer == 200,
    exited: Callable[[], str | None] | None = None,
    on_answer: Callable[[Answer], None] | None = None,
    interval_s: float = 1.0,
) -> float:
    """Poll ``url`` until ``ready(answer)``; return the seconds it took.

    Args:
        ready: which answers end the wait (default: HTTP 200).
        exited: None while the server runs, else why it stopped (checked before each probe).
        on_answer: called with every answer (a test records the 503 -> 200 sequence).

    Raises:
        NotReadyError: ``exited`` said it stopped, or the deadline passed.
    """
    started = time.monotonic()
    last: Answer = "no answer"
    while True:
        if exited is not None and (reason := exited()) is not None:
            message = f"{url}: the server exited before it was ready ({reason})"
            raise NotReadyError(url, message, last, exited=reason)
        last = probe(url, timeout_s=min(2.0, max(timeout_s, 0.1)))
        if on_answer is not None:
            on_answer(last)
        if ready(last):
            return time.monotonic() - started
        if time.monotonic() - started + interval_s > timeout_s:
            raise NotReadyError(url, f"{url}: not ready within {timeout_s:.0f}s ({last})", last)
        time.sleep(interval_s)


def wait_for_ping(
    base_url: str,
    timeout_s: float,
    *,
    exited: Callable[[], str | None] | None = None,
    on_answer: Callable[[Answer], None] | None = None,
    interval_s: float = 1.0,
) -> float:
    """Poll ``base_url``/ping until it answers 200 (model loaded); return the seconds it took."""
    return wait_until(
        base_url.rstrip("/") + "/ping",
        timeout_s,
        exited=exited,
        on_answer=on_answer,
        interval_s=interval_s,
    )

"""Network helpers of every test tier: a free port, waits that fail a test with the log tail."""

from __future__ import annotations

from collections.abc import Callable

from smneuron.tools.http import Answer, NotReadyError, free_port, wait_for_ping, wait_until

__all__ = ["free_port", "wait_answering", "wait_ready"]


def wait_ready(
    base_url: str,
    timeout_s: float,
    *,
    exited: Callable[[], str | None] | None = None,
    logs: Callable[[], str] | None = None,
    on_answer: Callable[[Answer], None] | None = None,
    interval_s: float = 1.0,
) -> float:
    """``wait_for_ping`` that fails the test with the server's log tail."""
    try:
        return wait_for_ping(
            base_url, timeout_s, exited=exited, on_answer=on_answer, interval_s=interval_s
        )
    except NotReadyError as err:
        tail = logs()[-4000:] if logs is not None else ""
        raise AssertionError(f"{err}\n{tail}") from err


def wait_answering(url: str, timeout_s: float, exited: Callable[[], str | None]) -> None:
    """Wait until ``url`` answers at all (any HTTP status): a server is listening."""
    try:
        wait_until(
            url,
            timeout_s,
            ready=lambda answer: isinstance(answer, int),
            exited=exited,
            interval_s=0.3,
        )
    except NotReadyError as err:
        raise AssertionError(str(err)) from err

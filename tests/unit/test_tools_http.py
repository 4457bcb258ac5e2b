"""smneuron.tools.http: the one /ping wait of the tools, tests and benchmarks."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from smneuron.tools.http import NotReadyError, free_port, probe, wait_for_ping


class Loading(BaseHTTPRequestHandler):
    """/ping answers 503 for the first two requests, then 200."""

    pings = 0

    def do_GET(self) -> None:
        type(self).pings += 1
        self.send_response(200 if self.path == "/ping" and type(self).pings > 2 else 503)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Loading.pings = 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Loading)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_waits_through_503_until_200(server):
    answers: list[int | str] = []
    wait_for_ping(server, 10, on_answer=answers.append, interval_s=0.01)
    assert answers == [503, 503, 200]


def test_a_refused_connection_is_an_answer_not_a_crash():
    answer = probe(f"http://127.0.0.1:{free_port()}/ping", timeout_s=1)
    assert isinstance(answer, str) and "refused" in answer.lower()


def test_gives_up_at_the_deadline_with_the_last_answer(server):
    with pytest.raises(NotReadyError) as raised:
        wait_for_ping(server + "/nothing-here", 0.05, interval_s=0.01)
    assert raised.value.last == 503 and raised.value.exited is None
    assert "not ready within" in str(raised.value)


def test_stops_at_once_when_the_server_exited():
    answers: list[int | str] = []
    with pytest.raises(NotReadyError) as raised:
        wait_for_ping(
            f"http://127.0.0.1:{free_port()}",
            60,
            exited=lambda: "exit code 3",
            on_answer=answers.append,
        )
    assert raised.value.exited == "exit code 3" and answers == []

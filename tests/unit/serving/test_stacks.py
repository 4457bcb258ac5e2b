"""What each stack sends back from a handler's Response: status, content type, headers."""

from __future__ import annotations

from smneuron.job import Paths
from smneuron.serving.handler import Response
from smneuron.serving.settings import ServingSettings
from smneuron.serving.stacks import mms_service
from smneuron.serving.stacks.gunicorn import create_app

BUSY = Response(b'{"error": "busy"}', "application/json", 503, (("Retry-After", "1"),))


class FixedRuntime:
    def invoke(self, body, content_type, accept, custom_attributes=None):
        return BUSY


def test_gunicorn_sends_the_response_headers(tmp_path):
    app = create_app(ServingSettings(paths=Paths(tmp_path)), FixedRuntime())
    reply = app.test_client().post("/invocations", data=b"{}", content_type="application/json")
    assert reply.status_code == 503
    assert reply.headers["Retry-After"] == "1"
    assert reply.headers["Content-Type"] == "application/json"


class FakeMmsContext:
    """The parts of MMS's Context the service uses (mms.context.Context)."""

    def __init__(self) -> None:
        self.headers: dict[int, dict[str, str]] = {0: {}}
        self.status: dict[int, int] = {}
        self.request_processor: list = []

    def set_response_content_type(self, idx, value):
        self.headers[idx]["content-type"] = value

    def set_response_header(self, idx, key, value):
        self.headers[idx][key] = value

    def set_response_status(self, code=200, phrase="", idx=0):
        self.status[idx] = code


def test_mms_sends_the_response_headers(monkeypatch):
    monkeypatch.setattr(mms_service, "_runtime", FixedRuntime())
    context = FakeMmsContext()
    assert mms_service.handle([{"body": b"{}"}], context) == [BUSY.body]
    assert context.status == {0: 503}
    assert context.headers[0] == {"content-type": "application/json", "Retry-After": "1"}

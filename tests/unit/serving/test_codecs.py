"""Codecs and Accept negotiation."""

import io
import json

import numpy as np
import pytest

from smneuron.errors import ClientError, NotAcceptable, UnsupportedContentType
from smneuron.serving import codecs


@pytest.mark.parametrize(
    ("body", "texts", "parameters"),
    [
        (b'{"inputs": "hello"}', ["hello"], {}),
        (b'{"inputs": ["a", "b"], "parameters": {"top_k": 2}}', ["a", "b"], {"top_k": 2}),
        (b'"bare string"', ["bare string"], {}),
        (b'["x", "y"]', ["x", "y"], {}),
    ],
)
def test_json_forms(body, texts, parameters):
    decoded = codecs.decode(body, "application/json; charset=utf-8")
    assert decoded.texts == texts
    assert decoded.parameters == parameters


@pytest.mark.parametrize(
    "body",
    [b'{"inputs": 3}', b'{"text": "x"}', b"{not json", b'{"inputs": []}', b"\xff\xfe"],
)
def test_malformed_json_is_400_not_415(body):
    with pytest.raises(ClientError) as caught:
        codecs.decode(body, "application/json")
    assert caught.value.status_code == 400
    assert not isinstance(caught.value, UnsupportedContentType)


def test_jsonlines_csv_text():
    lines = b'{"inputs": "one"}\n"two"\n\n'
    assert codecs.decode(lines, "application/jsonlines").texts == ["one", "two"]
    assert codecs.decode(b'text\nfirst,1\n"second, with comma",0\n', "text/csv").texts == [
        "first",
        "second, with comma",
    ]
    assert codecs.decode(b"just text", "text/plain").texts == ["just text"]
    with pytest.raises(ClientError):
        codecs.decode(b"   ", "text/plain")


def test_missing_content_type_means_json():
    assert codecs.decode(b'{"inputs": "x"}', None).texts == ["x"]


def test_unsupported_content_type_lists_supported():
    with pytest.raises(UnsupportedContentType) as caught:
        codecs.decode(b"<a/>", "application/xml")
    assert caught.value.status_code == 415
    for kind in ("application/json", "text/csv", "application/x-npy"):
        assert kind in caught.value.message


def _npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=array.dtype == object)
    return buffer.getvalue()


def test_npy_strings_and_no_pickle():
    assert codecs.decode(_npy(np.array(["a", "b"])), "application/x-npy").texts == ["a", "b"]
    with pytest.raises(ClientError, match="pickle"):
        codecs.decode(_npy(np.array(["a", 1], dtype=object)), "application/x-npy")
    with pytest.raises(ClientError):
        codecs.decode(_npy(np.zeros(3)), "application/x-npy")
    with pytest.raises(ClientError):
        codecs.decode(b"not npy", "application/x-npy")


def test_encoders():
    result = [{"label": "spam", "score": 0.9}]
    assert json.loads(codecs.encode(result, "application/json")) == result
    assert codecs.encode(result, "application/jsonlines") == b'{"label": "spam", "score": 0.9}\n'
    assert codecs.encode(result, "text/csv") == b"spam,0.9\n"
    embeddings = [[0.5, 0.25], [1.0, 0.0]]
    array = np.load(io.BytesIO(codecs.encode(embeddings, "application/x-npy")))
    assert array.tolist() == embeddings
    with pytest.raises(NotAcceptable):
        codecs.encode(result, "application/x-npy")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, "application/json"),
        ("", "application/json"),
        ("*/*", "application/json"),
        ("text/csv", "text/csv"),
        ("text/html, text/csv;q=0.5", "text/csv"),
        ("application/json;q=0.2, text/csv;q=0.9", "text/csv"),
        ("text/*", "text/csv"),
        ("application/x-npy, */*;q=0.1", "application/x-npy"),
        ("image/png, */*;q=0.1", "application/json"),
    ],
)
def test_negotiate(header, expected):
    assert codecs.negotiate(header, "application/json") == expected


def test_negotiate_default_is_configurable_and_406_lists_supported():
    assert codecs.negotiate("*/*", "text/csv") == "text/csv"
    assert codecs.negotiate(None, "application/jsonlines") == "application/jsonlines"
    with pytest.raises(NotAcceptable) as caught:
        codecs.negotiate("image/png, text/html;q=0.5", "application/json")
    assert caught.value.status_code == 406
    assert "application/json" in caught.value.message
    with pytest.raises(NotAcceptable):
        codecs.negotiate("text/csv;q=0", "application/json")

"""Property-based tests of every decoder and encoder: any body is Inputs or a 400, never a
crash; what a client encodes correctly comes back unchanged."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smneuron.errors import ClientError
from smneuron.serving import codecs

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text a client can send: any Unicode scalar value (no lone surrogates).
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
TEXTS = st.lists(TEXT, min_size=1, max_size=8)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20,
)


def decodes_or_400(body: bytes, content_type: str, options=codecs.DEFAULT_OPTIONS):
    try:
        decoded = codecs.decode(body, content_type, options)
    except ClientError as err:
        assert err.status_code == 400
        assert err.message
        return None
    assert isinstance(decoded, codecs.Inputs)
    if decoded.media is not None:  # image/audio bodies: decoded by the model (test_media_*)
        assert decoded.media == [body] and body and not decoded.texts
        return decoded
    assert decoded.texts and all(isinstance(text, str) for text in decoded.texts)
    for text in decoded.texts:
        text.encode("utf-8")  # every text is valid Unicode the tokenizer can take
    assert isinstance(decoded.parameters, dict)
    return decoded


@pytest.mark.parametrize("content_type", list(codecs.DECODERS))
@PROPERTY
@given(body=st.binary(max_size=300))
def test_random_bytes_are_inputs_or_400(content_type, body):
    decodes_or_400(body, content_type)


@pytest.mark.parametrize("content_type", list(codecs.DECODERS))
@PROPERTY
@given(
    body=st.binary(max_size=200),
    prefix=st.sampled_from([b"", b"\x93NUMPY\x01\x00", b"\x93NUMPY\x02\x00", b"{", b"["]),
)
def test_prefixed_random_bytes_are_inputs_or_400(content_type, body, prefix):
    decodes_or_400(prefix + body, content_type)


@PROPERTY
@given(value=JSON_VALUES)
def test_any_json_value_is_inputs_or_400(value):
    decodes_or_400(json.dumps(value).encode(), codecs.JSON)
    decodes_or_400(json.dumps({"inputs": value, "parameters": value}).encode(), codecs.JSON)


@PROPERTY
@given(texts=TEXTS, top_k=st.integers(1, 5), ascii_only=st.booleans())
def test_json_round_trip(texts, top_k, ascii_only):
    body = json.dumps({"inputs": texts, "parameters": {"top_k": top_k}}, ensure_ascii=ascii_only)
    decoded = decodes_or_400(body.encode(), codecs.JSON)
    assert decoded == codecs.Inputs(texts, {"top_k": top_k})


@PROPERTY
@given(texts=TEXTS, crlf=st.booleans(), wrap=st.booleans())
def test_jsonlines_round_trip_keeps_every_line_separator_inside_strings(texts, crlf, wrap):
    end = "\r\n" if crlf else "\n"
    lines = [json.dumps({"inputs": text} if wrap else text, ensure_ascii=False) for text in texts]
    decoded = decodes_or_400(end.join(lines).encode(), codecs.JSONLINES)
    assert decoded.texts == texts


@PROPERTY
@given(texts=TEXTS, extra=st.lists(TEXT, max_size=2))
def test_csv_round_trip_first_column(texts, extra):
    out = io.StringIO()
    writer = csv.writer(out)
    for text in texts:
        writer.writerow([text, *extra])
    body = out.getvalue().encode()
    decoded = decodes_or_400(body, codecs.CSV, codecs.DecodeOptions(csv_header="never"))
    if decoded is None:  # only a field over the csv module's size limit may refuse
        return
    assert decoded.texts == texts


@PROPERTY
@given(texts=st.lists(TEXT.filter(lambda t: not t.endswith("\x00")), min_size=1, max_size=8))
def test_npy_round_trip(texts):
    buffer = io.BytesIO()
    np.save(buffer, np.array(texts))
    assert decodes_or_400(buffer.getvalue(), codecs.NPY).texts == texts
    encoded = [text.encode() for text in texts]
    if all(not item.endswith(b"\x00") for item in encoded):
        buffer = io.BytesIO()
        np.save(buffer, np.array(encoded))
        assert decodes_or_400(buffer.getvalue(), codecs.NPY).texts == texts


@PROPERTY
@given(header=st.text(st.sampled_from("{}()[]',:. 0123'descrshapeU<"), max_size=80))
def test_npy_header_of_any_text_is_inputs_or_400(header):
    raw = header.encode() + b"\n"
    body = b"\x93NUMPY\x01\x00" + len(raw).to_bytes(2, "little") + raw + b"abcd"
    decodes_or_400(body, codecs.NPY)


@PROPERTY
@given(
    shape=st.lists(st.integers(-5, 10**12), max_size=3).map(tuple),
    descr=st.sampled_from(["<U4", ">U2", "|S3", "<f8", "|O", "<U0", "|V8", "bogus"]),
    data=st.binary(max_size=64),
)
def test_npy_header_of_any_shape_and_dtype_is_inputs_or_400(shape, descr, data):
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape!r}, }}".encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    body = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + data
    decodes_or_400(body, codecs.NPY)


@PROPERTY
@given(
    result=st.lists(
        st.fixed_dictionaries({"label": TEXT, "score": st.floats(0, 1)})
        | st.lists(st.fixed_dictionaries({"label": TEXT, "score": st.floats(0, 1)}), min_size=1)
        | st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1),
        min_size=1,
        max_size=5,
    ),
    accept=st.sampled_from(list(codecs.ENCODERS)),
)
def test_encoders_carry_every_result(result, accept):
    try:
        body = codecs.encode(result, accept)
    except codecs.NotAcceptable:
        assert accept == codecs.NPY  # only numeric results fit in NPY
        return
    if accept == codecs.JSON:
        assert json.loads(body) == result
    elif accept == codecs.JSONLINES:
        assert [json.loads(line) for line in body.decode().split("\n")[:-1]] == result
    elif accept == codecs.CSV:
        rows = list(csv.reader(io.StringIO(body.decode(), newline="")))
        assert len(rows) == len(result)
        for row, record in zip(rows, result, strict=True):
            if isinstance(record, list) and record and isinstance(record[0], dict):
                assert row[0::2] == [entry["label"] for entry in record]  # every label


@PROPERTY
@given(header=st.text(max_size=60), default=st.sampled_from(list(codecs.ENCODERS)))
def test_negotiate_answers_a_supported_type_or_406(header, default):
    try:
        chosen = codecs.negotiate(header, default)
    except codecs.NotAcceptable as err:
        assert err.status_code == 406
        return
    assert chosen in codecs.ENCODERS

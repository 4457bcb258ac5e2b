"""Request decoders and response encoders keyed by MIME type, and Accept negotiation."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from smneuron.errors import ClientError, NotAcceptable, UnsupportedContentType

JSON = "application/json"
JSONLINES = "application/jsonlines"
CSV = "text/csv"
TEXT = "text/plain"
NPY = "application/x-npy"


@dataclass
class Inputs:
    """A decoded request: the texts to run and the optional ``parameters`` (e.g. top_k)."""

    texts: list[str]
    parameters: dict[str, Any] = field(default_factory=dict)


def media_type(header: str | None) -> str:
    """``"application/json; charset=utf-8"`` -> ``"application/json"``."""
    return (header or "").split(";", 1)[0].strip().lower()


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ClientError(f"request body is not valid UTF-8: {err}") from err


def _as_texts(value: Any, where: str) -> tuple[list[str], bool]:
    if isinstance(value, str):
        return [value], True
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        return list(value), False
    raise ClientError(f"{where} must be a string or a non-empty list of strings")


def decode_json(body: bytes) -> Inputs:
    try:
        data = json.loads(_text(body))
    except json.JSONDecodeError as err:
        raise ClientError(f"request body is not valid JSON: {err}") from err
    parameters: dict[str, Any] = {}
    if isinstance(data, dict):
        if "inputs" not in data:
            raise ClientError('JSON body must have an "inputs" field (a string or a list)')
        parameters = data.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise ClientError('"parameters" must be a JSON object')
        data = data["inputs"]
    texts, _ = _as_texts(data, '"inputs"')
    return Inputs(texts, parameters)


def decode_jsonlines(body: bytes) -> Inputs:
    texts: list[str] = []
    for number, line in enumerate(_text(body).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ClientError(f"line {number} is not valid JSON: {err}") from err
        if isinstance(record, dict):
            record = record.get("inputs")
        if not isinstance(record, str):
            raise ClientError(f'line {number}: expected a string or {{"inputs": string}}')
        texts.append(record)
    if not texts:
        raise ClientError("request body has no JSON lines")
    return Inputs(texts)


def decode_csv(body: bytes) -> Inputs:
    """One text per row, first column; a header row named ``text`` or ``inputs`` is skipped."""
    try:
        rows = [row for row in csv.reader(io.StringIO(_text(body))) if row]
    except csv.Error as err:
        raise ClientError(f"request body is not valid CSV: {err}") from err
    if rows and rows[0][0].strip().lower() in ("text", "inputs"):
        rows = rows[1:]
    if not rows:
        raise ClientError("CSV body has no rows")
    return Inputs([row[0] for row in rows])


def decode_text(body: bytes) -> Inputs:
    text = _text(body)
    if not text.strip():
        raise ClientError("request body is empty")
    return Inputs([text])


def decode_npy(body: bytes) -> Inputs:
    """A 0-d or 1-d array of strings; pickled object arrays are refused."""
    import numpy as np

    try:
        array = np.load(io.BytesIO(body), allow_pickle=False)
    except ValueError as err:  # object arrays need pickle: refused on purpose
        raise ClientError(f"NPY body cannot be read without pickle (refused): {err}") from err
    except (OSError, EOFError) as err:
        raise ClientError(f"request body is not a valid NPY array: {err}") from err
    if array.dtype.kind not in ("U", "S"):
        raise ClientError(f"NPY body must hold strings, got dtype {array.dtype}")
    if array.ndim > 1:
        raise ClientError(f"NPY body must be 0-d or 1-d, got shape {array.shape}")
    items = [
        item.decode("utf-8") if isinstance(item, bytes) else str(item) for item in array.ravel()
    ]
    if not items:
        raise ClientError("NPY body is empty")
    return Inputs(items)


def encode_json(result: Any) -> bytes:
    return json.dumps(result).encode("utf-8")


def encode_jsonlines(result: Any) -> bytes:
    records = result if isinstance(result, list) else [result]
    return "".join(json.dumps(record) + "\n" for record in records).encode("utf-8")


def encode_csv(result: Any) -> bytes:
    """Classification: ``label,score`` per row; embeddings: the numbers of each row."""
    records = result if isinstance(result, list) else [result]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for record in records:
        if isinstance(record, dict):
            writer.writerow([record.get("label"), record.get("score")])
        elif isinstance(record, list) and record and isinstance(record[0], dict):
            writer.writerow([record[0].get("label"), record[0].get("score")])
        elif isinstance(record, list):
            writer.writerow(record)
        else:
            writer.writerow([record])
    return out.getvalue().encode("utf-8")


def encode_npy(result: Any) -> bytes:
    import numpy as np

    try:
        array = np.asarray(result, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise NotAcceptable(
            "application/x-npy can only carry numeric results (e.g. feature-extraction); "
            "ask for application/json"
        ) from err
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


DECODERS: dict[str, Callable[[bytes], Inputs]] = {
    JSON: decode_json,
    JSONLINES: decode_jsonlines,
    CSV: decode_csv,
    TEXT: decode_text,
    NPY: decode_npy,
}

ENCODERS: dict[str, Callable[[Any], bytes]] = {
    JSON: encode_json,
    JSONLINES: encode_jsonlines,
    CSV: encode_csv,
    NPY: encode_npy,
}


def decode(body: bytes, content_type: str | None) -> Inputs:
    """Decode a request body; 415 lists the supported types, 400 for a malformed body."""
    kind = media_type(content_type) or JSON
    decoder = DECODERS.get(kind)
    if decoder is None:
        raise UnsupportedContentType(
            f"content type {kind!r} is not supported; use one of: {', '.join(DECODERS)}"
        )
    return decoder(body)


def encode(result: Any, accept: str) -> bytes:
    encoder = ENCODERS.get(accept)
    if encoder is None:
        raise NotAcceptable(f"cannot answer {accept!r}; supported: {', '.join(ENCODERS)}")
    return encoder(result)


def _parse_accept(header: str) -> list[tuple[str, float, int]]:
    ranges = []
    for index, part in enumerate(header.split(",")):
        pieces = [piece.strip() for piece in part.split(";")]
        kind = pieces[0].lower()
        if not kind:
            continue
        quality = 1.0
        for param in pieces[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        ranges.append((kind, quality, index))
    return ranges


def negotiate(accept: str | None, default: str, supported: tuple[str, ...] | None = None) -> str:
    """Pick the response type for an Accept header (q-values, ``*/*``, ``type/*``, lists).

    No header, or ``*/*`` first in preference, gives ``default``.
    """
    supported = tuple(supported or ENCODERS)
    if not accept or not accept.strip():
        return default
    best: tuple[float, int, str] | None = None
    for kind, quality, index in _parse_accept(accept):
        if quality <= 0:
            continue
        if kind == "*/*":
            choice = default if default in supported else supported[0]
        elif kind.endswith("/*"):
            prefix = kind[:-1]
            if default.startswith(prefix) and default in supported:
                choice = default
            else:
                choice = next((s for s in supported if s.startswith(prefix)), "")
        else:
            choice = kind if kind in supported else ""
        if choice and (best is None or quality > best[0]):
            best = (quality, index, choice)
    if best is None:
        raise NotAcceptable(
            f"cannot answer with any of {accept!r}; supported accept types: {', '.join(supported)}"
        )
    return best[2]

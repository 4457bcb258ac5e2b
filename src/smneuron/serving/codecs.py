"""Request decoders and response encoders keyed by MIME type, and Accept negotiation."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from smneuron.errors import ClientError, NotAcceptable, UnsupportedContentType
from smneuron.serving import choices as choice_inputs

JSON = "application/json"
JSONLINES = "application/jsonlines"
CSV = "text/csv"
TEXT = "text/plain"
NPY = "application/x-npy"
PNG = "image/png"
# Raw image and audio bodies: one input each, for image and audio artifacts (serving.media).
IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "application/x-image")
AUDIO_TYPES = ("audio/wav", "audio/x-wav", "audio/wave", "audio/flac", "audio/x-flac", "audio/mpeg")


@dataclass
class Inputs:
    """A decoded request: the texts to run and the optional ``parameters`` (e.g. top_k).

    Attributes:
        pairs: the second text of each input (``{"text", "text_pair"}``), ``None`` where an
            input has none; ``None`` when no input was a dict.
        single: the request held one input (a string or one dict), not a list: the answer
            then has the Hugging Face pipeline's shape for a lone input.
        similarity: a sentence-similarity request (``{"source_sentence", "sentences"}``):
            ``texts[0]`` is the source sentence, ``texts[1:]`` the sentences to score.
        choices: multiple choice (``{"context", "choices"}``): each input's choices, with
            its context in ``texts``; ``None`` for other requests.
        questions: a question-answering request (``{"question", "context"}`` inputs):
            ``texts`` are the questions, ``pairs`` their contexts.
        media: raw image or audio bodies (``IMAGE_TYPES``, ``AUDIO_TYPES``); ``texts`` is
            then empty.
        media_kind: ``"image"`` or ``"audio"``: which kind of body ``media`` holds.
    """

    texts: list[str]
    parameters: dict[str, Any] = field(default_factory=dict)
    pairs: list[str | None] | None = None
    single: bool = False
    similarity: bool = False
    choices: list[list[str]] | None = None
    questions: bool = False
    media: list[bytes] | None = None
    media_kind: str | None = None


@dataclass(frozen=True)
class DecodeOptions:
    """How to read bodies where the format leaves a choice (from ``ServingSettings``).

    Attributes:
        csv_header: is the first CSV row a header? ``auto``: only when its first cell is
            ``text`` or ``inputs`` and more rows follow; ``always``; ``never``.
    """

    csv_header: str = "auto"


DEFAULT_OPTIONS = DecodeOptions()
CSV_HEADER_NAMES = ("text", "inputs")


def media_type(header: str | None) -> str:
    """``"application/json; charset=utf-8"`` -> ``"application/json"``."""
    return (header or "").split(";", 1)[0].strip().lower()


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ClientError(f"request body is not valid UTF-8: {err}") from err


def check_texts(texts: list[str], where: str = "input") -> list[str]:
    """Every text must be encodable as UTF-8 (JSON can carry a lone surrogate like \\ud800)."""
    for index, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ClientError(
                f"{where} {index} is not valid Unicode text ({err.reason} at position "
                f"{err.start}); send UTF-8 text without lone surrogates"
            ) from err
    return texts


PAIR_KEYS = ("text", "text_pair")
SIMILARITY_KEYS = ("source_sentence", "sentences")
SIMILARITY_FORM = '{"source_sentence": string, "sentences": [string, ...]}'
QUESTION_KEYS = ("question", "context")
QUESTION_FORM = '{"question": string, "context": string}'
INPUTS_FORMS = (
    'a string, {"text": ..., "text_pair": ...}, or a non-empty list of strings or of such '
    f"objects; for sentence similarity {SIMILARITY_FORM}; for question answering "
    f"{QUESTION_FORM} or a list of them; for multiple choice {choice_inputs.FORM} or a list "
    "of them"
)


def _pair(value: dict[str, Any], where: str) -> tuple[str, str | None]:
    unknown = sorted(set(value) - set(PAIR_KEYS))
    if unknown or not isinstance(value.get("text"), str):
        raise ClientError(
            f'{where}: a text pair is {{"text": string, "text_pair": string}} '
            f"(got keys {sorted(map(str, value))[:5]})"
        )
    pair = value.get("text_pair")
    if pair is not None and not isinstance(pair, str):
        raise ClientError(f'{where}: "text_pair" must be a string')
    return value["text"], pair


def is_similarity(value: Any) -> bool:
    """A ``{"source_sentence", "sentences"}`` object (one of its keys is enough to tell)."""
    return isinstance(value, dict) and any(key in value for key in SIMILARITY_KEYS)


def _similarity(value: dict[str, Any], where: str) -> Inputs:
    """The source sentence then the sentences to compare it with, as one request's texts."""
    unknown = sorted(str(key) for key in value if key not in SIMILARITY_KEYS)
    if unknown:
        raise ClientError(
            f"{where}: sentence similarity takes {SIMILARITY_FORM}; unknown key(s) "
            f"{', '.join(unknown[:5])}"
        )
    source = value.get("source_sentence")
    if not isinstance(source, str):
        raise ClientError(
            f'{where}: "source_sentence" must be a string (got {_kind(source)}); '
            f"sentence similarity takes {SIMILARITY_FORM}"
        )
    sentences = value.get("sentences")
    if not isinstance(sentences, list) or not sentences:
        raise ClientError(
            f'{where}: "sentences" must be a non-empty list of strings (got {_kind(sentences)}); '
            f"sentence similarity takes {SIMILARITY_FORM}"
        )
    for index, sentence in enumerate(sentences):
        if not isinstance(sentence, str):
            raise ClientError(
                f'{where}: "sentences"[{index}] must be a string, got {_kind(sentence)}; '
                f"sentence similarity takes {SIMILARITY_FORM}"
            )
    return Inputs(check_texts([source, *sentences], where), single=True, similarity=True)


def is_question(value: Any) -> bool:
    """A ``{"question", "context"}`` object (one of its keys is enough to tell)."""
    return isinstance(value, dict) and any(key in value for key in QUESTION_KEYS)


def _question(value: dict[str, Any], where: str) -> tuple[str, str]:
    """The question and context of one question-answering input, both non-empty strings."""
    unknown = sorted(str(key) for key in value if key not in QUESTION_KEYS)
    if unknown:
        raise ClientError(
            f"{where}: question answering takes {QUESTION_FORM}; unknown key(s) "
            f"{', '.join(unknown[:5])}"
        )
    found = []
    for key in QUESTION_KEYS:
        text = value.get(key)
        if not isinstance(text, str) or not text.strip():
            got = "an empty string" if isinstance(text, str) else _kind(text)
            raise ClientError(
                f'{where}: "{key}" must be a non-empty string (got {got}); question answering '
                f"takes {QUESTION_FORM}"
            )
        found.append(text)
    return found[0], found[1]


def _questions(items: list[Any], where: str, single: bool) -> Inputs:
    questions, contexts = [], []
    for index, item in enumerate(items):
        place = where if single else f"{where}[{index}]"
        if not is_question(item):
            raise ClientError(
                f"{place}: a question-answering request holds {QUESTION_FORM} objects only "
                f"(got {_kind(item)})"
            )
        question, context = _question(item, place)
        questions.append(question)
        contexts.append(context)
    check_texts(contexts, f"{where} context")
    return Inputs(
        check_texts(questions, f"{where} question"),
        pairs=list(contexts),
        single=single,
        questions=True,
    )


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, list) and not value:
        return "an empty list"
    return f"a JSON {_JSON_NAMES.get(type(value), type(value).__name__)}"


_JSON_NAMES: dict[type, str] = {
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    list: "array",
    dict: "object",
}


def inputs_from(value: Any, where: str = '"inputs"') -> Inputs:
    """The texts (and text pairs, or a sentence-similarity request) of a JSON ``inputs``."""
    if isinstance(value, str):
        return Inputs(check_texts([value], where), single=True)
    if is_similarity(value):
        return _similarity(value, where)
    # Multiple choice first: its {"context" | "question", "choices"} shares a key with QA's.
    if choice_inputs.is_choice(value):
        context, options = choice_inputs.parse(value, where)
        check_texts(options, f"{where} choices")
        return Inputs(check_texts([context], where), single=True, choices=[options])
    if isinstance(value, list) and any(choice_inputs.is_choice(item) for item in value):
        return _choices(value, where)
    if is_question(value):
        return _questions([value], where, single=True)
    if isinstance(value, list) and value and any(is_question(item) for item in value):
        # The pipeline answers a list of one question as the question alone (a dict).
        return _questions(value, where, single=len(value) == 1)
    if isinstance(value, dict):
        text, pair = _pair(value, where)
        return Inputs(check_texts([text], where), pairs=[pair], single=True)
    if not isinstance(value, list) or not value:
        raise ClientError(f"{where} must be {INPUTS_FORMS}")
    if all(isinstance(item, str) for item in value):
        return Inputs(check_texts(list(value), where))
    texts: list[str] = []
    pairs: list[str | None] = []
    for index, item in enumerate(value):
        if isinstance(item, str):
            text, pair = item, None
        elif is_similarity(item):
            raise ClientError(
                f"{where}[{index}]: sentence similarity takes one {SIMILARITY_FORM} object as "
                '"inputs", not a list of them: send one request per source sentence'
            )
        elif isinstance(item, dict):
            text, pair = _pair(item, f"{where}[{index}]")
        else:
            raise ClientError(f"{where} must be {INPUTS_FORMS}")
        texts.append(text)
        pairs.append(pair)
    check_texts([p for p in pairs if p is not None], f"{where} text_pair")
    return Inputs(check_texts(texts, where), pairs=pairs)


def _choices(value: list[Any], where: str) -> Inputs:
    """A list of multiple-choice objects (and nothing else)."""
    contexts, options = [], []
    for index, item in enumerate(value):
        if not choice_inputs.is_choice(item):
            raise ClientError(
                f"{where}[{index}]: a list of multiple-choice inputs holds only "
                f"{choice_inputs.FORM} objects"
            )
        context, listed = choice_inputs.parse(item, f"{where}[{index}]")
        contexts.append(context)
        options.append(check_texts(listed, f"{where}[{index}] choices"))
    return Inputs(check_texts(contexts, where), choices=options)


def _json_value(text: str, where: str) -> Any:
    """``json.loads`` whose every failure on client input is a ClientError."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ClientError(f"{where} is not valid JSON: {err}") from err
    except RecursionError as err:
        raise ClientError(f"{where} is nested too deeply to read") from err
    except ValueError as err:  # e.g. an integer over the 4,300-digit conversion limit
        raise ClientError(f"{where} is not acceptable JSON: {err}") from err


def decode_json(body: bytes, options: DecodeOptions = DEFAULT_OPTIONS) -> Inputs:
    data = _json_value(_text(body), "request body")
    parameters: dict[str, Any] = {}
    if isinstance(data, dict):
        parameters = data.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise ClientError('"parameters" must be a JSON object')
        if "inputs" in data:
            data = data["inputs"]
        elif is_question(data) and not choice_inputs.is_choice(data):
            # the pipeline's question=..., context=... at the top level
            data = {key: value for key, value in data.items() if key != "parameters"}
        else:
            raise ClientError(
                'JSON body must have an "inputs" field (a string or a list), or be '
                f"{QUESTION_FORM} for question answering"
            )
    inputs = inputs_from(data)
    inputs.parameters = parameters
    return inputs


def decode_jsonlines(body: bytes, options: DecodeOptions = DEFAULT_OPTIONS) -> Inputs:
    """One JSON value per line; lines end at ``\\n`` only (a U+2028 inside a string is text).

    A line is a string or ``{"inputs": string}``; for question answering every line is
    ``{"question", "context"}`` (or ``{"inputs": {"question", "context"}}``)."""
    texts: list[str] = []
    questions: list[Any] = []
    for number, line in enumerate(_text(body).split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        record = _json_value(line, f"line {number}")
        if isinstance(record, dict) and not is_question(record):
            record = record.get("inputs")
        if is_question(record):
            questions.append((number, record))
            continue
        if not isinstance(record, str):
            raise ClientError(
                f'line {number}: expected a string, {{"inputs": string}} or {QUESTION_FORM}'
            )
        texts.append(record)
    if questions and texts:
        raise ClientError(
            f"line {questions[0][0]} is a question but other lines are texts: a JSON Lines body "
            f"holds either texts or {QUESTION_FORM} objects"
        )
    if questions:
        found = [_question(record, f"line {number}") for number, record in questions]
        contexts: list[str | None] = list(check_texts([context for _, context in found], "line"))
        return Inputs(
            check_texts([question for question, _ in found], "line"),
            pairs=contexts,
            questions=True,
        )
    if not texts:
        raise ClientError("request body has no JSON lines")
    return Inputs(check_texts(texts, "line"))


def decode_csv(
    body: bytes, options: DecodeOptions = DEFAULT_OPTIONS, *, header: str | None = None
) -> Inputs:
    """One text per row, first column. Header rule: ``options.csv_header`` (or ``header``):
    ``auto`` skips a first row whose first cell is ``text`` or ``inputs`` when more rows
    follow, ``always`` skips the first row, ``never`` keeps it."""
    rule = header or options.csv_header
    try:
        rows = [row for row in csv.reader(io.StringIO(_text(body), newline="")) if row]
    except csv.Error as err:
        raise ClientError(f"request body is not valid CSV: {err}") from err
    if rows and (
        rule == "always"
        or (rule == "auto" and len(rows) > 1 and rows[0][0].strip().lower() in CSV_HEADER_NAMES)
    ):
        rows = rows[1:]
    if not rows:
        raise ClientError("CSV body has no rows")
    return Inputs([row[0] for row in rows])


def decode_text(body: bytes, options: DecodeOptions = DEFAULT_OPTIONS) -> Inputs:
    text = _text(body)
    if not text.strip():
        raise ClientError("request body is empty")
    return Inputs([text], single=True)


NPY_MAGIC = b"\x93NUMPY"


def decode_npy(body: bytes, options: DecodeOptions = DEFAULT_OPTIONS) -> Inputs:
    """A 0-d or 1-d array of strings (``<U`` or UTF-8 ``|S``), read without pickle.

    The header is checked before any data is read: NPZ archives, pickles, object arrays,
    numeric dtypes, more than one dimension and a shape the body does not hold are 400s.
    """
    import numpy as np

    if not body.startswith(NPY_MAGIC):
        raise ClientError(
            "request body is not an NPY array (expected the \\x93NUMPY magic; NPZ archives and "
            "pickles are not accepted)"
        )
    stream = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported NPY format version {version}")
    except Exception as err:  # numpy parses the header with tokenize/ast: any of their errors
        raise ClientError(f"request body is not a valid NPY array: {err}") from err
    if dtype.hasobject:
        raise ClientError("NPY object arrays need pickle, which is refused; send a string array")
    if dtype.kind not in ("U", "S"):
        raise ClientError(f"NPY body must hold strings, got dtype {dtype}")
    if len(shape) > 1:
        raise ClientError(f"NPY body must be 0-d or 1-d, got shape {shape}")
    if dtype.itemsize == 0:
        raise ClientError(f"NPY dtype {dtype} holds no characters")
    count = int(shape[0]) if shape else 1
    data = body[stream.tell() :]
    if count * dtype.itemsize != len(data):
        raise ClientError(
            f"NPY header declares shape {shape} of {dtype} ({count * dtype.itemsize} bytes) "
            f"but the body holds {len(data)} bytes"
        )
    if count == 0:
        raise ClientError("NPY body is empty")
    if dtype.kind == "U":
        # numpy would build an invalid str from a UCS-4 value above U+10FFFF.
        codes = np.frombuffer(data, dtype=np.dtype(np.uint32).newbyteorder(dtype.byteorder))
        if codes.size and int(codes.max()) > 0x10FFFF:
            raise ClientError("NPY strings hold a code point above U+10FFFF")
    values = np.frombuffer(data, dtype=dtype, count=count).tolist()
    items: list[str] = []
    for index, item in enumerate(values):
        if isinstance(item, bytes):
            try:
                item = item.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ClientError(f"NPY item {index} is not UTF-8: {err}") from err
        items.append(item)
    return Inputs(check_texts(items, "NPY item"))


def _media(body: bytes, kind: str) -> Inputs:
    """A raw image or audio file: one input, decoded by the model (``serving.media``)."""
    if not body:
        raise ClientError(f"request body is empty; send the {kind} file's bytes")
    return Inputs([], single=True, media=[body], media_kind=kind)


def decode_image_body(body: bytes, options: DecodeOptions = DEFAULT_OPTIONS) -> Inputs:
    return _media(body, "image")


def decode_audio_body(body: bytes, options: DecodeOptions = DEFAULT_OPTIONS) -> Inputs:
    return _media(body, "audio")


def encode_json(result: Any) -> bytes:
    return json.dumps(result).encode("utf-8")


def encode_jsonlines(result: Any) -> bytes:
    records = result if isinstance(result, list) else [result]
    return "".join(json.dumps(record) + "\n" for record in records).encode("utf-8")


def _scores(result: Any) -> Any:
    """A sentence-similarity answer as its list of scores (one CSV row or NPY value each)."""
    if isinstance(result, dict) and list(result) == ["similarities"]:
        return [[score] for score in result["similarities"]]
    return result


def encode_csv(result: Any) -> bytes:
    """Classification: ``label,score`` per row (with ``top_k``: ``label,score,label,score…``
    for every label returned, best first); embeddings: the numbers of each row; sentence
    similarity: one score per row."""
    result = _scores(result)
    records = result if isinstance(result, list) else [result]
    out = io.StringIO()
    minimal = csv.writer(out, lineterminator="\n")
    # With "\n" rows, QUOTE_MINIMAL leaves a lone "\r" unquoted and a reader splits on it.
    quoted = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC)
    for record in records:
        if isinstance(record, dict):
            row = list(_label_score(record))
        elif isinstance(record, list) and record and isinstance(record[0], dict):
            row = [value for entry in record for value in _label_score(entry)]
        elif isinstance(record, list) and record and isinstance(record[0], list):
            raise NotAcceptable(NESTED)
        elif isinstance(record, list):
            row = list(record)
        else:
            row = [record]
        risky = any(isinstance(value, str) and "\r" in value for value in row)
        (quoted if risky else minimal).writerow(row)
    return out.getvalue().encode("utf-8")


NESTED = (
    "text/csv carries label,score rows and numbers; this task's answer is nested: ask for "
    "application/json or application/jsonlines"
)


def _label_score(entry: Any) -> tuple[Any, Any]:
    if isinstance(entry, dict):
        if "label" not in entry:  # e.g. token-classification entities: not a flat row
            raise NotAcceptable(NESTED)
        return entry.get("label"), entry.get("score")
    return entry, ""


def _reconstructions(result: Any) -> Any:
    """Masked image modeling answers as their images (``[height][width][3]`` each), else None."""
    records = result if isinstance(result, list) else [result]
    if records and all(isinstance(r, dict) and "reconstruction" in r for r in records):
        images = [r["reconstruction"] for r in records]
        return images if isinstance(result, list) else images[0]
    return None


def encode_png(result: Any) -> bytes:
    """A masked-image-modeling reconstruction (one input) as an 8-bit RGB PNG."""
    import numpy as np
    from PIL import Image

    image = _reconstructions(result)
    if image is None or isinstance(result, list):
        raise NotAcceptable(
            "image/png carries the reconstruction of one image (masked-image-modeling, one "
            "input); ask for application/json or application/x-npy"
        )
    pixels = np.clip(np.rint(np.asarray(image, dtype=np.float32) * 255.0), 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def encode_npy(result: Any) -> bytes:
    import numpy as np

    if isinstance(result, dict) and list(result) == ["similarities"]:
        result = result["similarities"]  # a 1-d array, one score per sentence
    images = _reconstructions(result)
    if images is not None:  # [inputs, height, width, 3] (or one image) of 0..1 floats
        result = images
    try:
        with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, as numpy casts
            array = np.asarray(result, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise NotAcceptable(
            "application/x-npy can only carry numeric results (e.g. feature-extraction); "
            "ask for application/json"
        ) from err
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


DECODERS: dict[str, Callable[[bytes, DecodeOptions], Inputs]] = {
    JSON: decode_json,
    JSONLINES: decode_jsonlines,
    CSV: decode_csv,
    TEXT: decode_text,
    NPY: decode_npy,
    **{kind: decode_image_body for kind in IMAGE_TYPES},
    **{kind: decode_audio_body for kind in AUDIO_TYPES},
}

ENCODERS: dict[str, Callable[[Any], bytes]] = {
    JSON: encode_json,
    JSONLINES: encode_jsonlines,
    CSV: encode_csv,
    NPY: encode_npy,
}
# Offered only by a model that names them in its ``response_types`` (masked image modeling):
# a text client's ``Accept: image/png, */*`` still gets JSON.
EXTRA_ENCODERS: dict[str, Callable[[Any], bytes]] = {PNG: encode_png}


def decode(
    body: bytes, content_type: str | None, options: DecodeOptions = DEFAULT_OPTIONS
) -> Inputs:
    """Decode a request body; 415 lists the supported types, 400 for a malformed body."""
    kind = media_type(content_type) or JSON
    decoder = DECODERS.get(kind)
    if decoder is None:
        raise UnsupportedContentType(
            f"content type {kind!r} is not supported; use one of: {', '.join(DECODERS)}"
        )
    return decoder(body, options)


def encode(result: Any, accept: str) -> bytes:
    encoder = ENCODERS.get(accept) or EXTRA_ENCODERS.get(accept)
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

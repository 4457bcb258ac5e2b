"""Our MMS reply decoder against MMS 1.1.11's, on replies made by MMS's own Python encoder.

The frontend receives a worker's reply in socket reads of whatever size Netty guessed; the test
delivers one batch reply split at every offset (and one byte at a time) and checks what the
frontend would decode.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from mms.context import Context, RequestProcessor
from mms.protocol.otf_message_handler import create_predict_response

from smneuron.serving.stacks import mms_decoder

HARNESS = Path(__file__).resolve().parents[2] / "java" / "DecoderSplits.java"
LIMIT = 6553500  # MMS's default max_response_size


def require_javac() -> str:
    javac = mms_decoder.find_javac()
    if javac:
        return javac
    message = "javac (a JDK 17) is needed to compile the MMS reply decoder"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


def batch_reply() -> bytes:
    """A worker's reply to a batch of three, as mms_service.handle answers them."""
    context = Context("model", "/tmp/model", {}, 3, None, "1.1.11")
    context.request_processor = [RequestProcessor({}) for _ in range(3)]
    bodies = [
        json.dumps([{"label": "LABEL_1", "score": 0.75}]).encode(),
        json.dumps({"error": "the queue is full", "type": "Overloaded", "code": 503}).encode(),
        "ünïcode ✓".encode(),
    ]
    context.set_response_content_type(0, "application/json")
    context.set_response_content_type(1, "application/json")
    context.set_response_header(1, "Retry-After", "1")
    context.set_response_status(code=503, phrase="error", idx=1)
    context.set_response_content_type(2, "text/plain; charset=utf-8")
    ids = {i: f"{i}1b2c3d4-0000-4000-8000-00000000000{i}" for i in range(3)}
    return bytes(create_predict_response(bodies, ids, "Prediction success", 200, context))


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> dict[str, str]:
    javac = require_javac()
    root = tmp_path_factory.mktemp("mms-decoder")
    jar = mms_decoder.mms_jar()
    ours = mms_decoder.compile_decoder(root / "ours", jar=jar, javac=javac)
    tool = root / "harness"
    subprocess.run(
        [javac, "-nowarn", "-cp", str(jar), "-d", str(tool), str(HARNESS)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    frame = root / "reply.bin"
    frame.write_bytes(batch_reply())
    java = shutil.which("java") or "java"

    def run(*class_path: Path) -> list[str]:
        done = subprocess.run(
            [java, "-cp", ":".join(map(str, class_path)), "DecoderSplits", str(frame), str(LIMIT)],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
            cwd=root,  # MMS's jar logs to ./logs/: keep that out of the checkout
        )
        # (log4j may print a warning on stdout first)
        return [line for line in done.stdout.splitlines() if line.startswith(("ok ", "fail "))]

    return {
        "ours": run(ours, tool, jar),
        "shipped": run(tool, jar),
        "length": len(batch_reply()),
    }


def test_our_decoder_decodes_a_batch_reply_split_anywhere(harness):
    lines = harness["ours"]
    assert len(lines) == harness["length"]  # every two-piece split, then byte by byte
    assert all(line.startswith("ok ") for line in lines), [x for x in lines if x[:3] != "ok "][:3]
    assert len(set(lines)) == 1  # the same reply however it arrived
    decoded = lines[0]
    assert decoded.startswith("ok 200 Prediction success | 01b2c3d4-")
    assert " 503 error {Retry-After=1, content-type=application/json} " in decoded
    assert " text/plain; charset=utf-8 200 " in decoded
    assert decoded.count(" | ") == 3


def test_the_shipped_decoder_fails_on_some_splits(harness):
    # Why the replacement exists: if an MMS upgrade fixes this, the replacement can go.
    failures = [line for line in harness["shipped"] if line.startswith("fail ")]
    assert failures, "MMS's own decoder no longer fails on split replies: drop ours?"
    assert any("CorruptedFrameException" in line for line in failures), failures[:3]
    good = [line for line in harness["shipped"] if line.startswith("ok ")]
    assert set(good) == {harness["ours"][0]}  # where it succeeds, both agree


def test_classes_dir_uses_a_current_prebuilt_folder_and_compiles_otherwise(tmp_path, harness):
    prebuilt = tmp_path / "prebuilt"
    mms_decoder.compile_decoder(prebuilt)
    assert mms_decoder.classes_dir(prebuilt=prebuilt, cache_root=tmp_path / "cache") == prebuilt
    (prebuilt / mms_decoder.STAMP).write_text("an older source\n", encoding="utf-8")
    cached = mms_decoder.classes_dir(prebuilt=prebuilt, cache_root=tmp_path / "cache")
    assert cached is not None and cached.parent == tmp_path / "cache"
    assert mms_decoder.is_current(cached)
    assert (cached / mms_decoder.CLASS_FILE).is_file()

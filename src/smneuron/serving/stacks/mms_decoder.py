"""MMS's decoder of worker replies, replaced by ours (``java/ModelResponseDecoder.java``).

MMS 1.1.11's frontend rejects a worker's reply as a corrupt frame when the reply arrives in
pieces split inside a prediction's status code or headers map (a batch of answers larger than
one socket read); it then drops the worker and fails its whole batch with 5xx while the worker
restarts (``make fuzz`` found it: 10 of 10,000 cases). Our class of the same name reads the
same wire format and waits for the missing bytes instead. It is compiled against the installed
``model-server.jar`` and put first on the JVM's classpath, so the JVM loads it instead of the
jar's; the jar itself is left untouched.

The images compile it at build time (``python -m smneuron.serving.stacks.mms_decoder --out
/opt/smneuron/mms-classes``, with a JDK that stays in a build stage). Elsewhere (a host
``serve``) it is compiled once with the JDK's ``javac`` into the user cache; without a JDK,
MMS runs with its own decoder and a warning says so.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from smneuron.env import ENV

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("java") / "ModelResponseDecoder.java"
CLASS_FILE = Path("com/amazonaws/ml/mms/util/codec/ModelResponseDecoder.class")
# Where the images keep the classes compiled at build time.
PREBUILT = Path("/opt/smneuron/mms-classes")
STAMP = "source.sha256"  # the digest of the source a classes folder was compiled from
COMPILE_TIMEOUT_S = 120.0


def mms_jar() -> Path:
    """The installed MMS frontend jar (``mms/frontend/model-server.jar``)."""
    import mms

    return Path(mms.__file__).resolve().parent / "frontend" / "model-server.jar"


def source_digest() -> str:
    return hashlib.sha256(SOURCE.read_bytes()).hexdigest()


def is_current(classes: Path) -> bool:
    """Whether ``classes`` holds the decoder compiled from this package's source."""
    stamp = classes / STAMP
    return (
        (classes / CLASS_FILE).is_file()
        and stamp.is_file()
        and stamp.read_text(encoding="utf-8").strip() == source_digest()
    )


def java_tool(name: str) -> str | None:
    """A JDK/JRE program (``java``, ``javac``): ``$JAVA_HOME/bin/<name>``, else from PATH."""
    home = os.environ.get(ENV.JAVA_HOME)
    if home:
        candidate = Path(home) / "bin" / name
        if candidate.is_file():
            return str(candidate)
    return shutil.which(name)


def find_javac() -> str | None:
    return java_tool("javac")


def compile_decoder(out: Path, *, jar: Path | None = None, javac: str | None = None) -> Path:
    """Compile the decoder into ``out`` (replaced as a whole, so readers never see half)."""
    javac = javac or find_javac()
    if javac is None:
        raise RuntimeError("javac not found: install a JDK 17 or set JAVA_HOME to one")
    jar = jar or mms_jar()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".mms-decoder-", dir=out.parent))
    try:
        # --release 8: the class file version of model-server.jar's own classes.
        command = [javac, "--release", "8", "-nowarn", "-cp", str(jar), "-d", str(staging)]
        done = subprocess.run(
            [*command, str(SOURCE)],
            capture_output=True,
            text=True,
            timeout=COMPILE_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"javac failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        (staging / STAMP).write_text(source_digest() + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out


def _cache_root() -> Path:
    base = os.environ.get(ENV.XDG_CACHE_HOME) or str(Path.home() / ".cache")
    return Path(base) / "smneuron" / "mms-decoder"


def classes_dir(*, prebuilt: Path = PREBUILT, cache_root: Path | None = None) -> Path | None:
    """The folder to put first on MMS's classpath, or None (MMS's own decoder, with a warning).

    The images' prebuilt folder when it matches this package's source; else a compiled copy
    in the user cache, compiled now if missing and a JDK is at hand.
    """
    if is_current(prebuilt):
        return prebuilt
    cached = (cache_root or _cache_root()) / source_digest()[:16]
    if is_current(cached):
        return cached
    javac = find_javac()
    if javac is None:
        log.warning(
            "no javac here and no prebuilt %s: MMS runs with its own reply decoder, which "
            "drops a worker when a batch reply arrives split (docs/reliability.md); install "
            "a JDK 17 or serve with SMNEURON_SERVER=gunicorn",
            prebuilt,
        )
        return None
    try:
        compile_decoder(cached, javac=javac)
    except (OSError, RuntimeError, subprocess.SubprocessError) as err:
        log.warning("could not compile the MMS reply decoder, MMS's own is used: %s", err)
        return None
    log.info("compiled the MMS reply decoder into %s", cached)
    return cached


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m smneuron.serving.stacks.mms_decoder",
        description="Compile smneuron's MMS reply decoder against the installed MMS jar.",
    )
    parser.add_argument("--out", type=Path, default=PREBUILT, help="classes folder to write")
    args = parser.parse_args(argv)
    try:
        out = compile_decoder(args.out)
    except (OSError, RuntimeError, subprocess.SubprocessError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"compiled {SOURCE.name} into {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

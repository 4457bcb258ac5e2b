"""Script mode end to end on the host: `train` runs a user script as the training toolkit would."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

import pytest

SIGKILL_AFTER_S = 30

DUMP = """
import json, os, sys
out = os.environ["SM_OUTPUT_DATA_DIR"]
os.makedirs(out, exist_ok=True)
seen = {"argv": sys.argv[1:], "env": {k: v for k, v in os.environ.items() if k.startswith("SM_")},
        "cwd": os.getcwd(), "unbuffered": os.environ.get("PYTHONUNBUFFERED")}
json.dump(seen, open(os.path.join(out, "seen.json"), "w"))
open(os.path.join(os.environ["SM_MODEL_DIR"], "model.bin"), "w").write("weights")
print("script done", flush=True)
"""


def write_source(opt_ml, files: dict[str, str]):
    code = opt_ml.base / "source"
    code.mkdir(exist_ok=True)
    for name, text in files.items():
        (code / name).write_text(textwrap.dedent(text))
    return code


def run_train(opt_ml, program: str, hps: dict, extra_env=None, timeout=120):
    source = opt_ml.base / "source"
    raw = {k: json.dumps(v) for k, v in hps.items()}
    raw |= {
        "sagemaker_program": json.dumps(program),
        "sagemaker_submit_directory": json.dumps(str(source)),
    }
    opt_ml.hyperparameters(raw, encode=False)
    env = {**opt_ml.environ, "SMNEURON_ACCELERATOR": "cpu", **(extra_env or {})}
    return subprocess.run(
        [sys.executable, "-m", "smneuron.training"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_a_python_script_gets_its_arguments_and_the_sm_environment(opt_ml):
    opt_ml.channel("train", {"a.csv": "text,label\n"})
    write_source(opt_ml, {"train.py": DUMP})
    done = run_train(opt_ml, "train.py", {"epochs": 2, "model_name": "tiny", "fp16": True})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "script done" in done.stdout
    seen = json.loads((opt_ml.paths.output_data / "seen.json").read_text())
    assert seen["argv"] == ["--epochs", "2", "--fp16", "True", "--model_name", "tiny"]
    assert seen["env"]["SM_CHANNEL_TRAIN"] == str(opt_ml.paths.channel("train"))
    assert seen["env"]["SM_HP_EPOCHS"] == "2"
    assert json.loads(seen["env"]["SM_HPS"]) == {"epochs": 2, "model_name": "tiny", "fp16": True}
    assert seen["env"]["SM_USER_ENTRY_POINT"] == "train.py"
    assert seen["cwd"] == str(opt_ml.base / "code")
    assert seen["unbuffered"] == "1"
    assert (opt_ml.paths.model / "model.bin").read_text() == "weights"
    assert opt_ml.paths.success.exists() and not opt_ml.paths.failure.exists()


def test_a_shell_script_runs_with_the_same_arguments(opt_ml):
    write_source(
        opt_ml,
        {"train.sh": '#!/bin/sh\nprintf "%s|" "$@" > "$SM_MODEL_DIR/args.txt"\n'},
    )
    done = run_train(opt_ml, "train.sh", {"lr": 0.5, "name": "a b"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert (opt_ml.paths.model / "args.txt").read_text() == "--lr|0.5|--name|a b|"


def test_an_exception_fails_the_job_with_its_line_and_the_stderr_tail(opt_ml):
    write_source(
        opt_ml,
        {
            "train.py": """
            import sys
            print("loading data", file=sys.stderr)
            raise ValueError("column 'text' not found in train.csv")
            """
        },
    )
    done = run_train(opt_ml, "train.py", {})
    assert done.returncode == 1
    failure = opt_ml.paths.failure.read_text()
    first, _, rest = failure.partition("\n")
    assert first == "train.py exited with code 1: ValueError: column 'text' not found in train.csv"
    assert "loading data" in rest and "Traceback (most recent call last):" in rest
    assert "column 'text' not found" in done.stderr  # streamed through as well
    assert not opt_ml.paths.success.exists()


def test_the_scripts_exit_code_is_the_jobs(opt_ml):
    write_source(opt_ml, {"train.py": "import sys\nsys.exit(7)\n"})
    done = run_train(opt_ml, "train.py", {})
    assert done.returncode == 7
    assert opt_ml.paths.failure.read_text().startswith("train.py exited with code 7")


def test_a_missing_program_is_a_client_error_naming_what_is_there(opt_ml):
    write_source(opt_ml, {"other.py": ""})
    done = run_train(opt_ml, "train.py", {})
    assert done.returncode == 1
    assert "train.py is not in the source folder" in opt_ml.paths.failure.read_text()
    assert "other.py" in opt_ml.paths.failure.read_text()


def test_requirements_without_network_fail_clearly(opt_ml):
    write_source(opt_ml, {"train.py": "", "requirements.txt": "not-a-real-package==9.9\n"})
    done = run_train(opt_ml, "train.py", {}, {"PIP_INDEX_URL": "http://127.0.0.1:9/simple"})
    assert done.returncode == 1
    assert "no network access" in opt_ml.paths.failure.read_text()
    # The switch that forbids the install lets the script run.
    done = run_train(opt_ml, "train.py", {}, {"SMNEURON_INSTALL_REQUIREMENTS": "false"})
    assert done.returncode == 0, done.stdout + done.stderr


TRAPS = """
import os, signal, subprocess, sys, time
out = os.environ["SM_MODEL_DIR"]
# A grandchild in the same process group: it must get SIGTERM too.
child = subprocess.Popen([sys.executable, "-c", '''
import os, signal, sys, time
def bye(*_):
    open(os.path.join(sys.argv[1], "child-sigterm"), "w").close()
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
print("child ready", flush=True)
time.sleep(60)
''', out], stdout=subprocess.PIPE, text=True)
child.stdout.readline()  # its handler is installed
def handler(*_):
    open(os.path.join(out, "script-sigterm"), "w").close()
    child.wait()
    sys.exit(0)
signal.signal(signal.SIGTERM, handler)
print("script ready", flush=True)
time.sleep(60)
"""

IGNORES = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("script ready", flush=True)
time.sleep(60)
"""


def start_and_stop(opt_ml, program_text: str, extra_env=None):
    write_source(opt_ml, {"train.py": program_text})
    raw = {
        "sagemaker_program": json.dumps("train.py"),
        "sagemaker_submit_directory": json.dumps(str(opt_ml.base / "source")),
    }
    opt_ml.hyperparameters(raw, encode=False)
    env = {**opt_ml.environ, "SMNEURON_ACCELERATOR": "cpu", **(extra_env or {})}
    process = subprocess.Popen(
        [sys.executable, "-m", "smneuron.training"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "script ready" in line:
                break
        else:
            pytest.fail("the script never got ready:\n" + "".join(lines))
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=SIGKILL_AFTER_S)
        elapsed = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    print(f"exited {elapsed:.1f}s after SIGTERM")
    return process.returncode, "".join(lines) + rest


@pytest.mark.slow
def test_sigterm_reaches_the_whole_process_group(opt_ml):
    code, output = start_and_stop(opt_ml, TRAPS)
    assert (opt_ml.paths.model / "script-sigterm").exists(), output
    assert (opt_ml.paths.model / "child-sigterm").exists(), output
    assert code == 143, output
    assert opt_ml.paths.failure.read_text().startswith("stopped by SIGTERM; train.py exited")
    assert not opt_ml.paths.success.exists()


@pytest.mark.slow
def test_a_script_that_ignores_sigterm_is_killed_after_the_grace_period(opt_ml):
    code, output = start_and_stop(opt_ml, IGNORES, {"SMNEURON_SCRIPT_STOP_GRACE_S": "1"})
    assert code == 128 + signal.SIGKILL, output
    assert "SIGKILL in 1s" in output
    assert "stopped by SIGTERM" in opt_ml.paths.failure.read_text()

"""The job outcome (smneuron.job.run_job): success/failure files and exit codes of the jobs."""

from __future__ import annotations

import pytest

from smneuron.errors import AcceleratorError, ConfigurationError, DataError
from smneuron.job import (
    EXIT_CLIENT_ERROR,
    EXIT_INTERNAL_ERROR,
    EXIT_TERMINATED,
    Paths,
    ProcessFailed,
    Terminated,
    exit_code,
    run_job,
)


@pytest.fixture
def paths(tmp_path) -> Paths:
    return Paths(tmp_path / "opt" / "ml")


def fail(err: BaseException):
    def work() -> bool:
        raise err

    return work


def test_done_work_writes_success_only(paths):
    assert run_job(paths, "test", lambda: True) == 0
    assert paths.success.read_text() == ""
    assert not paths.failure.exists()


def test_work_with_nothing_to_publish_writes_no_file(paths):
    assert run_job(paths, "test", lambda: False) == 0
    assert not paths.success.exists() and not paths.failure.exists()


def test_a_client_error_is_one_line_and_exit_1(paths):
    code = run_job(paths, "test", fail(ConfigurationError("epochs: expected a\n number, got 'x'")))
    assert code == EXIT_CLIENT_ERROR == 1
    assert paths.failure.read_text() == "epochs: expected a number, got 'x'\n"
    assert not paths.success.exists()


def test_any_other_error_carries_the_trace_and_exits_2(paths):
    assert run_job(paths, "test", fail(RuntimeError("disk on fire"))) == EXIT_INTERNAL_ERROR == 2
    failure = paths.failure.read_text()
    assert failure.startswith("RuntimeError: disk on fire\n\n")
    assert "Traceback (most recent call last)" in failure and "in work" in failure


def test_our_own_faults_are_internal_errors_too(paths):
    assert run_job(paths, "test", fail(AcceleratorError("8 workers on 2 cores"))) == 2
    assert paths.failure.read_text().startswith("AcceleratorError: 8 workers on 2 cores\n\n")


def test_sigterm_exits_143_with_the_reason(paths):
    assert run_job(paths, "test", fail(Terminated("stopped by SIGTERM at step 7"))) == 143
    assert paths.failure.read_text() == "stopped by SIGTERM at step 7\n"


def test_a_failed_script_gives_its_exit_code_and_its_reason_with_details(paths):
    reason = "train.py exited with code 3: ValueError: bad\n\nlast lines of stderr:\nboom"
    assert run_job(paths, "test", fail(ProcessFailed(reason, 3))) == 3
    assert paths.failure.read_text() == reason + "\n"


def test_a_failed_worker_gives_its_exit_code_and_the_first_reason_stays(paths):
    paths.output.mkdir(parents=True)

    def launcher() -> bool:
        paths.failure.write_text("worker: label 'eggs' is not one of the labels\n")
        raise ProcessFailed("training worker exited with code 1; see the log", 1)

    # fresh=False: what a worker process sees, whose launcher cleared the outcome already.
    assert run_job(paths, "test", launcher, fresh=False) == 1
    assert paths.failure.read_text() == "worker: label 'eggs' is not one of the labels\n"


def test_a_new_attempt_clears_the_previous_outcome(paths):
    paths.output.mkdir(parents=True)
    paths.failure.write_text("old failure\n")
    paths.success.write_text("")
    assert run_job(paths, "test", fail(DataError("train.csv is empty"))) == 1
    assert paths.failure.read_text() == "train.csv is empty\n"
    assert not paths.success.exists()


def test_a_worker_keeps_what_the_launcher_left(paths):
    paths.output.mkdir(parents=True)
    paths.failure.write_text("from another rank\n")
    assert run_job(paths, "test", lambda: False, fresh=False) == 0
    assert paths.failure.read_text() == "from another rank\n"


def test_keyboard_interrupt_is_not_swallowed(paths):
    with pytest.raises(KeyboardInterrupt):
        run_job(paths, "test", fail(KeyboardInterrupt()))


@pytest.mark.parametrize(
    "err, code",
    [
        (ConfigurationError("x"), 1),
        (AcceleratorError("x"), 2),
        (ValueError("x"), 2),
        (Terminated("x"), EXIT_TERMINATED),
        (ProcessFailed("x", 7), 7),
    ],
)
def test_exit_codes_shared_with_the_smneuron_command(err, code):
    assert exit_code(err) == code

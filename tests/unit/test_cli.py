"""The `smneuron` command line: behaviour shared by every subcommand."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from smneuron.tools import cli
from smneuron.tools.cli import EXIT_BROKEN_PIPE


def test_a_closed_pipe_ends_quietly():
    """`smneuron hyperparameters | head -1`: the reader is gone before the table is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "smneuron.tools.cli", "hyperparameters"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr
    assert result.returncode == EXIT_BROKEN_PIPE


def test_a_reader_gets_the_whole_table():
    result = subprocess.run(
        [sys.executable, "-m", "smneuron.tools.cli", "hyperparameters", "--format", "markdown"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("| Name | Type | Default | Meaning |")
    assert "| `precompile` | bool |" in result.stdout


def test_subcommand_help_shows_the_subcommand_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["local", "deploy", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--model-data" in out and "--neuron-devices" in out


def test_no_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([])
    assert exit_info.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_env_markdown_prints_the_configuration_page(capsys):
    from smneuron.tools.configuration import configuration_page

    assert cli.main(["env", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert out == configuration_page()
    assert out.startswith("# Configuration\n")
    assert "## Training hyperparameters" in out and "## Compile job hyperparameters" in out


def test_env_lists_every_variable_with_the_value_set_here(capsys, monkeypatch):
    from smneuron.env import ENV, VARIABLES

    monkeypatch.setenv(ENV.SERVER, "gunicorn")
    monkeypatch.delenv(ENV.OVERFLOW, raising=False)
    assert cli.main(["env"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert set(lines) == set(VARIABLES)
    assert lines[ENV.SERVER].endswith("= gunicorn")
    assert "(default `truncate`)" in lines[ENV.OVERFLOW]


def test_a_client_error_exits_1_with_its_message_and_no_trace(capsys, tmp_path):
    code = cli.main(["compile", "--checkpoint", str(tmp_path / "missing"), "--output", "o"])
    assert code == 1
    err = capsys.readouterr().err
    assert "smneuron compile: checkpoint" in err and "does not exist" in err
    assert "Traceback" not in err

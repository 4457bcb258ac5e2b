"""The ``smneuron`` command: one subcommand per module, imported only when used."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from smneuron import __version__
from smneuron.errors import SmneuronError
from smneuron.job import exit_code

# 128 + SIGPIPE: what a shell reports for a writer whose reader went away.
EXIT_BROKEN_PIPE = 141

# name -> (module, help). Each module defines ``add_arguments(parser)`` and ``run(args) -> int``.
COMMANDS: dict[str, tuple[str, str]] = {
    "hyperparameters": ("smneuron.training.hyperparameters", "list the training hyperparameters"),
    "env": (
        "smneuron.tools.configuration",
        "list the environment variables (--markdown: the docs/configuration.md page)",
    ),
    "compile": ("smneuron.artifact.job", "compile a fine-tuned checkpoint into a serving artifact"),
    "build": ("smneuron.tools.build.images", "build the training and inference images"),
    "push": ("smneuron.tools.aws.ecr", "push the images to ECR (creating the repositories)"),
    "invoke": ("smneuron.tools.aws.invoke", "call InvokeEndpoint on a SageMaker endpoint"),
    "local": (
        "smneuron.tools.local.sdk",
        "train, deploy, invoke, transform in SageMaker local mode",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smneuron", description=__doc__)
    parser.add_argument("--version", action="version", version=f"smneuron {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(_module=module_name)
        # Arguments are added lazily in main() for the chosen command only, so that
        # `smneuron build` does not import torch.
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # The command is found before parsing so that its module adds its own arguments first:
    # `smneuron local deploy --help` then shows deploy's options, not only the top level.
    command = next((arg for arg in argv if arg in COMMANDS), None)
    if command is None:
        parser.parse_args(argv)  # prints the help or the usage error, and exits
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    sub_action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    module.add_arguments(sub_action.choices[command])
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code = int(module.run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except SmneuronError as err:
        print(f"smneuron {args.command}: {err.message}", file=sys.stderr)
        return exit_code(err)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `smneuron hyperparameters | head`: the reader left. Point stdout at /dev/null so the
        # exit-time flush cannot fail again, and exit as a process ended by SIGPIPE would.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

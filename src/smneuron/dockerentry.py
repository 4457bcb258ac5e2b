"""The images' ENTRYPOINT: pick ``train`` or ``serve`` the way SageMaker calls us, then exec.

SageMaker runs ``docker run IMAGE train`` and ``docker run IMAGE serve``; SDK 3.x local mode
passes no argument at all. With no argument the image's role (``SMNEURON_IMAGE_ROLE``, set by
each Dockerfile) decides, and where no role is set a training job's hyperparameters.json does.
Any other command (``bash``, ``python …``) runs as given. The chosen program replaces this
process (exec), so SIGTERM from ``docker stop`` reaches it directly.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping, Sequence

from smneuron.env import ENV
from smneuron.job import Paths

ROLES = {"training": "train", "inference": "serve"}


def choose_command(argv: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """The command line to exec for the container's arguments."""
    if argv:
        return list(argv)
    role = environ.get(ENV.IMAGE_ROLE, "").strip().lower()
    if role in ROLES:
        return [ROLES[role]]
    if Paths.from_env(environ).hyperparameters.is_file():
        return ["train"]
    return ["serve"]


def main(argv: Sequence[str] | None = None) -> int:
    command = choose_command(sys.argv[1:] if argv is None else argv, os.environ)
    program = shutil.which(command[0])
    if program is None:
        print(f"entrypoint: no program named {command[0]!r} in this image", file=sys.stderr)
        return 127
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(program, command)
    return 0  # pragma: no cover (exec does not return)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

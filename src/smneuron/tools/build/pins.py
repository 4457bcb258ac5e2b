"""The pinned Neuron stack: constraints/neuron.txt's package pins and ``#@ key = value`` facts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from smneuron.errors import ConfigurationError


@dataclass(frozen=True)
class NeuronPins:
    """constraints/neuron.txt: package pins plus the ``#@ key = value`` facts (DLC tags...)."""

    packages: dict[str, str]
    facts: dict[str, str]

    def dlc_uri(self, which: str, region: str) -> str:
        """The ECR URI of the ``training`` or ``inference`` base image in ``region``."""
        account = self.facts["dlc-account"]
        return f"{account}.dkr.ecr.{region}.amazonaws.com/{self.facts[f'dlc-{which}']}"


def read_pins(path: str | Path) -> NeuronPins:
    """Parse a constraints file with ``name==version`` lines and ``#@ key = value`` facts."""
    packages: dict[str, str] = {}
    facts: dict[str, str] = {}
    for number, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if line.startswith("#@"):
            key, sep, value = line[2:].partition("=")
            if not sep:
                raise ConfigurationError(f"{path}:{number}: expected '#@ key = value'")
            facts[key.strip()] = value.strip()
        elif line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            if not sep:
                raise ConfigurationError(f"{path}:{number}: expected name==version, got {line!r}")
            packages[name.strip().lower()] = version.strip()
    return NeuronPins(packages, facts)

"""constraints/neuron.txt, the one place of the Neuron stack: package pins and ``#@`` facts.

The facts name the Deep Learning Container tags the neuron images are built FROM, the Neuron
SDK, the runtime and the oldest host driver. ``dlc_uri`` builds a DLC's ECR address in a region
from AWS's published registry table (the account differs in several regions).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from smneuron.errors import ConfigurationError

# Deep Learning Containers registry account per region, from aws/deep-learning-containers
# available_images.md ("Deep Learning Containers Docker Images are available in the following
# regions"); every region not listed uses DEFAULT_DLC_ACCOUNT. That table marks Neuron
# containers as available only in some regions (us-east-1/2, us-west-2, ap-south-1,
# ap-southeast-1/2, ap-northeast-1, eu-central-1, eu-west-1/3, sa-east-1).
DEFAULT_DLC_ACCOUNT = "763104351884"
DLC_ACCOUNTS = {
    "af-south-1": "626614931356",
    "ap-east-1": "871362719292",
    "ap-northeast-3": "364406365360",
    "ap-southeast-3": "907027046896",
    "eu-south-1": "692866216735",
    "me-south-1": "217643126080",
    "me-central-1": "914824155844",
    "cn-north-1": "727897471807",
    "cn-northwest-1": "727897471807",
}
NEURON_DLC_REGIONS = (
    "us-east-1",
    "us-east-2",
    "us-west-2",
    "ap-south-1",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-northeast-1",
    "eu-central-1",
    "eu-west-1",
    "eu-west-3",
    "sa-east-1",
)


def dlc_registry(region: str, default_account: str = DEFAULT_DLC_ACCOUNT) -> str:
    """``<account>.dkr.ecr.<region>.amazonaws.com`` (``.com.cn`` in the China regions)."""
    account = DLC_ACCOUNTS.get(region, default_account)
    suffix = ".amazonaws.com.cn" if region.startswith("cn-") else ".amazonaws.com"
    return f"{account}.dkr.ecr.{region}{suffix}"


@dataclass(frozen=True)
class NeuronPins:
    """constraints/neuron.txt: package pins plus the ``#@ key = value`` facts (DLC tags...)."""

    packages: dict[str, str]
    facts: dict[str, str]

    def dlc_uri(self, which: str, region: str) -> str:
        """The ECR URI of the ``training`` or ``inference`` base image in ``region``.

        ``<region>`` (a placeholder, as the docs print it) keeps the default account.
        """
        registry = dlc_registry(region, self.facts.get("dlc-account", DEFAULT_DLC_ACCOUNT))
        return f"{registry}/{self.facts[f'dlc-{which}']}"


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503): ``Jinja2`` -> ``jinja2``."""
    return re.sub(r"[-_.]+", "-", name).lower()


_PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;]+)")


def read_pins(path: str | Path) -> NeuronPins:
    """Parse a constraints file: ``name==version`` lines and ``#@ key = value`` facts.

    The one parser of constraints/*.txt (the wheelhouse reads cpu.txt and dev.txt with it too):
    names are canonical, a trailing ``# comment`` is dropped, and a line that is neither a
    comment, a fact nor an exact pin (``foo>=1``) is a ConfigurationError with its line number.
    """
    packages: dict[str, str] = {}
    facts: dict[str, str] = {}
    for number, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if raw.strip().startswith("#@"):
            key, sep, value = raw.strip()[2:].partition("=")
            if not sep or not key.strip():
                raise ConfigurationError(f"{path}:{number}: expected '#@ key = value'")
            facts[key.strip()] = value.strip()
            continue
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _PIN.fullmatch(line)
        if not match:
            raise ConfigurationError(f"{path}:{number}: not a name==version pin: {line!r}")
        packages[canonical(match.group(1))] = match.group(2)
    return NeuronPins(packages, facts)

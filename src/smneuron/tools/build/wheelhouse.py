"""Host-side wheelhouse: every wheel an image needs, for the image's platform, from the pins.

Images install with ``pip install --no-index --find-links`` from this wheelhouse, so a build
needs no package index inside a container, never backtracks, and never pulls the CUDA build of
torch. Wheels are fetched for the image's platform and Python (not the host's): binaries with
``pip download --platform ... --only-binary=:all:``, pure-Python sdists built once with
``pip wheel --no-deps``. The result is cached under ``build/wheelhouse/<accelerator>-<hash>``,
the hash covering the constraints, the requirement lists and the target.

The neuron wheelhouse is made against its base image (the AWS Neuron DLC): given the base's
Python, glibc and installed distributions (``BaseInventory``), it holds smneuron's requirements
that the base lacks and nothing else. The base's own distributions take part in pip's
resolution as metadata-only stub wheels at the base's versions, so pip can neither download nor
replace them (torch, torch-neuronx, neuronx-cc above all).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from smneuron.errors import ConfigurationError, SmneuronError
from smneuron.tools.build.pins import canonical, read_pins
from smneuron.typed import one_of
from smneuron.versions import package_version

log = logging.getLogger(__name__)

IMAGES = ("training", "inference")
# Which extras of the smneuron package each image carries.
IMAGE_EXTRAS = {"training": ("train",), "inference": ("serve",)}
LOCK_MARKER = "# --- transitive pins for the images (generated: smneuron build --lock) ---"


@dataclass(frozen=True)
class Target:
    """The platform an image's Python runs on."""

    accelerator: str
    python_version: str
    glibc_minor: int  # newest manylinux_2_N the image's glibc runs

    @property
    def platforms(self) -> tuple[str, ...]:
        # pip (before 24) does not widen a manylinux platform to older glibc versions itself.
        tags = [f"manylinux_2_{minor}_x86_64" for minor in range(self.glibc_minor, 16, -1)]
        return (*tags, "manylinux2014_x86_64", "linux_x86_64")

    @property
    def abi(self) -> str:
        return "cp" + self.python_version.replace(".", "")


# Debian bookworm: Python 3.11, glibc 2.36 (wheels up to manylinux_2_28 exist in practice).
# Neuron DLCs (Ubuntu 22.04): Python 3.11 in the pytorch-*-neuronx py311 images, glibc 2.35.
# The neuron target is read from the base image itself (BaseInventory.target).
TARGETS = {"cpu": Target("cpu", "3.11", 28)}

# What the Neuron DLC provides and an image must never install over it (nor the CUDA runtime).
BASE_ONLY = ("torch", "torch-neuronx", "neuronx-cc", "torch-xla", "libneuronxla")
# Packaging tools: the venv may carry newer ones than the base (setuptools>=77 for serving).
SHADOWABLE = ("pip", "setuptools", "wheel")
STUB_LABEL = "smneuronbase"  # local version label of the base's stand-in wheels
# Run with the base image's Python: its version, glibc and installed distributions as JSON.
# Where a name is installed twice (Debian's setuptools and a newer one in /usr/local), the
# first on sys.path is the one imported, so the first wins.
INVENTORY_SCRIPT = """\
import importlib.metadata as m, json, platform, re, sys
packages, requires = {}, {}
for dist in m.distributions():
    name = re.sub(r"[-_.]+", "-", dist.metadata["Name"] or "").lower()
    if name and name not in packages:
        packages[name], requires[name] = dist.version, dist.requires or []
print(json.dumps({"python": "%d.%d" % sys.version_info[:2], "glibc": platform.libc_ver()[1],
                  "packages": packages, "requires": requires}))
"""


@dataclass(frozen=True)
class BaseInventory:
    """What a base image's Python already has: the neuron wheelhouse adds only the rest."""

    image: str
    python_version: str
    glibc: str
    packages: dict[str, str] = field(default_factory=dict)  # canonical name -> version
    # Of each distribution's requirements, those on SHADOWABLE tools: a venv brings its own
    # (older) setuptools, so the wheelhouse must carry one that fits the base's torch.
    tool_requires: dict[str, list[str]] = field(default_factory=dict)
    # Each distribution's requirements behind an ``extra ==`` marker: a package that asks for
    # ``fsspec[http]`` needs aiohttp, which the base may lack, so the stub must declare them.
    extra_requires: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, image: str, text: str) -> BaseInventory:
        try:
            data = json.loads(text.strip().splitlines()[-1])
            packages = {canonical(name): str(v) for name, v in data["packages"].items()}
            tools = {
                canonical(name): [spec for spec in specs if _requirement_name(spec) in SHADOWABLE]
                for name, specs in data.get("requires", {}).items()
            }
            tools = {name: specs for name, specs in tools.items() if specs}
            extras = {
                canonical(name): [spec for spec in specs if _EXTRA_MARKER.search(spec)]
                for name, specs in data.get("requires", {}).items()
            }
            extras = {name: specs for name, specs in extras.items() if specs}
            return cls(image, str(data["python"]), str(data["glibc"]), packages, tools, extras)
        except (ValueError, KeyError, IndexError, AttributeError) as err:
            raise WheelhouseError(f"cannot read the inventory of {image}: {text[-500:]!r}") from err

    @property
    def target(self) -> Target:
        try:
            minor = int(self.glibc.split(".")[1])
        except (IndexError, ValueError) as err:
            raise WheelhouseError(f"{self.image}: unknown glibc version {self.glibc!r}") from err
        return Target("neuron", self.python_version, minor)

    def locked(self) -> dict[str, str]:
        """The base's distributions that pip must take as they are (valid versions only)."""
        from packaging.version import InvalidVersion, Version

        found = {}
        for name, version in self.packages.items():
            if name in SHADOWABLE:
                continue
            try:
                found[name] = str(Version(version))
            except InvalidVersion:
                log.debug("%s: skipping %s %s (not a PEP 440 version)", self.image, name, version)
        return found


class WheelhouseError(SmneuronError):
    """The wheelhouse could not be assembled (a pin missing, a wheel not found)."""


def repo_root() -> Path:
    """The checkout this package was installed from (editable install) or the cwd."""
    here = Path(__file__).resolve().parents[2]
    return here if (here / "pyproject.toml").is_file() else Path.cwd()


def _requirement_name(spec: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec)
    if not match:
        raise ConfigurationError(f"cannot read a package name from {spec!r}")
    return canonical(match.group(1))


def _project_dependencies(root: Path, extras: tuple[str, ...]) -> list[str]:
    try:
        import tomllib  # Python 3.11+
    except ModuleNotFoundError:  # 3.10: read the installed package's metadata instead
        requires = importlib.metadata.requires("smneuron") or []
        return [
            spec.split(";")[0]
            for spec in requires
            if ";" not in spec or any(f'extra == "{extra}"' in spec for extra in extras)
        ]
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    specs = list(project.get("dependencies", []))
    for extra in extras:
        specs += project.get("optional-dependencies", {}).get(extra, [])
    return specs


def image_requirements(root: Path, image: str, accelerator: str) -> list[str]:
    """Names of the packages an image installs: smneuron's dependencies for the image's
    extras (from pyproject.toml) plus ``containers/<image>/requirements-<accelerator>.txt``."""
    specs = _project_dependencies(root, IMAGE_EXTRAS[image])
    extra_file = root / "containers" / image / f"requirements-{accelerator}.txt"
    if extra_file.is_file():
        for line in extra_file.read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                specs.append(line)
    names: list[str] = []
    for spec in specs:
        name = _requirement_name(spec)
        if name not in names:
            names.append(name)
    return names


def constraints_file(root: Path, accelerator: str) -> Path:
    path = root / "constraints" / f"{accelerator}.txt"
    if not path.is_file():
        raise ConfigurationError(f"no constraints file for accelerator {accelerator!r}: {path}")
    return path


def pinned_requirements(root: Path, accelerator: str) -> dict[str, list[str]]:
    """Per image, ``name==version`` for every requirement; a requirement without a pin is an
    error (a build must be reproducible)."""
    pins = read_pins(constraints_file(root, accelerator)).packages
    result: dict[str, list[str]] = {}
    for image in IMAGES:
        lines = []
        for name in image_requirements(root, image, accelerator):
            if name not in pins:
                raise ConfigurationError(
                    f"{name} (needed by the {image} image) has no pin in "
                    f"constraints/{accelerator}.txt; add {name}==<version>"
                )
            lines.append(f"{name}=={pins[name]}")
        result[image] = lines
    return result


def shared_constraints(root: Path) -> Path:
    """The host's dev pins: a package both the images and the dev tools use (boto3, requests)
    resolves to the same version in both places."""
    return root / "constraints" / "dev.txt"


def cache_key(root: Path, accelerator: str) -> str:
    target = TARGETS[accelerator]
    shared = shared_constraints(root)
    payload = json.dumps(
        {
            "constraints": constraints_file(root, accelerator).read_text(encoding="utf-8"),
            "shared": shared.read_text(encoding="utf-8") if shared.is_file() else "",
            "requirements": pinned_requirements(root, accelerator),
            "target": [target.python_version, target.platforms],
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pip", *args]
    log.debug("running %s", " ".join(cmd))
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    # Drop pip's per-index location warnings: they drown the one line that matters.
    done.stderr = "\n".join(
        line for line in done.stderr.splitlines() if "is ignored: it is neither" not in line
    )
    return done


_UNRESOLVABLE = (
    re.compile(r"No matching distribution found for ([A-Za-z0-9._-]+)"),
    re.compile(r"Cannot install ([A-Za-z0-9._-]+)(?:[=<>!~]\S*)? because"),
)


def _download(
    requirements: Path,
    constraints: list[Path],
    target: Target,
    dest: Path,
    links: Path | list[Path],
) -> str | None:
    """Download binary wheels for the target; return the name pip found no wheel for."""
    args = ["download", "-q", "-r", str(requirements), "-d", str(dest)]
    for path in constraints:
        args += ["-c", str(path)]
    for link in links if isinstance(links, list) else [links]:
        args += ["--find-links", str(link)]
    args += ["--only-binary=:all:"]
    args += ["--python-version", target.python_version, "--implementation", "cp"]
    for abi in (target.abi, "abi3", "none"):
        args += ["--abi", abi]
    for platform in target.platforms:
        args += ["--platform", platform]
    done = _pip(*args)
    if done.returncode == 0:
        return None
    for pattern in _UNRESOLVABLE:
        match = pattern.search(done.stderr)
        if match:
            return canonical(match.group(1))
    raise WheelhouseError(f"pip download failed:\n{done.stderr[-3000:]}")


def _build_sdist_wheel(spec: str, dest: Path) -> Path:
    """Build a wheel from an sdist (pure Python only: it must run on the image's platform)."""
    before = set(dest.glob("*.whl"))
    done = _pip("wheel", "-q", "--no-deps", "-w", str(dest), spec)
    if done.returncode != 0:
        raise WheelhouseError(f"pip wheel {spec} failed:\n{done.stderr[-3000:]}")
    built = sorted(set(dest.glob("*.whl")) - before) or [
        p for p in dest.glob("*.whl") if canonical(p.name.split("-")[0]) == _requirement_name(spec)
    ]
    for wheel in built:
        if not wheel.name.endswith("-none-any.whl"):
            raise WheelhouseError(
                f"{wheel.name} has no binary wheel for the image platform and is not pure "
                "Python; build it inside the image's platform or pin a version with wheels"
            )
    return built[0]


def wheel_versions(directory: Path) -> dict[str, str]:
    """name -> version of every wheel in a directory."""
    versions = {}
    for wheel in directory.glob("*.whl"):
        name, version = wheel.name.split("-")[:2]
        versions[canonical(name)] = version
    return versions


def check_no_cuda(directory: Path) -> None:
    """The image must never carry the multi-GB CUDA build of torch."""
    cuda = sorted(p.name for p in directory.glob("nvidia_*.whl"))
    torch = sorted(p.name for p in directory.glob("torch-*.whl"))
    if cuda or any("+cpu" not in name for name in torch):
        raise WheelhouseError(
            "the wheelhouse would carry a CUDA build of torch "
            f"({', '.join(torch + cuda[:3])}); point pip at the CPU wheels "
            "(PIP_FIND_LINKS or PIP_EXTRA_INDEX_URL with PyTorch's CPU index)"
        )


def build_wheelhouse(
    accelerator: str = "cpu",
    root: Path | None = None,
    *,
    base: BaseInventory | None = None,
    images: tuple[str, ...] = IMAGES,
) -> Path:
    """Assemble (or reuse) the dependency wheelhouse; return its directory.

    ``neuron`` needs ``base`` (what the DLC already has) and is made per image: the training
    and inference DLCs differ.
    """
    root = root or repo_root()
    if accelerator == "neuron":
        if base is None:
            raise ConfigurationError(
                "the neuron wheelhouse is made against its base image (the Neuron DLC): "
                "run `smneuron build --accelerator neuron`"
            )
        return build_base_wheelhouse(root, base, images)
    target = TARGETS[one_of(accelerator, tuple(TARGETS), "accelerator")]
    out = root / "build" / "wheelhouse" / f"{accelerator}-{cache_key(root, accelerator)}"
    if (out / ".complete").is_file():
        log.info("wheelhouse %s is cached (%d wheels)", out, len(list(out.glob("*.whl"))))
        return out
    requirements = pinned_requirements(root, accelerator)
    constraints = constraints_file(root, accelerator)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    sdists = staging / "sdist-wheels"
    sdists.mkdir(parents=True)
    union = staging / "requirements.txt"
    union.write_text(
        "\n".join(sorted({line for lines in requirements.values() for line in lines})) + "\n",
        encoding="utf-8",
    )
    pins = read_pins(constraints).packages
    built: set[str] = set()
    log.info("building the %s wheelhouse for Python %s", accelerator, target.python_version)
    all_constraints = [constraints]
    if shared_constraints(root).is_file():
        all_constraints.append(shared_constraints(root))
    while (missing := _download(union, all_constraints, target, staging, sdists)) is not None:
        if missing in built:
            raise WheelhouseError(f"no wheel for {missing} even after building it from source")
        spec = f"{missing}=={pins[missing]}" if missing in pins else missing
        log.info("no binary wheel for %s: building it from the sdist", spec)
        _build_sdist_wheel(spec, sdists)
        built.add(missing)
    for wheel in sdists.glob("*.whl"):
        shutil.move(str(wheel), staging / wheel.name)
    sdists.rmdir()
    if accelerator == "cpu":
        check_no_cuda(staging)
    for image, lines in requirements.items():
        (staging / f"requirements-{image}.txt").write_text("\n".join(lines) + "\n", "utf-8")
    shutil.copyfile(constraints, staging / "constraints.txt")
    return _publish(staging, out, f"{accelerator}-*")


def _publish(staging: Path, out: Path, siblings: str) -> Path:
    """Mark ``staging`` complete, move it to ``out``, and drop outdated ``siblings`` next to it."""
    (staging / ".complete").write_text(json.dumps(wheel_versions(staging), indent=1), "utf-8")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    for old in out.parent.glob(siblings):
        if old != out:
            log.info("removing the outdated wheelhouse %s", old)
            shutil.rmtree(old, ignore_errors=True)
    size = sum(p.stat().st_size for p in out.glob("*.whl")) / 1e6
    log.info("wheelhouse %s: %d wheels, %.0f MB", out, len(list(out.glob("*.whl"))), size)
    return out


_EXTRA_MARKER = re.compile(r"""extra\s*==\s*['"]([^'"]+)['"]""")


def _stub_version(version: str) -> str:
    """The base's version with our local label: only our stub wheel can match it exactly."""
    return f"{version}.{STUB_LABEL}" if "+" in version else f"{version}+{STUB_LABEL}"


def write_stub_wheel(
    directory: Path, name: str, version: str, requires: list[str] | None = None
) -> Path:
    """A metadata-only wheel standing for a distribution the base image already has.

    ``requires``: only those the base does not satisfy itself (packaging tools a venv
    shadows); the base's own distributions satisfy each other.
    """
    stem = f"{re.sub(r'[-_.]+', '_', name)}-{version}"
    info = f"{stem}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    extras = sorted({m.group(1) for spec in requires or [] for m in _EXTRA_MARKER.finditer(spec)})
    metadata += "".join(f"Provides-Extra: {extra}\n" for extra in extras)
    metadata += "".join(f"Requires-Dist: {spec}\n" for spec in requires or [])
    files = {
        f"{info}/METADATA": metadata,
        f"{info}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: smneuron\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = "".join(f"{path},,\n" for path in files) + f"{info}/RECORD,,\n"
    path = directory / f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in {**files, f"{info}/RECORD": record}.items():
            archive.writestr(member, text)
    return path


def check_base_only(directory: Path, base: BaseInventory) -> None:
    """The neuron wheelhouse must not carry torch, the Neuron stack or CUDA libraries."""
    found = sorted(
        p.name
        for p in directory.glob("*.whl")
        if canonical(p.name.split("-")[0]) in BASE_ONLY or p.name.startswith("nvidia_")
    )
    if found:
        raise WheelhouseError(
            f"the neuron wheelhouse would install {', '.join(found[:4])} over {base.image}; "
            "those must come from the Neuron DLC"
        )


def base_cache_key(root: Path, base: BaseInventory, names: dict[str, list[str]]) -> str:
    payload = json.dumps(
        {
            "constraints": constraints_file(root, "neuron").read_text(encoding="utf-8"),
            "base": [base.python_version, base.glibc, sorted(base.packages.items())],
            "tool_requires": sorted(base.tool_requires.items()),
            "requirements": names,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def build_base_wheelhouse(root: Path, base: BaseInventory, images: tuple[str, ...]) -> Path:
    """The neuron wheelhouse: smneuron's requirements for ``images`` that ``base`` lacks.

    Writes ``requirements-<image>.txt`` (every requirement pinned, to the base's version where
    the base has it) and ``constraints.txt`` (the image's lock: the base's distributions at
    their versions plus every wheel here), which the Dockerfiles install with.
    """
    _check_neuron_stack(base)
    pins = read_pins(constraints_file(root, "neuron")).packages
    _warn_about_overridden_pins(base, pins)
    names = {image: image_requirements(root, image, "neuron") for image in images}
    label = "-".join(images) if images != IMAGES else "all"
    out = root / "build" / "wheelhouse" / f"neuron-{label}-{base_cache_key(root, base, names)}"
    if (out / ".complete").is_file():
        log.info("wheelhouse %s is cached (%d wheels)", out, len(list(out.glob("*.whl"))))
        return out
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    log.info(
        "building the neuron wheelhouse for %s (Python %s, glibc %s, %d distributions in it)",
        base.image,
        base.target.python_version,
        base.glibc,
        len(base.packages),
    )
    resolution = BaseResolution.start(base, pins, staging)
    resolution.download(sorted({n for ns in names.values() for n in ns}))
    resolution.write_locks(names)
    return _publish(staging, out, f"neuron-{label}-*")


def _check_neuron_stack(base: BaseInventory) -> None:
    missing_stack = [name for name in ("torch", "torch-neuronx") if name not in base.packages]
    if missing_stack:
        raise WheelhouseError(
            f"{base.image} has no {' or '.join(missing_stack)}: the neuron images build FROM "
            "the AWS Neuron Deep Learning Container named in constraints/neuron.txt"
        )


def _warn_about_overridden_pins(base: BaseInventory, pins: dict[str, str]) -> None:
    locked = base.locked()
    for name in sorted(set(pins) & set(locked)):
        if locked[name].split("+")[0] != pins[name].split("+")[0]:
            log.warning(
                "%s has %s %s, constraints/neuron.txt pins %s: the base's is kept",
                base.image,
                name,
                locked[name],
                pins[name],
            )


@dataclass
class BaseResolution:
    """One resolution of smneuron's requirements on top of a base image, in ``staging``.

    pip sees the base's distributions as metadata-only stub wheels pinned to their versions
    (``locked``); each time pip finds no fit, ``settle`` decides the next step: let a
    packaging tool float, give the venv its own copy of a base helper library, or build a
    pure-Python wheel from its sdist. The resolution ends when pip downloads everything.
    """

    base: BaseInventory
    pins: dict[str, str]
    staging: Path
    locked: dict[str, str]  # base distributions pip must take as they are
    tools: dict[str, str]  # packaging tools pinned to the base's version while they fit
    built: set[str] = field(default_factory=set)  # names built from an sdist

    @classmethod
    def start(cls, base: BaseInventory, pins: dict[str, str], staging: Path) -> BaseResolution:
        # The venv's own copies of the packaging tools: the base's versions where they fit.
        tools = {name: base.packages[name] for name in SHADOWABLE if name in base.packages}
        resolution = cls(base, pins, staging, base.locked(), tools)
        resolution.sdists.mkdir(parents=True)
        resolution.stubs.mkdir()
        resolution.write_resolve_inputs()
        return resolution

    @property
    def sdists(self) -> Path:
        return self.staging / "sdist-wheels"

    @property
    def stubs(self) -> Path:
        return self.staging / "base-stubs"

    @property
    def resolve_constraints(self) -> Path:
        return self.staging / "resolve-constraints.txt"

    def write_resolve_inputs(self) -> None:
        """Stub wheels for ``locked`` and the constraints pip resolves with."""
        for stub in self.stubs.glob("*.whl"):
            stub.unlink()
        for name, version in self.locked.items():
            requires = self.base.tool_requires.get(name, []) + self.base.extra_requires.get(name, [])
            write_stub_wheel(self.stubs, name, _stub_version(version), requires)
        lines = [f"{name}=={_stub_version(v)}" for name, v in sorted(self.locked.items())]
        lines += [f"{name}=={v}" for name, v in sorted(self.tools.items())]
        lines += [
            f"{name}=={v}"
            for name, v in sorted(self.pins.items())
            if name not in self.locked and name not in self.tools
        ]
        self.resolve_constraints.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def download(self, requirements: list[str]) -> None:
        """Download wheels for ``requirements`` until pip finds a fit for all of them."""
        union = self.staging / "requirements.txt"
        union.write_text("\n".join(requirements) + "\n", "utf-8")
        links = [self.sdists, self.stubs]
        target = self.base.target
        while (
            missing := _download(union, [self.resolve_constraints], target, self.staging, links)
        ) is not None:
            self.settle(missing)

    def settle(self, missing: str) -> None:
        """The next step when pip found no wheel that fits for ``missing``."""
        image = self.base.image
        if missing in self.tools:
            log.info(
                "%s: %s %s does not fit; any version will do",
                image,
                missing,
                self.tools.pop(missing),
            )
        elif missing in self.locked and missing in BASE_ONLY:
            raise WheelhouseError(
                f"smneuron's requirements do not fit {missing} {self.locked[missing]} as "
                f"installed in {image}; align the pins in constraints/neuron.txt with that image"
            )
        elif missing in self.locked:
            # A helper library of the base (fsspec, say) too new or old for a requirement:
            # the venv gets its own copy, which shadows the base's for smneuron only.
            log.warning(
                "%s: %s %s does not fit smneuron's requirements; the venv gets its own",
                image,
                missing,
                self.locked.pop(missing),
            )
        elif missing in self.built:
            raise WheelhouseError(f"no wheel for {missing} even after building it from source")
        else:
            spec = f"{missing}=={self.pins[missing]}" if missing in self.pins else missing
            log.info("no binary wheel for %s: building it from the sdist", spec)
            _build_sdist_wheel(spec, self.sdists)
            self.built.add(missing)
            return
        self.write_resolve_inputs()

    def write_locks(self, names: dict[str, list[str]]) -> None:
        """Drop the stubs and scratch files; write each image's requirements and the lock."""
        for wheel in self.staging.glob(f"*{STUB_LABEL}*.whl"):
            wheel.unlink()
        for wheel in self.sdists.glob("*.whl"):
            shutil.move(str(wheel), self.staging / wheel.name)
        shutil.rmtree(self.sdists)
        shutil.rmtree(self.stubs)
        self.resolve_constraints.unlink()
        check_base_only(self.staging, self.base)
        versions = {**self.locked, **wheel_versions(self.staging)}
        for image, image_names in names.items():
            lines = [f"{name}=={versions[name]}" for name in image_names]
            (self.staging / f"requirements-{image}.txt").write_text(
                "\n".join(lines) + "\n", "utf-8"
            )
        (self.staging / "constraints.txt").write_text(
            "# Generated by smneuron.tools.build.wheelhouse from constraints/neuron.txt for "
            f"{self.base.image}:\n"
            "# its own distributions at their versions, plus the wheels next to this file.\n"
            + "".join(f"{name}=={version}\n" for name, version in sorted(versions.items())),
            encoding="utf-8",
        )


def write_lock(accelerator: str = "cpu", root: Path | None = None) -> list[str]:
    """Pin every transitive dependency of the images into the constraints file (a generated
    section at its end), so later builds resolve to exactly the same set.

    Where the host (set up with ``make setup``) has a package installed, its version is the
    pin: the host's dev tools (sagemaker, moto) and the images then agree on shared packages.
    """
    root = root or repo_root()
    path = constraints_file(root, accelerator)
    text = path.read_text(encoding="utf-8").split(LOCK_MARKER, 1)[0].rstrip("\n")
    path.write_text(text + "\n", "utf-8")
    wheelhouse = build_wheelhouse(accelerator, root)
    pins = read_pins(path).packages
    if shared_constraints(root).is_file():
        pins |= read_pins(shared_constraints(root)).packages
    extra = [
        f"{name}=={package_version(name) or version}"
        for name, version in sorted(wheel_versions(wheelhouse).items())
        if name not in pins and name != "torch"
    ]
    if extra:
        path.write_text(text + "\n" + LOCK_MARKER + "\n" + "\n".join(extra) + "\n", "utf-8")
    build_wheelhouse(accelerator, root)  # resolves with the lock; fails if it is inconsistent
    return extra


def smneuron_wheel(root: Path, dest: Path) -> Path:
    """Build this package as a wheel (no dependencies: they come from the wheelhouse)."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    done = _pip("wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dest), str(root))
    if done.returncode != 0:
        raise WheelhouseError(f"building the smneuron wheel failed:\n{done.stderr[-3000:]}")
    return next(dest.glob("smneuron-*.whl"))


def main(argv: list[str] | None = None) -> int:
    """``python -m smneuron.tools.build.wheelhouse [cpu|neuron] [--lock]``: print its path."""
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    accelerator = next((a for a in args if not a.startswith("-")), "cpu")
    try:
        if "--lock" in args:
            for line in write_lock(accelerator):
                print(f"pinned {line}")
        print(build_wheelhouse(accelerator))
    except SmneuronError as err:
        print(f"wheelhouse: {err.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

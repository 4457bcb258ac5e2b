"""Host-side wheelhouse: every wheel an image needs, for the image's platform, from the pins.

Images install with ``pip install --no-index --find-links`` from this wheelhouse, so a build
needs no package index inside a container, never backtracks, and never pulls the CUDA build of
torch. Wheels are fetched for the image's platform and Python (not the host's): binaries with
``pip download --platform ... --only-binary=:all:``, pure-Python sdists built once with
``pip wheel --no-deps``. The result is cached under ``build/wheelhouse/<accelerator>-<hash>``,
the hash covering the constraints, the requirement lists and the target.
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
from dataclasses import dataclass
from pathlib import Path

from smneuron.errors import ConfigurationError, SmneuronError

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
TARGETS = {"cpu": Target("cpu", "3.11", 28), "neuron": Target("neuron", "3.11", 35)}


class WheelhouseError(SmneuronError):
    """The wheelhouse could not be assembled (a pin missing, a wheel not found)."""


def repo_root() -> Path:
    """The checkout this package was installed from (editable install) or the cwd."""
    here = Path(__file__).resolve().parents[2]
    return here if (here / "pyproject.toml").is_file() else Path.cwd()


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path) -> dict[str, str]:
    """``name==version`` lines of a constraints file (comments and blanks skipped)."""
    pins: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;]+)", line)
        if not match:
            raise ConfigurationError(f"{path}: not a name==version pin: {line!r}")
        pins[canonical(match.group(1))] = match.group(2)
    return pins


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
    pins = read_pins(constraints_file(root, accelerator))
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
    requirements: Path, constraints: list[Path], target: Target, dest: Path, links: Path
) -> str | None:
    """Download binary wheels for the target; return the name pip found no wheel for."""
    args = ["download", "-q", "-r", str(requirements), "-d", str(dest)]
    for path in constraints:
        args += ["-c", str(path)]
    args += ["--find-links", str(links), "--only-binary=:all:"]
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


def build_wheelhouse(accelerator: str = "cpu", root: Path | None = None) -> Path:
    """Assemble (or reuse) the dependency wheelhouse; return its directory."""
    root = root or repo_root()
    if accelerator not in TARGETS:
        raise ConfigurationError(f"accelerator {accelerator!r} is not one of: {', '.join(TARGETS)}")
    target = TARGETS[accelerator]
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
    pins = read_pins(constraints)
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
    (staging / ".complete").write_text(json.dumps(wheel_versions(staging), indent=1), "utf-8")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    for old in out.parent.glob(f"{accelerator}-*"):
        if old != out:
            log.info("removing the outdated wheelhouse %s", old)
            shutil.rmtree(old, ignore_errors=True)
    size = sum(p.stat().st_size for p in out.glob("*.whl")) / 1e6
    log.info("wheelhouse %s: %d wheels, %.0f MB", out, len(list(out.glob("*.whl"))), size)
    return out


def _host_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


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
    pins = read_pins(path)
    if shared_constraints(root).is_file():
        pins |= read_pins(shared_constraints(root))
    extra = [
        f"{name}=={_host_version(name) or version}"
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
    """``python -m smneuron.wheelhouse [cpu|neuron] [--lock]``: print the wheelhouse path."""
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

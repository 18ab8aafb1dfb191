"""The container image without a registry: Debian's debootstrap makes the base, Debian's
buildah builds the project's Dockerfile on it and runs the result (issue 14).

``base_tarball()`` is a Debian bookworm made with ``debootstrap --variant=minbase
--include=python3,python3-venv`` from the mirror this machine's apt uses, plus what the
``python:*-slim`` images give a build: a ``python`` command, the host's CA bundle and the
host's pip settings that reach a package index from inside the build. It is cached under
``CACHE`` keyed by that recipe, and made again when the recipe or the host's settings change.
``Buildah`` runs buildah against a storage of its own, so a run leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CACHE = Path(os.environ.get("SENTRY_BRIDGE_TEST_CACHE", "/var/cache/sentry-bridge-tests"))
SUITE = "bookworm"  # the Dockerfile's default python:3.11-slim-bookworm
DEBOOTSTRAP = ["--variant=minbase", "--include=python3,python3-venv", SUITE]
FALLBACK_MIRROR = "http://deb.debian.org/debian"
BASE_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
HOST_CA_BUNDLE = Path(BASE_CA_BUNDLE)
# Bump when the base's recipe below changes in a way its key does not see.
RECIPE = 1

# pip settings worth carrying into the build: where the index is and how to reach it. Local
# paths (find-links, file:// indexes, constraint files) do not exist inside the build.
_PIP_KEYS = {"index-url", "extra-index-url", "trusted-host", "timeout", "retries", "proxy"}
_PIP_URL_KEYS = {"index-url", "extra-index-url", "proxy"}


def require_tools() -> None:
    """Skips without root, buildah and debootstrap, or fails under ``CI=true``."""
    missing = [tool for tool in ("buildah", "debootstrap") if shutil.which(tool) is None]
    reason = ""
    if missing:
        reason = f"{' and '.join(missing)} not installed (scripts/test installs them as root)"
    elif os.geteuid() != 0:
        reason = "building and running the image with buildah's chroot isolation needs root"
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


def apt_mirror(sources: Mapping[str, str]) -> str:
    """The Debian archive this machine's apt uses, from the text of its sources files
    (one-line ``.list`` or deb822 ``.sources``); not the security archive."""
    for name, text in sorted(sources.items()):
        if name.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    key, sep, value = line.partition(":")
                    if sep and not line.startswith("#"):
                        fields[key.strip().lower()] = value.strip()
                suites = fields.get("suites", "").split()
                if "deb" in fields.get("types", "").split() and _debian(suites):
                    return fields.get("uris", "").split()[0]
        elif name.endswith(".list"):
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line).split()
                if len(words) >= 3 and words[0] == "deb" and _debian([words[2]]):
                    return words[1]
    return FALLBACK_MIRROR


def _debian(suites: list[str]) -> bool:
    return any(re.fullmatch(r"[a-z]+(-updates)?|stable|testing|unstable", s) for s in suites)


def host_sources(apt: Path = Path("/etc/apt")) -> dict[str, str]:
    files = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*"))]
    return {p.name: p.read_text(encoding="utf-8") for p in files if p.is_file()}


def pip_conf(config_list: str) -> str:
    """The base's /etc/pip.conf from ``pip config list`` on the host (its files and PIP_*
    environment): the index settings that are network URLs, and the CA bundle copied in."""
    settings: dict[str, str] = {}
    for line in config_list.splitlines():
        key, sep, raw = line.partition("=")
        if not sep:
            continue
        name = key.rpartition(".")[2]
        value = raw.strip().strip("'\"")
        if name not in _PIP_KEYS:
            continue
        if name in _PIP_URL_KEYS:
            value = " ".join(v for v in value.split() if re.match(r"https?://", v))
        if value:
            settings[name] = value  # pip config list prints the winning source last
    settings["cert"] = BASE_CA_BUNDLE
    return "[global]\n" + "".join(f"{k} = {v}\n" for k, v in sorted(settings.items()))


def host_pip_conf(python: str) -> str:
    listed = subprocess.run(
        [python, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    ).stdout
    return pip_conf(listed)


def recipe(mirror: str, pip_conf_text: str) -> dict[str, Any]:
    ca = hashlib.sha256(HOST_CA_BUNDLE.read_bytes()).hexdigest() if HOST_CA_BUNDLE.exists() else ""
    arch = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return {
        "recipe": RECIPE,
        "debootstrap": DEBOOTSTRAP,
        "mirror": mirror,
        "arch": arch,
        "pip.conf": pip_conf_text,
        "ca-bundle": ca,
    }


def base_tarball(python: str, workdir: Path) -> tuple[Path, bool]:
    """The base as a tarball, and whether it came from the cache."""
    pip_conf_text = host_pip_conf(python)
    mirror = apt_mirror(host_sources())
    wanted = recipe(mirror, pip_conf_text)
    key = hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:16]
    cached = CACHE / f"bookworm-python3-{key}.tar"
    if cached.exists():
        return cached, True
    rootfs = workdir / "rootfs"
    subprocess.run(
        ["debootstrap", *DEBOOTSTRAP, str(rootfs), mirror],
        check=True,
        capture_output=True,
        timeout=900,
    )
    # What the slim Python images have and the Dockerfile relies on (`python -m venv`, pip
    # reaching the index), and not the apt lists and downloaded packages of the bootstrap.
    (rootfs / "usr/bin/python").symlink_to("python3")
    if HOST_CA_BUNDLE.exists():
        ca = rootfs / BASE_CA_BUNDLE.lstrip("/")
        ca.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(HOST_CA_BUNDLE, ca)
    (rootfs / "etc/pip.conf").write_text(pip_conf_text, encoding="utf-8")
    for junk in ("var/lib/apt/lists", "var/cache/apt/archives"):
        for entry in (rootfs / junk).glob("*"):
            if entry.is_file():
                entry.unlink()
    tarball = workdir / "base.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(rootfs, arcname=".")
    shutil.rmtree(rootfs)  # some 200 MB, in a directory other runs share
    # Into the cache under a name of its own, then renamed into place: a concurrent or
    # interrupted run never sees half a file. Without a writable cache, this run's copy serves.
    partial = CACHE / f".{cached.name}.{os.getpid()}"
    try:
        CACHE.mkdir(parents=True, exist_ok=True)
        shutil.move(tarball, partial)
        os.replace(partial, cached)
    except OSError:
        if not tarball.exists():
            return partial, False  # moved, not renamed: it is whole
        partial.unlink(missing_ok=True)
        return tarball, False
    return cached, False


@dataclass
class Buildah:
    """buildah on a storage of its own under ``root``."""

    root: Path
    driver: str

    def command(self, *args: str) -> list[str]:
        return [
            "buildah",
            "--root",
            str(self.root / "storage"),
            "--runroot",
            str(self.root / "run"),
            "--storage-driver",
            self.driver,
            *args,
        ]

    def __call__(self, *args: str, timeout: float = 120) -> str:
        result = subprocess.run(
            self.command(*args), capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"buildah {' '.join(args)} failed:\n{result.stderr[-4000:]}")
        return result.stdout.strip()

    def import_tarball(self, tarball: Path, name: str) -> None:
        """``buildah import``, which buildah lacks: a scratch container, the tarball added at
        its root, committed under ``name``."""
        container = self("from", "scratch")
        try:
            self("add", container, str(tarball), "/", timeout=300)
            self(
                "config",
                "--env",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                container,
            )
            self("commit", "--quiet", container, name, timeout=300)
        finally:
            self("rm", container)

    def inspect_image(self, name: str) -> dict[str, Any]:
        config: dict[str, Any] = json.loads(self("inspect", "--type", "image", name))
        return config


@contextlib.contextmanager
def storage(root: Path) -> Iterator[Buildah]:
    """A private buildah storage: overlay where the kernel allows it, vfs otherwise; every
    container and image in it removed at the end."""
    for driver in ("overlay", "vfs"):
        buildah = Buildah(root / driver, driver)
        try:
            buildah("rm", buildah("from", "scratch"))
        except RuntimeError:
            continue
        break
    else:
        raise RuntimeError("buildah works with neither the overlay nor the vfs storage driver")
    try:
        yield buildah
    finally:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            buildah("rm", "--all")
            buildah("rmi", "--all", "--force", timeout=300)
        shutil.rmtree(buildah.root, ignore_errors=True)


def files(rootfs: Path, skip: set[str]) -> dict[str, tuple[int, int]]:
    """Every regular file under ``rootfs`` with (mtime_ns, size), outside the ``skip`` paths
    (mount points, whose contents are not the image's)."""
    out: dict[str, tuple[int, int]] = {}
    for directory, dirs, names in os.walk(rootfs):
        relative = os.path.relpath(directory, rootfs)
        rel = "" if relative == "." else "/" + relative
        dirs[:] = [d for d in dirs if f"{rel}/{d}" not in skip]
        for name in names:
            st = os.lstat(os.path.join(directory, name))
            if stat.S_ISREG(st.st_mode):
                out[f"{rel}/{name}"] = (st.st_mtime_ns, st.st_size)
    return out

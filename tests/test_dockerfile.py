"""The container image's recipe: hadolint finds nothing, and the properties the chart and the
operators rely on hold (two stages, locked dependencies before the source, a numeric
non-root user, exec-form entrypoint, a health check that really fails when unhealthy).

What can be checked without a container engine; tests/integration/test_image.py builds the
image with buildah and runs it."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.status_server import serve_status

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    logical = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        logical += line
        if logical.endswith("\\"):
            logical = logical[:-1].rstrip() + " "
            continue
        keyword, _, args = logical.partition(" ")
        out.append((keyword.upper(), args.strip()))
        logical = ""
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, args in instructions():
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, args))
    return result


def test_hadolint_reports_nothing() -> None:
    hadolint = Path(sysconfig.get_path("scripts")) / "hadolint"
    result = subprocess.run(
        [str(hadolint), "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert json.loads(result.stdout) == [], result.stdout
    assert result.returncode == 0


def test_two_stages_from_the_same_slim_python() -> None:
    build, runtime = stages()
    assert build[0] == ("FROM", "${PYTHON_IMAGE} AS build")
    assert runtime[0] == ("FROM", "${PYTHON_IMAGE}")
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in DOCKERFILE.read_text(encoding="utf-8")
    # The runtime takes the virtualenv out of the build stage and the default config, never
    # the sources.
    copies = [args for keyword, args in runtime if keyword == "COPY"]
    assert copies == [
        "--from=build /opt/venv /opt/venv",
        "config.yaml /etc/sentry-bridge/config.yaml",
    ]


def test_locked_dependencies_are_installed_before_the_source() -> None:
    build = stages()[0]
    steps = [f"{keyword} {args}" for keyword, args in build]
    lock_copy = steps.index("COPY requirements.lock ./")
    lock_install = steps.index(
        "RUN pip install --no-deps --require-hashes --compile -r requirements.lock"
    )
    source_copy = steps.index("COPY bridge/ bridge/")
    package_install = steps.index("RUN pip install --no-deps --compile .")
    assert lock_copy < lock_install < source_copy < package_install


def test_runs_as_a_numeric_non_root_user_in_exec_form() -> None:
    runtime = dict(stages()[1])
    user = runtime["USER"]
    assert re.fullmatch(r"[1-9][0-9]*:[1-9][0-9]*", user), user
    assert json.loads(runtime["ENTRYPOINT"]) == ["sentry-bridge"]
    assert json.loads(runtime["CMD"]) == ["serve"]
    assert "BRIDGE_CONFIG=/etc/sentry-bridge/config.yaml" in runtime["ENV"]
    assert "BRIDGE_DATA_DIR=/var/lib/sentry-bridge" in runtime["ENV"]


def test_oci_labels() -> None:
    labels = dict(stages()[1])["LABEL"]
    for key in ("title", "description", "licenses", "version", "revision"):
        assert f"org.opencontainers.image.{key}=" in labels


def _healthcheck_code() -> str:
    healthcheck = dict(stages()[1])["HEALTHCHECK"]
    command = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert command[:2] == ["python", "-c"]
    code: str = command[2]
    assert "http://127.0.0.1:8080/-/healthy" in code
    return code


@pytest.mark.parametrize(
    ("status", "healthy"),
    [
        pytest.param(200, True, id="200-healthy"),
        pytest.param(503, False, id="503-unhealthy"),
    ],
)
def test_the_healthcheck_fails_unless_the_bridge_answers_2xx(status: int, healthy: bool) -> None:
    with serve_status(status) as port:
        code = _healthcheck_code().replace(":8080/", f":{port}/")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False)
    assert (result.returncode == 0) is healthy


def test_the_healthcheck_fails_when_nothing_listens() -> None:
    with serve_status(200) as port:
        pass  # closed again: nothing listens on the port now
    code = _healthcheck_code().replace(":8080/", f":{port}/")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False)
    assert result.returncode != 0


def _ignored(path: str) -> bool:
    """Docker's rule: the last .dockerignore pattern matching a path decides."""
    ignored = False
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(p, pattern.removeprefix("**/")) for p in prefixes) or (
            pattern.startswith("**/")
            and any(fnmatch.fnmatchcase(part, pattern[3:]) for part in parts)
        ):
            ignored = not negate
    return ignored


def test_everything_copied_is_in_the_build_context() -> None:
    sources = []
    for keyword, args in instructions():
        if keyword == "COPY" and not args.startswith("--from"):
            sources += args.split()[:-1]
    assert sources
    for source in sources:
        assert not _ignored(source.rstrip("/")), f"{source} is excluded by .dockerignore"


@pytest.mark.parametrize(
    ("path", "ignored"),
    [
        pytest.param("bridge/app.py", False, id="package"),
        pytest.param("config.yaml", False, id="shipped-config"),
        pytest.param("bridge/__pycache__/app.cpython-311.pyc", True, id="bytecode"),
        pytest.param(".git/config", True, id="git"),
        pytest.param(".venv/bin/python", True, id="venv"),
        pytest.param("tests/test_app.py", True, id="tests"),
        pytest.param(".env", True, id="dotenv"),
        pytest.param("helm/sentry-alertmanager-bridge/values.yaml", True, id="chart"),
    ],
)
def test_dockerignore_keeps_the_context_small(path: str, ignored: bool) -> None:
    assert _ignored(path) is ignored


def test_the_chart_runs_the_image_as_its_user() -> None:
    import yaml

    values = yaml.safe_load(
        (ROOT / "helm" / "sentry-alertmanager-bridge" / "values.yaml").read_text(encoding="utf-8")
    )
    uid, gid = dict(stages()[1])["USER"].split(":")
    assert values["podSecurityContext"]["runAsUser"] == int(uid)
    assert values["podSecurityContext"]["runAsGroup"] == int(gid)

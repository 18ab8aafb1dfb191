"""The bridge as users install it: the wheel, installed non-editable into a fresh virtualenv
outside the source tree, runs ``sentry-bridge serve`` and delivers a signed webhook to a real
Alertmanager.

The rest of the suite imports the bridge from the source tree (an editable install), so a
module the wheel leaves out goes unseen there; issue 14's image failed at start with
``ModuleNotFoundError: No module named 'bridge.store.sqlite'`` for that reason.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.integration import procs
from tests.integration.conftest import ENV, Alertmanager, Bridge, fixture

ROOT = procs.ROOT
FRONTEND_ISSUE = "1117540176"  # event_alert.json


def _pip(python: Path, *args: str, cwd: Path) -> None:
    # pip's own cache and the machine's pip settings: no network other than the package index.
    subprocess.run(
        [str(python), "-m", "pip", "--disable-pip-version-check", "-q", *args],
        cwd=cwd,
        check=True,
        timeout=240,
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from the files the Dockerfile copies, in a copy of them, so the build
    leaves nothing (build/, *.egg-info) in the source tree."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "bridge", src / "bridge", ignore=shutil.ignore_patterns("__pycache__"))
    _pip(
        Path(sys.executable), "wheel", "--no-deps", "--wheel-dir", str(base / "dist"), ".", cwd=src
    )
    [built] = (base / "dist").glob("sentry_alertmanager_bridge-*.whl")
    return built


def test_the_wheel_holds_every_module_and_data_file_under_bridge(wheel: Path) -> None:
    wanted = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "bridge").rglob("*")
        if path.is_file() and path.suffix in {".py", ".json"} and "__pycache__" not in path.parts
    }
    assert "bridge/store/sqlite/__init__.py" in wanted  # the walk sees the subpackages
    with zipfile.ZipFile(wheel) as archive:
        shipped = set(archive.namelist())
    assert sorted(wanted - shipped) == []


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv outside the source tree: the locked dependencies (hashes required),
    then the wheel, not editable. Installed by this interpreter's pip (``--python``): the
    bridge needs no pip of its own, and putting one in (ensurepip) took 20 s of the fixture."""
    home = tmp_path_factory.mktemp("installed")
    path = home / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120
    )
    pip = (Path(sys.executable), "--python", str(path / "bin" / "python"), "install", "--no-deps")
    lock = str(ROOT / "requirements.lock")
    _pip(*pip, "--require-hashes", "-r", lock, cwd=home)
    _pip(*pip, str(wheel), cwd=home)
    return path


def test_the_installed_bridge_delivers_a_signed_webhook(
    venv: Path, alertmanager: Alertmanager, tmp_path: Path
) -> None:
    # Whatever runs below imports the bridge from the virtualenv, never from the sources.
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import bridge; print(bridge.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(venv), where

    config = procs.write_config(tmp_path / "config.yaml", [alertmanager.url])
    port = procs.free_port()
    args = [str(venv / "bin" / "sentry-bridge"), "serve", "--config", str(config)]
    args += ["--host", "127.0.0.1", "--port", str(port)]
    env = {**ENV, "BRIDGE_DATA_DIR": str(tmp_path / "data")}
    url = f"http://127.0.0.1:{port}"
    with (
        procs.spawn(args, url, "/-/ready", tmp_path / "bridge.log", env, cwd=tmp_path) as process,
        procs.client(base_url=url, timeout=10) as client,
    ):
        response = Bridge(process, client).post(fixture("event_alert.json"), resource="event_alert")
        assert response.status_code == 202, response.text
        alerts = alertmanager.wait_for(
            lambda a: any(x["labels"].get("sentry_issue_id") == FRONTEND_ISSUE for x in a)
        )
    [alert] = alerts
    assert alert["labels"]["severity"] == "critical"
    # The SQLite store the image uses by default wrote its file in the data dir.
    assert any((tmp_path / "data").iterdir())

"""The container image built from the Dockerfile as written and run the way the Helm chart's
Deployment runs it, until a signed webhook reaches a real Alertmanager (issue 14: the image
built from the Dockerfile exited at once with ``ModuleNotFoundError``, and nothing in the
suite built it).

No registry is reachable, so the base is a Debian bookworm made by debootstrap and passed as
``PYTHON_IMAGE`` (tests/integration/image.py); the Dockerfile itself is built unchanged. The
container gets what the rendered chart gives the pod: its args after the image's entrypoint,
its environment and Secret, the ConfigMap mounted read-only, writable data and tmp volumes,
the pod's user; its root filesystem is checked to be untouched, as the chart makes it
read-only. ``pytest -m image`` selects the test; it takes a few minutes.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from bench.processes import process_tree
from tests.conftest import PostgresTarget
from tests.integration import image, procs
from tests.integration.conftest import Alertmanager, Bridge, fixture
from tests.test_helm import CHART_DIR, WORKING, merged, render

ROOT = procs.ROOT
BASE = "localhost/sentry-bridge-test-base:bookworm"
TAG = "localhost/sentry-alertmanager-bridge:test"
CLIENT_SECRET: str = WORKING["secrets"]["sentryClientSecret"]
FRONTEND_ISSUE = "1117540176"  # event_alert.json


@pytest.mark.parametrize(
    ("sources", "mirror"),
    [
        pytest.param(
            {
                "debian.sources": "Types: deb\nURIs: http://mirror.example/debian-security\n"
                "Suites: bookworm-security\nComponents: main\n\n"
                "Types: deb\n# a comment\nURIs: http://mirror.example/debian\n"
                "Suites: bookworm bookworm-updates\nComponents: main\n"
            },
            "http://mirror.example/debian",
            id="deb822-after-security",
        ),
        pytest.param(
            {"sources.list": "deb [arch=amd64] http://ftp.example/debian bookworm main\n"},
            "http://ftp.example/debian",
            id="one-line",
        ),
        pytest.param(
            {"x.list": "deb https://packages.example/apt cloud-sdk-bookworm main\n"},
            image.FALLBACK_MIRROR,
            id="third-party-only",
        ),
    ],
)
def test_the_mirror_is_the_one_apt_uses(sources: dict[str, str], mirror: str) -> None:
    assert image.apt_mirror(sources) == mirror


def test_the_base_gets_the_hosts_index_settings_not_its_local_paths() -> None:
    listed = (
        ":env:.find-links='/opt/wheels'\n"
        ":env:.cert='/etc/host/ca.pem'\n"
        "global.extra-index-url='file:///opt/pypi/simple https://mirror.example/simple'\n"
        "global.constraint='/etc/xdg/pip/constraints.txt'\n"
        "global.timeout='180'\n"
        ":env:.index-url='https://proxy.example/pypi/simple'\n"
    )
    assert image.pip_conf(listed) == (
        "[global]\n"
        "cert = /etc/ssl/certs/ca-certificates.crt\n"
        "extra-index-url = https://mirror.example/simple\n"
        "index-url = https://proxy.example/pypi/simple\n"
        "timeout = 180\n"
    )


def _chart(
    alertmanager_url: str, port: int, store: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """The rendered Deployment's pod spec and container, and the ConfigMap's config.yaml, for
    an install pointed at the test's Alertmanager, listening on loopback only."""
    values = merged(
        WORKING,
        store,
        {
            "config": {
                "server": {"host": "127.0.0.1", "port": port},
                "alertmanager": {"urls": [alertmanager_url]},
            }
        },
    )
    with helm_python.Chart.load(CHART_DIR) as chart:
        rendered = render(chart, values)
    pod = rendered.pod_spec()
    container = rendered.container() | {"_env": rendered.pod_env()}
    return pod, container, rendered.bridge_yaml()


def _volumes(
    pod: dict[str, Any], container: dict[str, Any], config_yaml: str, base: Path
) -> list[str]:
    """``--volume`` arguments standing in for the pod's volumes: the ConfigMap's file, and
    fresh directories owned by the pod's user for the writable ones (fsGroup's effect)."""
    security = pod["securityContext"]
    kinds = {v["name"]: v for v in pod["volumes"]}
    args: list[str] = []
    for mount in container["volumeMounts"]:
        host = base / mount["name"]
        host.mkdir(parents=True)
        if "configMap" in kinds[mount["name"]]:
            (host / "config.yaml").write_text(config_yaml, encoding="utf-8")
        else:
            os.chown(host, security["runAsUser"], security.get("fsGroup", security["runAsGroup"]))
        suffix = ":ro" if mount.get("readOnly") else ""
        args += ["--volume", f"{host}:{mount['mountPath']}{suffix}"]
    return args


def _container_process(buildah_pid: int) -> int:
    """The first process under ``buildah run`` that is not buildah's own."""
    for pid in process_tree(buildah_pid):
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        if not Path(os.fsdecode(argv0)).name.startswith("buildah"):
            return pid
    raise AssertionError("no process runs in the container")


@dataclass
class Built:
    buildah: image.Buildah
    config: dict[str, Any]  # the image's OCI config: User, Env, Entrypoint, ...


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    """The Dockerfile built unchanged on the debootstrapped base, once for the module."""
    image.require_tools()
    tmp = tmp_path_factory.mktemp("image")
    timings: dict[str, float] = {}
    with image.storage(tmp / "buildah") as buildah:
        began = time.monotonic()
        tarball, cached = image.base_tarball(sys.executable, tmp / "base")
        buildah.import_tarball(tarball, BASE)
        timings["base_cached_s" if cached else "base_debootstrap_s"] = time.monotonic() - began

        began = time.monotonic()
        buildah(
            "bud",
            "--isolation",
            "chroot",
            "--network",
            "host",
            "--pull=never",
            "--format",
            "docker",  # keeps the HEALTHCHECK, which OCI's image format has no field for
            "--build-arg",
            f"PYTHON_IMAGE={BASE}",
            "--tag",
            TAG,
            "--file",
            str(ROOT / "Dockerfile"),
            str(ROOT),
            timeout=1200,
        )
        timings["build_s"] = time.monotonic() - began
        print(yaml.safe_dump({"image build": {k: round(v, 1) for k, v in timings.items()}}))
        yield Built(buildah, buildah.inspect_image(TAG)["OCIv1"]["config"])


def _postgres(request: pytest.FixtureRequest) -> dict[str, Any]:
    pg: PostgresTarget = request.getfixturevalue("pg")
    return {
        "store": {"backend": "postgres", "postgres": {"dsn": pg.dsn}},
        "config": {"store": {"postgres": {"schema": pg.schema}}},
    }


STORES = [
    pytest.param(lambda request: {}, id="sqlite"),
    pytest.param(_postgres, id="postgres"),
]


@pytest.mark.image
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("store", STORES)
def test_the_image_runs_as_the_chart_runs_it(
    built: Built,
    store: Callable[[pytest.FixtureRequest], dict[str, Any]],
    request: pytest.FixtureRequest,
    alertmanager: Alertmanager,
    tmp_path: Path,
) -> None:
    buildah, config = built.buildah, built.config
    port = procs.free_port()
    pod, container, config_yaml = _chart(alertmanager.url, port, store(request))
    security = pod["securityContext"]
    user = f"{security['runAsUser']}:{security['runAsGroup']}"
    # The image and the chart agree: its user is the pod's, its data dir the volume's.
    assert config["User"] == user
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert f"BRIDGE_DATA_DIR={mounts['data']}" in config["Env"]
    assert container["_env"]["BRIDGE_DATA_DIR"] == mounts["data"]

    name = buildah("from", "--pull=never", TAG)
    rootfs = Path(buildah("mount", name))
    untouched = set(mounts.values()) | {"/proc", "/sys", "/dev", "/run"}
    before = image.files(rootfs, untouched)
    assert "/opt/venv/bin/sentry-bridge" in before

    env = [f"--env={key}={value}" for key, value in sorted(container["_env"].items())]
    command = buildah.command(
        "run",
        "--isolation",
        "chroot",
        "--network",
        "host",
        "--user",
        user,
        *_volumes(pod, container, config_yaml, tmp_path / "volumes"),
        *env,
        name,
        "--",
        *config["Entrypoint"],
        *container["args"],
    )
    url = f"http://127.0.0.1:{port}"
    began = time.monotonic()
    with (
        procs.spawn(command, url, "/-/ready", tmp_path / "bridge.log") as process,
        procs.client(base_url=url, timeout=10) as client,
    ):
        started = time.monotonic() - began
        response = Bridge(process, client).post(
            fixture("event_alert.json"), resource="event_alert", secret=CLIENT_SECRET
        )
        assert response.status_code == 202, response.text
        [alert] = alertmanager.wait_for(
            lambda a: any(x["labels"].get("sentry_issue_id") == FRONTEND_ISSUE for x in a)
        )
        assert alert["labels"]["severity"] == "critical"
        # SIGTERM to the container's first process, as the kubelet stops a pod (buildah
        # itself answers SIGTERM by killing what it runs).
        os.kill(_container_process(process.proc.pid), signal.SIGTERM)
        assert process.proc.wait(timeout=60) == 0, process.logs()[-3000:]
    assert "signal received, draining" in process.logs()
    # Each store really served: PostgreSQL's engine opened, or SQLite's file on the volume.
    if request.node.callspec.id == "postgres":
        assert '"backend": "postgres"' in process.logs()
    else:
        assert (tmp_path / "volumes" / "data" / "store.sqlite3").exists()

    if container["securityContext"].get("readOnlyRootFilesystem"):
        after = image.files(rootfs, untouched)
        written = {path for path in after if after[path] != before.get(path)}
        assert sorted(written) == [], "the chart's root filesystem is read-only"
    buildah("umount", name)
    buildah("rm", name)
    print(yaml.safe_dump({"image start": {request.node.callspec.id: round(started, 1)}}))

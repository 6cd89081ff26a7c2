"""deploy/controller.yaml and the Dockerfile agree with the program they run: the container's
args parse with the CLI, every listen address has its containerPort (and the reverse), the
probes ask routes the verdict API serves, and the image's entrypoint is the console script."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from starlette.routing import Route

from canary_stream.api.app import create_app
from canary_stream.api.config import ApiConfig
from canary_stream.cli import build_parser
from canary_stream.registry import Registry

ROOT = Path(__file__).resolve().parent.parent


def controller_container() -> dict[str, Any]:
    docs = list(yaml.safe_load_all((ROOT / "deploy" / "controller.yaml").read_text()))
    deployment = next(d for d in docs if d and d["kind"] == "Deployment")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def test_the_container_args_parse_with_the_cli() -> None:
    args = build_parser().parse_args(controller_container()["args"])
    assert args.command == "controller"


def test_every_listen_address_has_its_container_port_and_back() -> None:
    c = controller_container()
    listened = {int(m.group(1)) for a in c["args"] if (m := re.fullmatch(r"--\w+=0\.0\.0\.0:(\d+)", a))}
    assert listened == {int(p["containerPort"]) for p in c["ports"]}


def test_the_probes_ask_routes_the_api_serves() -> None:
    c = controller_container()
    ports = {p["name"]: int(p["containerPort"]) for p in c["ports"]}
    api_port = next(int(a.rsplit(":", 1)[1]) for a in c["args"] if a.startswith("--api="))
    app = create_app(Registry(), ApiConfig(auth="none"))
    paths = {r.path for r in app.routes if isinstance(r, Route)}
    for probe in ("readinessProbe", "livenessProbe"):
        get = c[probe]["httpGet"]
        assert get["path"] in paths, probe
        assert ports[get["port"]] == api_port, probe


def test_the_image_runs_the_console_script_the_package_installs() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    entry = re.search(r'^ENTRYPOINT \["([^"]+)"\]', dockerfile, re.M)
    assert entry is not None
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(rf'^{re.escape(entry.group(1))} = "canary_stream\.cli:main"$', pyproject, re.M)
    image = controller_container()["image"]
    assert image.rsplit(":", 1)[0] in dockerfile  # the label names the image the manifest runs

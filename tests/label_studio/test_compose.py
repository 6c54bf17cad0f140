"""docker-compose.yml is valid and wired as documented (no Docker engine here: ``docker-compose config``)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = shutil.which("docker-compose")

pytestmark = pytest.mark.skipif(
    COMPOSE is None, reason="docker-compose is not installed (scripts/install.sh installs it)"
)


def resolved(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SIMAGES_", "LABEL_STUDIO_"))}
    out = subprocess.run(
        [COMPOSE, "-f", str(REPO / "docker-compose.yml"), "config"],
        env={**clean, **env}, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return yaml.safe_load(out.stdout)


def test_three_services_with_health_checks_and_volumes():
    config = resolved()
    services = config["services"]
    assert set(services) == {"simages-server", "label-studio", "ml-backend"}
    for name, service in services.items():
        assert service["healthcheck"]["test"][0] == "CMD", name
    assert services["ml-backend"]["depends_on"] == {
        "simages-server": {"condition": "service_healthy"},
        "label-studio": {"condition": "service_healthy"},
    }
    assert {"simages-data", "label-studio-data", "ml-backend-cache"} <= set(config["volumes"])
    ls_env = services["label-studio"]["environment"]
    assert ls_env["ML_BLOCK_LOCAL_IP"] == "false" and ls_env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    # The backend's Label Studio key is the scripted admin's token.
    assert services["ml-backend"]["environment"]["LABEL_STUDIO_API_KEY"] == ls_env["LABEL_STUDIO_USER_TOKEN"]


def test_local_server_is_the_default_api_and_one_variable_switches_to_the_public_one():
    default = resolved()["services"]["ml-backend"]["environment"]
    assert default["SIMAGES_API_URL"] == "http://simages-server:8765"
    assert (
        default["SIMAGES_API_KEY"]
        == resolved()["services"]["simages-server"]["environment"]["SIMAGES_SERVER_API_KEYS"]
    )
    public = resolved(SIMAGES_API_URL="https://simages.info", SIMAGES_API_KEY="my-key")
    assert public["services"]["ml-backend"]["environment"]["SIMAGES_API_URL"] == "https://simages.info"
    assert public["services"]["ml-backend"]["environment"]["SIMAGES_API_KEY"] == "my-key"


@pytest.mark.parametrize("service", ["simages-server", "ml-backend"])
def test_built_images_copy_only_what_exists(service):
    build = resolved()["services"][service]["build"]
    dockerfile = Path(build["context"]) / build["dockerfile"]
    text = dockerfile.read_text()
    assert text.startswith("#") and "FROM python:3.11-slim" in text
    for source in re.findall(r"^COPY (.+) \S+$", text, flags=re.M):
        for path in source.split():
            assert (REPO / path).exists(), f"{dockerfile.name} copies {path}, which is missing"
    assert "USER simages" in text  # never run as root

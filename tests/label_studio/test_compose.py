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


# What a user puts in .env (from .env.example); compose has no default for any credential.
CREDENTIALS = {
    "LABEL_STUDIO_USERNAME": "annotator@example.org",
    "LABEL_STUDIO_PASSWORD": "a-long-test-password",
    "LABEL_STUDIO_API_KEY": "0123456789abcdef0123456789abcdef01234567",
    "SIMAGES_LOCAL_API_KEY": "local-compose-key",
    "SIMAGES_API_KEY": "local-compose-key",
}


def compose_config(env_file: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SIMAGES_", "LABEL_STUDIO_"))}
    return subprocess.run(
        [COMPOSE, "-f", str(REPO / "docker-compose.yml"), "--env-file", str(env_file), "config"],
        env={**clean, **env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def resolved(tmp_path: Path, credentials: dict[str, str] = CREDENTIALS, **env: str) -> dict:
    env_file = tmp_path / "compose.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in credentials.items()))
    out = compose_config(env_file, **env)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def test_four_services_with_health_checks_and_volumes(tmp_path):
    config = resolved(tmp_path)
    services = config["services"]
    assert set(services) == {"simages-server", "label-studio", "ml-backend", "redis"}
    for name, service in services.items():
        assert service["healthcheck"]["test"][0] == "CMD", name
    assert services["ml-backend"]["depends_on"] == {
        "simages-server": {"condition": "service_healthy"},
        "label-studio": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }
    assert services["simages-server"]["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert {"simages-data", "label-studio-data", "ml-backend-cache", "redis-data"} <= set(config["volumes"])
    ls_env = services["label-studio"]["environment"]
    assert ls_env["ML_BLOCK_LOCAL_IP"] == "false" and ls_env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    # The backend's Label Studio key is the scripted admin's token.
    assert services["ml-backend"]["environment"]["LABEL_STUDIO_API_KEY"] == ls_env["LABEL_STUDIO_USER_TOKEN"]


def test_local_server_is_the_default_api_and_one_variable_switches_to_the_public_one(tmp_path):
    default = resolved(tmp_path)["services"]["ml-backend"]["environment"]
    assert default["SIMAGES_API_URL"] == "http://simages-server:8765"
    assert (
        default["SIMAGES_API_KEY"]
        == resolved(tmp_path)["services"]["simages-server"]["environment"]["SIMAGES_SERVER_API_KEYS"]
    )
    public = resolved(tmp_path, SIMAGES_API_URL="https://simages.info", SIMAGES_API_KEY="my-key")
    assert public["services"]["ml-backend"]["environment"]["SIMAGES_API_URL"] == "https://simages.info"
    assert public["services"]["ml-backend"]["environment"]["SIMAGES_API_KEY"] == "my-key"


@pytest.mark.parametrize("service", ["simages-server", "ml-backend"])
def test_built_images_copy_only_what_exists(service, tmp_path):
    build = resolved(tmp_path)["services"][service]["build"]
    dockerfile = Path(build["context"]) / build["dockerfile"]
    text = dockerfile.read_text()
    assert text.startswith("#") and "FROM python:3.11-slim" in text
    for source in re.findall(r"^COPY (.+) \S+$", text, flags=re.M):
        for path in source.split():
            assert (REPO / path).exists(), f"{dockerfile.name} copies {path}, which is missing"
    assert "USER simages" in text  # never run as root


def test_redis_is_shared_state_for_server_and_backend_replicas(tmp_path):
    services = resolved(tmp_path)["services"]
    redis = services["redis"]
    assert redis["image"].startswith("redis:7")
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert "--appendonly" in redis["command"]  # quota counters survive a restart
    assert any(str(v).startswith("redis-data:/data") for v in redis["volumes"])
    # The server keeps its daily quota there (db 0), the backend its cache and ledger (db 1).
    server_args = services["simages-server"]["environment"]["SIMAGES_SERVER_ARGS"].split()
    assert server_args[server_args.index("--state") + 1] == "redis://redis:6379/0"
    backend = services["ml-backend"]
    assert backend["environment"]["SIMAGES_CACHE_URL"] == "redis://redis:6379/1"
    assert backend["deploy"]["replicas"] >= 2
    assert "container_name" not in backend  # a fixed name would forbid a second replica


def test_ports_are_published_on_loopback_only(tmp_path):
    services = resolved(tmp_path)["services"]
    # Redis is for the compose network only; backend replicas cannot share a fixed host port.
    assert not services["redis"].get("ports") and not services["ml-backend"].get("ports")
    for name, service in services.items():
        if name in ("redis", "ml-backend"):
            continue
        assert service["ports"], name
        for port in service["ports"]:
            # compose v1 prints "HOST_IP:PUBLISHED:TARGET"; v2 prints a mapping with host_ip.
            host_ip = port["host_ip"] if isinstance(port, dict) else port.split(":")[0]
            assert host_ip == "127.0.0.1", (name, port)


@pytest.mark.parametrize("missing", sorted(CREDENTIALS))
def test_every_credential_comes_from_the_env_file_with_no_default(missing, tmp_path):
    env_file = tmp_path / "compose.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in CREDENTIALS.items() if k != missing))
    out = compose_config(env_file)
    assert out.returncode != 0
    assert f"set {missing} in .env" in out.stderr


def test_env_example_names_every_credential():
    example = (REPO / ".env.example").read_text()
    for name in CREDENTIALS:
        assert re.search(rf"^{name}=$", example, flags=re.M), name  # listed, and empty: no shared default


def test_label_studio_sends_no_usage_data_off_the_machine(tmp_path):
    environment = resolved(tmp_path)["services"]["label-studio"]["environment"]
    assert environment["COLLECT_ANALYTICS"] == "false"
    assert environment["LATEST_VERSION_CHECK"] == "false"


def test_the_backend_container_listens_on_every_interface(tmp_path):
    # The CLI defaults to loopback outside a container; the image must ask for 0.0.0.0 itself.
    dockerfile = (REPO / "label_studio_backend" / "Dockerfile").read_text()
    assert 'CMD ["simages-ls", "serve", "--host", "0.0.0.0", "--port", "9090"]' in dockerfile
    assert "command" not in resolved(tmp_path)["services"]["ml-backend"]  # the image's CMD stands

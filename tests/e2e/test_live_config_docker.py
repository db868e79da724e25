"""`planoai up --docker` on a running container: the same live re-apply as
natively (the config directory is mounted, so the container sees the files
renamed in). Needs Docker, like test_docker.py."""

import subprocess

from conftest import planoai
from test_live_config import live_reapply_drops_nothing


def container_id():
    return subprocess.run(["docker", "ps", "-q", "--filter", "name=plano-gateway"],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_docker_reapply_with_streams_and_load_in_flight_drops_nothing(plano_home, providers, tmp_path):
    try:
        live_reapply_drops_nothing(providers, tmp_path, docker=True, container=container_id)
    finally:
        down = planoai("down", "--docker")
    assert down.stdout.strip() == "gateway stopped"
    assert container_id() == ""

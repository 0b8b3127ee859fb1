"""The docker-compose example (examples/docker-compose/), checked statically: Docker does not run
here. Every path it names exists, the Envoy clusters reach the compose services on the ports
those services listen on, the filter and its configuration are the shipped ones, Envoy accepts
the config (`envoy --mode validate`), and the sidecar's Dockerfile copies the whole workspace.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from harness import paths, policy

EXAMPLE = paths.REPO / "examples" / "docker-compose"
COMPOSE_YAML = EXAMPLE / "compose.yaml"
EXAMPLE_ENVOY_YAML = EXAMPLE / "envoy.yaml"
DOCKERFILE = EXAMPLE / "Dockerfile"
# BuildKit reads `<Dockerfile>.dockerignore` beside the Dockerfile instead of the context's.
DOCKERIGNORE = EXAMPLE / "Dockerfile.dockerignore"
SIDECAR, DEMO_API, ENVOY = "tollgate-sidecar", "demo-api", "envoy"


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_YAML.read_text())


def envoy_config(path: Path | None = None) -> dict[str, Any]:
    """The example's envoy.yaml (or the Envoy config at `path`), parsed."""
    return yaml.safe_load((path or EXAMPLE_ENVOY_YAML).read_text())


def wasm_configs(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The `config` of every envoy.filters.http.wasm in every listener."""
    found = []
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                for http_filter in network_filter["typed_config"].get("http_filters", []):
                    if http_filter["name"] == "envoy.filters.http.wasm":
                        found.append(http_filter["typed_config"]["config"])
    return found


def the_wasm_config(config: dict[str, Any]) -> dict[str, Any]:
    found = wasm_configs(config)
    assert len(found) == 1, f"want exactly one Tollgate wasm filter, found {len(found)}"
    return found[0]


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each bind mount, short (`src:dst[:ro]`) or long syntax."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
            if source.startswith((".", "/", "~")):
                mounts.append((source, target))
        elif volume.get("type") == "bind":
            mounts.append((volume["source"], volume["target"]))
    return mounts


def port_of(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def container_listens_on(name: str, service: dict[str, Any]) -> tuple[str, int]:
    """(host, port) the service's process binds inside its container, from its own settings."""
    environment = service.get("environment", {})
    if name == SIDECAR:
        return port_of(environment["TOLLGATE_LISTEN"])
    if name == DEMO_API:
        # examples/demo-api/server.py [PORT], host from DEMO_API_HOST (default 127.0.0.1).
        command = service["command"]
        command = shlex.split(command) if isinstance(command, str) else command
        script = [i for i, arg in enumerate(command) if arg.endswith("server.py")]
        assert script, f"demo-api does not run server.py: {command}"
        rest = command[script[0] + 1 :]
        port = int(rest[0]) if rest else int(environment.get("DEMO_API_PORT", 8000))
        return environment.get("DEMO_API_HOST", "127.0.0.1"), port
    raise AssertionError(f"no rule for the port of service {name!r}")


def cluster_endpoints(config: dict[str, Any]) -> dict[str, list[tuple[str, int]]]:
    clusters = {}
    for cluster in config["static_resources"]["clusters"]:
        addresses = []
        for group in cluster["load_assignment"]["endpoints"]:
            for endpoint in group["lb_endpoints"]:
                socket = endpoint["endpoint"]["address"]["socket_address"]
                addresses.append((socket["address"], int(socket["port_value"])))
        clusters[cluster["name"]] = addresses
    return clusters


def test_compose_paths_exist():
    services = compose()["services"]
    assert {ENVOY, SIDECAR, DEMO_API, "redis", "postgres"} <= set(services), sorted(services)
    checked = 0
    for name, service in services.items():
        build = service.get("build")
        if build is not None:
            context = EXAMPLE / (build if isinstance(build, str) else build.get("context", "."))
            assert context.is_dir(), f"{name}: build context {context} is not a folder"
            dockerfile = context / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")
            assert dockerfile.is_file(), f"{name}: Dockerfile {dockerfile} is missing"
            checked += 1
        for source, _ in bind_mounts(service):
            path = (EXAMPLE / source).resolve()
            if path == paths.FILTER_WASM:
                paths.wasm(path)  # a build product: fails naming the command that builds it
            assert path.exists(), f"{name}: volume source {source} ({path}) does not exist"
            checked += 1
        declared = compose().get("volumes") or {}
        for volume in service.get("volumes", []):
            if isinstance(volume, str) and not volume.startswith((".", "/", "~")):
                assert volume.split(":")[0] in declared, f"{name}: named volume {volume} is not declared"
    assert checked >= 4, "expected the sidecar's build and the envoy and demo-api mounts"


def test_envoy_clusters_reach_the_compose_services():
    services = compose()["services"]
    clusters = cluster_endpoints(envoy_config())
    sidecar_cluster = policy.shared()["sidecar"]["cluster"]
    routed = {
        route["route"]["cluster"]
        for listener in envoy_config()["static_resources"]["listeners"]
        for chain in listener["filter_chains"]
        for f in chain["filters"]
        for host in f["typed_config"]["route_config"]["virtual_hosts"]
        for route in host["routes"]
        if "route" in route
    }
    assert {sidecar_cluster, *routed} <= set(clusters), f"clusters {sorted(clusters)}, needed {sidecar_cluster} {routed}"
    for cluster, endpoints in clusters.items():
        for host, port in endpoints:
            assert host in services, f"cluster {cluster}: {host} is not a compose service ({sorted(services)})"
            listen_host, listen_port = container_listens_on(host, services[host])
            assert port == listen_port, f"cluster {cluster}: port {port}, but {host} listens on {listen_port}"
            assert listen_host == "0.0.0.0", f"{host} listens on {listen_host}: unreachable from the envoy container"
    kinds = {c["name"]: c["type"] for c in envoy_config()["static_resources"]["clusters"]}
    assert set(kinds.values()) == {"STRICT_DNS"}, f"service names need DNS clusters: {kinds}"


def test_envoy_ports_are_published():
    config = envoy_config()
    inside = {config["admin"]["address"]["socket_address"]["port_value"]}
    for listener in config["static_resources"]["listeners"]:
        socket = listener["address"]["socket_address"]
        assert socket["address"] == "0.0.0.0", f"listener {listener['name']} on {socket['address']}: unreachable"
        inside.add(socket["port_value"])
    published = {int(str(p).rsplit(":", 1)[1]) for p in compose()["services"][ENVOY]["ports"]}
    assert inside == published, f"Envoy listens on {sorted(inside)}, compose publishes {sorted(published)}"


def test_envoy_mounts_the_filter_and_its_config():
    service = compose()["services"][ENVOY]
    mounts = {target: (EXAMPLE / source).resolve() for source, target in bind_mounts(service)}
    filename = the_wasm_config(envoy_config())["vm_config"]["code"]["local"]["filename"]
    assert filename in mounts, f"envoy.yaml loads {filename}, compose mounts {sorted(mounts)}"
    assert mounts[filename] == paths.FILTER_WASM, f"{filename} is mounted from {mounts[filename]}"
    command = service["command"]
    config_path = command[command.index("-c") + 1]
    assert mounts.get(config_path) == EXAMPLE_ENVOY_YAML, f"-c {config_path}, mounts {mounts}"
    assert re.fullmatch(r"envoyproxy/envoy:v\d+\.\d+\.\d+", service["image"]), service["image"]


def test_example_filter_configuration_is_the_shared_fixture():
    # The fixture plus the node token the compose sidecar accepts: a sidecar listening beyond
    # loopback refuses to start without node and admin tokens.
    embedded = json.loads(the_wasm_config(envoy_config())["configuration"]["value"])
    token = embedded["sidecar"].pop("token")
    assert embedded == policy.shared(), "the example's plugin configuration drifted from the shared fixture"
    environment = compose()["services"]["tollgate-sidecar"]["environment"]
    assert token in environment["TOLLGATE_NODE_TOKEN"].split(","), "the sidecar would refuse the filter's node token"
    assert environment["TOLLGATE_ADMIN_TOKEN"], "a sidecar listening beyond loopback needs an admin token"


def test_example_http_filters_match_the_shipped_config():
    """Apart from the wasm path, addresses and the node token, the example's listener is
    envoy/envoy.yaml's."""

    def chains(config: dict[str, Any]) -> Any:
        config = copy.deepcopy(config)
        wasm = the_wasm_config(config)
        wasm["vm_config"]["code"]["local"]["filename"] = "<wasm>"
        filter_config = json.loads(wasm["configuration"]["value"])
        filter_config["sidecar"].pop("token", None)  # the example's node token
        wasm["configuration"]["value"] = filter_config
        return [listener["filter_chains"] for listener in config["static_resources"]["listeners"]]

    assert chains(envoy_config()) == chains(envoy_config(paths.ENVOY_YAML))


def test_example_envoy_yaml_validates(envoy_bin, filter_wasm, tmp_path):
    # Validate mode loads the wasm, so the copy names the built one. It does not need the
    # STRICT_DNS names (tollgate-sidecar, demo-api) to resolve: they stay as they are.
    text = EXAMPLE_ENVOY_YAML.read_text()
    filename = the_wasm_config(envoy_config())["vm_config"]["code"]["local"]["filename"]
    assert text.count(f"filename: {filename}\n") == 1
    copy_path = tmp_path / "envoy.yaml"
    copy_path.write_text(text.replace(f"filename: {filename}\n", f"filename: {filter_wasm}\n"))
    proc = subprocess.run(
        [str(envoy_bin), "--mode", "validate", "-c", str(copy_path), "-l", "warn"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert f"configuration '{copy_path}' OK" in output, output


def dockerfile_copies() -> list[str]:
    """Sources of the Dockerfile's COPY lines that read the build context (not --from)."""
    sources = []
    for line in DOCKERFILE.read_text().splitlines():
        words = line.split()
        if not words or words[0].upper() != "COPY" or any(w.startswith("--from") for w in words):
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        sources.extend(args[:-1])
    return sources


def test_dockerfile_copies_the_workspace():
    build = compose()["services"][SIDECAR]["build"]
    context = (EXAMPLE / build["context"]).resolve()
    assert (context / build["dockerfile"]).resolve() == DOCKERFILE
    sources = [PurePosixPath(s.rstrip("/")) for s in dockerfile_copies()]
    assert sources, "the Dockerfile copies nothing from the context"
    for source in sources:
        assert (context / source).exists(), f"COPY {source}: not in the build context {context}"
    workspace = tomllib.loads((context / "Cargo.toml").read_text())["workspace"]
    needed = [PurePosixPath("Cargo.toml"), PurePosixPath("Cargo.lock")]
    needed += [PurePosixPath(member) for member in workspace["members"]]
    for path in needed:
        assert any(path == s or s in path.parents for s in sources), f"the Dockerfile does not COPY {path}"
    text = DOCKERFILE.read_text()
    package = tomllib.loads((paths.REPO / "sidecar" / "Cargo.toml").read_text())["package"]["name"]
    assert re.search(rf"cargo build --release .*-p {package}\b", text), "no `cargo build --release -p` of the sidecar"
    stages = re.split(r"^FROM ", text, flags=re.M)
    runtime = stages[-1]
    user = re.search(r"^USER (\S+)", runtime, re.M)
    assert user and user.group(1) not in ("root", "0"), "the runtime stage runs as root"
    expose = re.search(r"^EXPOSE (\d+)", runtime, re.M)
    listen = compose()["services"][SIDECAR]["environment"]["TOLLGATE_LISTEN"]
    assert expose and int(expose.group(1)) == port_of(listen)[1], f"EXPOSE {expose} vs TOLLGATE_LISTEN {listen}"


def test_dockerignore_keeps_what_the_build_copies():
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert patterns[0] == "*", "the ignore file is an allow-list: it starts by excluding everything"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for source in dockerfile_copies():
        assert source.rstrip("/") in allowed, f"COPY {source}, which the ignore file leaves out of the context"
    for heavy in ("target", ".venv", ".tollgate"):
        assert f"**/{heavy}/" in patterns, f"{heavy}/ is not excluded everywhere"

"""The files in deploy/: they parse, and they agree with the code and the pins they deploy.

Nothing here builds an image or starts a cluster. The checks catch drift: a torch pin changed in
pyproject.toml but not in the Dockerfile, a Ray version that differs between files, a RayJob
entrypoint or a README command using an option the CLI does not have.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from packaging.requirements import Requirement
from typer.testing import CliRunner

from orchestrator import cli
from orchestrator.config import ResourceSettings, load_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
YAML_FILES = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
README = DEPLOY / "README.md"

runner = CliRunner()


def load_yaml(relative: str) -> Any:
    return yaml.safe_load((DEPLOY / relative).read_text())


def pyproject_requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = (Requirement(line) for line in project["dependencies"])
    return {r.name: r for r in requirements}


def requirements_allow(name: str, version: str) -> bool:
    return pyproject_requirements()[name].specifier.contains(version)


def dockerfile_ray_version() -> str:
    match = re.search(r"^ARG RAY_VERSION=(\S+)$", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert match, "deploy/Dockerfile has no `ARG RAY_VERSION=...` line"
    return match.group(1)


def raycluster_containers() -> dict[str, dict[str, Any]]:
    """The RayCluster's containers by name: head, worker and init containers."""
    spec = load_yaml("kuberay/raycluster.yaml")["spec"]
    pods = [spec["headGroupSpec"]["template"]["spec"]]
    pods += [group["template"]["spec"] for group in spec["workerGroupSpecs"]]
    containers = [c for pod in pods for c in (*pod["containers"], *pod.get("initContainers", []))]
    return {c["name"]: c for c in containers}


@cache
def cli_root() -> Any:
    return typer.main.get_command(cli.app)


def option_names(command: Any) -> set[str]:
    names = {"--help"}
    for parameter in command.params:
        names.update(parameter.opts)
        names.update(parameter.secondary_opts)
    return {name for name in names if name.startswith("-")}


def all_option_names() -> set[str]:
    found: set[str] = set()
    pending = [cli_root()]
    while pending:
        command = pending.pop()
        found |= option_names(command)
        pending.extend(getattr(command, "commands", {}).values())
    return found


def resolve_command(tokens: list[str]) -> tuple[list[str], Any, list[str]]:
    """Split the words after `llpf` into (command path, command, its arguments)."""
    command, path, rest = cli_root(), [], list(tokens)
    while hasattr(command, "commands") and rest:
        word = rest.pop(0)
        if word.startswith("-"):  # an option of the group itself, like --verbose
            assert word.split("=")[0] in option_names(command), f"llpf has no option {word}"
            continue
        assert word in command.commands, f"`llpf {' '.join([*path, word])}` is not a command"
        path.append(word)
        command = command.commands[word]
    return path, command, rest


def llpf_invocations(text: str) -> list[list[str]]:
    """The words after each `llpf` in a shell line, up to the end of that command."""
    try:
        words = shlex.split(text, comments=True)
    except ValueError:  # an unbalanced quote in prose
        words = text.split()
    found = []
    for start, word in enumerate(words):
        if word != "llpf":
            continue
        command = []
        for following in words[start + 1 :]:
            if following in {"|", "||", "&&", ";"} or following.startswith((">", "2>")):
                break
            command.append(following)
        found.append(command)
    return found


def readme_texts() -> tuple[list[str], list[str]]:
    """(shell lines of the fenced blocks, with continuations joined; inline code spans)."""
    readme = README.read_text()
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", readme, re.S | re.M)
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    prose = re.sub(r"^```.*?^```", "", readme, flags=re.S | re.M)
    spans = re.findall(r"`([^`\n]+)`", prose)
    return lines, spans


def readme_invocations() -> list[list[str]]:
    """Each distinct `llpf ...` command of the README, in order of appearance."""
    lines, spans = readme_texts()
    invocations = [inv for text in [*lines, *spans] for inv in llpf_invocations(text)]
    # a bare `llpf` names the tool, not a command
    distinct = dict.fromkeys(tuple(inv) for inv in invocations if inv)
    return [list(inv) for inv in distinct]


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses(path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]

    assert documents and all(isinstance(d, dict) for d in documents)


def test_the_deployment_files_are_all_there() -> None:
    names = {str(p.relative_to(DEPLOY)) for p in YAML_FILES}

    assert {
        "cluster.yaml",
        "kuberay/raycluster.yaml",
        "kuberay/rayjob.yaml",
        "postgres/docker-compose.yaml",
    } <= names
    assert (DEPLOY / "Dockerfile").is_file() and (DEPLOY / "postgres" / "init.sql").is_file()


def test_the_dockerfile_installs_pyprojects_torch_pins() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    requirements = pyproject_requirements()

    for name in ("torch", "torchvision"):
        (pin,) = requirements[name].specifier
        assert pin.operator == "==", f"pyproject no longer pins {name} exactly"
        assert f"{name}=={pin.version}" in dockerfile, f"deploy/Dockerfile does not pin {name}"


def test_one_ray_version_that_pyproject_allows_is_used_everywhere() -> None:
    version = dockerfile_ray_version()
    dockerfile = (DEPLOY / "Dockerfile").read_text()

    assert requirements_allow("ray", version)
    assert "FROM rayproject/ray:${RAY_VERSION}-py311-gpu" in dockerfile
    assert load_yaml("kuberay/raycluster.yaml")["spec"]["rayVersion"] == version


def test_every_node_runs_the_same_image() -> None:
    images = {name: c["image"] for name, c in raycluster_containers().items()}
    images["cluster.yaml"] = load_yaml("cluster.yaml")["docker"]["image"]

    assert len(set(images.values())) == 1, images


def test_the_launcher_config_is_valid_for_ray() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = load_yaml("cluster.yaml")

    jsonschema.validate(config, schema)
    head = config["available_node_types"][config["head_node_type"]]
    workers = [t for name, t in config["available_node_types"].items() if name != "head"]
    assert head["resources"] == {"CPU": 0}  # stages run on the GPU workers only
    # `llpf run` fails at start unless a live node can run a stage; keep one GPU node up
    assert all(t["min_workers"] >= 1 for t in workers)
    assert "--dashboard-port=8265" in " ".join(config["head_start_ray_commands"])


def test_the_raycluster_gives_workers_gpus_and_the_head_the_database_secret() -> None:
    containers = raycluster_containers()
    head, worker = containers["ray-head"], containers["ray-worker"]

    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {p["containerPort"] for p in head["ports"]} >= {6379, 8265}
    (database,) = [e for e in head["env"] if e["name"] == "LLPF_DB_URL"]
    assert database["valueFrom"]["secretKeyRef"] == {"name": "llpf-db", "key": "url"}


def test_the_rayjob_runs_llpf_run_on_the_raycluster() -> None:
    job = load_yaml("kuberay/rayjob.yaml")
    cluster = load_yaml("kuberay/raycluster.yaml")
    words = shlex.split(job["spec"]["entrypoint"])

    assert words[:2] == ["llpf", "run"] and words[2].isdigit()
    assert "--address" in words and words[words.index("--address") + 1] == "auto"
    path, command, arguments = resolve_command(words[1:])
    assert path == ["run"]
    assert {w for w in arguments if w.startswith("--")} <= option_names(command)
    # the submitter's shell would expand a variable, and `ray job submit` quotes it again
    assert "$" not in job["spec"]["entrypoint"]
    if "--db" not in words:  # then `llpf run` must find the URL in LLPF_DB_URL
        (db,) = [p for p in command.params if "--db" in p.opts]
        assert db.envvar == "LLPF_DB_URL"
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}


def test_postgres_compose_has_postgres_16_a_volume_and_a_healthcheck() -> None:
    service = load_yaml("postgres/docker-compose.yaml")["services"]["postgres"]

    assert service["image"] == "postgres:16"
    assert any(v.endswith(":/var/lib/postgresql/data") for v in service["volumes"])
    assert service["healthcheck"]["test"]
    init = (DEPLOY / "postgres" / "init.sql").read_text()
    assert "CREATE ROLE llpf LOGIN" in init and "CREATE DATABASE llpf OWNER llpf" in init


def test_the_example_experiment_is_a_valid_configuration() -> None:
    config = load_config(DEPLOY / "experiment.example.yaml", {})

    assert config.resources.num_gpus > 0 and config.resources.max_pairs_in_flight


@pytest.mark.parametrize("words", readme_invocations(), ids=lambda w: " ".join(w[:3]))
def test_every_llpf_command_in_the_readme_exists(words: list[str]) -> None:
    path, command, arguments = resolve_command(words)

    result = runner.invoke(cli.app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    unknown = {w.split("=")[0] for w in arguments if w.startswith("--")} - option_names(command)
    assert not unknown, f"`llpf {' '.join(path)}` has no option {', '.join(sorted(unknown))}"


def test_every_option_the_readme_mentions_alone_exists() -> None:
    _, spans = readme_texts()
    mentioned = {span.split()[0].split("=")[0] for span in spans if span.startswith("--")}

    assert mentioned, "the README mentions no options"
    assert mentioned <= all_option_names(), mentioned - all_option_names()


def test_every_resources_field_the_readme_mentions_exists() -> None:
    _, spans = readme_texts()
    fields = {m for span in spans for m in re.findall(r"^resources\.(\w+)$", span)}
    fields |= {span for span in spans if span == "max_pairs_in_flight"}

    assert fields <= set(ResourceSettings.model_fields)

"""docker-compose.yaml, checked without a Docker engine: the services and images it needs, the mounts
the DAGs rely on, every ``${VAR}`` it reads defined in .env.example (with placeholders, never secrets),
and every ``dynamo …`` command it runs present in the package's CLI (walked through click)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
import yaml

from dynamo_pipeline.cli import main

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
SERVICES = COMPOSE["services"]
AIRFLOW_COMPONENTS = {"airflow-api-server": "api-server", "airflow-scheduler": "scheduler",
                      "airflow-dag-processor": "dag-processor", "airflow-triggerer": "triggerer"}


def _env_example() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    return dict(ln.split("=", 1) for ln in lines if ln.strip() and not ln.startswith("#"))


def _dynamo_commands() -> list[tuple[str, list[str]]]:
    """(service, argv after `dynamo`) for every dynamo invocation in the file."""
    found = []
    for name, svc in SERVICES.items():
        cmd = svc.get("command") or []
        cmd = [cmd] if isinstance(cmd, str) else cmd
        if svc.get("entrypoint") == ["dynamo"]:
            found.append((name, [str(c) for c in cmd]))
            continue
        for part in cmd:
            for seg in re.split(r"&&|;|\|\|", str(part)):
                words = shlex.split(seg)
                if words and words[0] == "dynamo":
                    found.append((name, words[1:]))
    return found


def _resolve(argv: list[str]) -> click.Command:
    """Walk argv through the click groups; fail on an unknown command or option."""
    cmd: click.Command = main
    it = iter(argv)
    for tok in it:
        if tok.startswith("-"):
            opt = next((p for p in cmd.params if isinstance(p, click.Option) and tok.split("=")[0] in p.opts), None)
            assert opt is not None, f"`{cmd.name}` has no option {tok}"
            if not opt.is_flag and "=" not in tok:
                next(it, None)
        elif isinstance(cmd, click.Group):
            sub = cmd.get_command(click.Context(cmd), tok)
            assert sub is not None, f"`dynamo` has no command {tok!r} under `{cmd.name}`"
            cmd = sub
        # else: a positional argument of the leaf command
    assert not isinstance(cmd, click.Group), f"{argv} names a group, not a command"
    return cmd


def _params():
    out = []
    for svc, argv in _dynamo_commands():
        out.append(pytest.param(argv, id=f"{svc}:{' '.join(argv[:2])}"))
    return out


def test_compose_has_postgres_the_four_airflow_components_and_agents():
    assert {"postgres", "agent", *AIRFLOW_COMPONENTS} <= set(SERVICES)
    assert SERVICES["postgres"]["image"].startswith("postgres:")
    for svc, sub in AIRFLOW_COMPONENTS.items():
        assert SERVICES[svc]["command"] == [sub]
        assert SERVICES[svc]["build"]["dockerfile"] == "docker/Dockerfile"
    assert re.search(r"^FROM apache/airflow:3\.3\.\d+", (ROOT / "docker/Dockerfile").read_text(), re.M)
    assert "--backend" in SERVICES["agent"]["command"] and "sim" in SERVICES["agent"]["command"]


def test_airflow_mounts_the_dags_and_sql_where_its_settings_point():
    for svc in AIRFLOW_COMPONENTS:
        s = SERVICES[svc]
        mounts = {v.split(":")[1]: v.split(":")[0] for v in s["volumes"]}
        assert mounts[s["environment"]["AIRFLOW__CORE__DAGS_FOLDER"]] == "./dags"
        assert mounts["/opt/dynamo/sql"] == "./sql"
        env = s["environment"]
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg://")
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"].startswith("postgresql+psycopg://")
        assert "AIRFLOW_CONN_DYNAMO_DB" in env  # the store reaches the DAGs through an Airflow connection
    assert set(COMPOSE["volumes"]) >= {"pgdata", "dynamo-var"}


def test_every_variable_comes_from_env_example_and_no_secret_is_committed():
    text = (ROOT / "docker-compose.yaml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{(\w+)", text))
    example = _env_example()
    assert used <= set(example), f"missing from .env.example: {sorted(used - set(example))}"
    for k, v in example.items():
        if re.search(r"PASSWORD|SECRET|FERNET", k):
            assert v == "change-me", f".env.example must hold a placeholder for {k}"
    for name, svc in SERVICES.items():
        for k, v in (svc.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|FERNET", k):
                assert str(v).startswith("${"), f"{name}: {k} is a literal in docker-compose.yaml; read it from .env"
    assert ".env" in (ROOT / ".gitignore").read_text().split()


@pytest.mark.parametrize("argv", _params())
def test_every_dynamo_command_in_compose_exists_in_the_cli(argv):
    _resolve(argv)


def test_resolver_rejects_unknown_commands_and_options():
    with pytest.raises(AssertionError, match="no command 'nope'"):
        _resolve(["nope"])
    with pytest.raises(AssertionError, match="no option --bogus"):
        _resolve(["db", "upgrade", "--bogus"])
    assert _resolve(["--db", "sqlite:///x.db", "db", "upgrade"]).name == "upgrade"


CELERY = yaml.safe_load((ROOT / "docker-compose.celery.yaml").read_text())["services"]


def test_celery_variant_has_redis_a_planning_worker_and_a_gpu_worker_with_nvidia_devices():
    assert CELERY["redis"]["image"].startswith("redis:")
    for comp in AIRFLOW_COMPONENTS:  # every Airflow component switches executor and broker together
        env = CELERY[comp]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", comp
        assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/0", comp
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg://"), comp
    workers = {name: svc for name, svc in CELERY.items() if svc.get("command", [None])[:2] == ["celery", "worker"]}
    assert set(workers) == {"airflow-worker", "airflow-worker-gpu"}
    queues = {name: svc["command"][svc["command"].index("--queues") + 1] for name, svc in workers.items()}
    assert queues == {"airflow-worker": "default", "airflow-worker-gpu": "${DYNAMO_GPU_WORKER_QUEUE:-gpu}"}
    for svc in workers.values():  # workers run the same image and mounts as the other Airflow components
        assert svc["extends"] == {"file": "docker-compose.yaml", "service": "airflow-scheduler"}
        assert SERVICES[svc["extends"]["service"]]["volumes"]
        assert svc["depends_on"]["redis"] == {"condition": "service_healthy"}
    devices = CELERY["airflow-worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert "deploy" not in CELERY["airflow-worker"]  # planning needs no GPU
    used = set(re.findall(r"(?<!\$)\$\{(\w+)", (ROOT / "docker-compose.celery.yaml").read_text()))
    assert used <= set(_env_example()), f"missing from .env.example: {sorted(used - set(_env_example()))}"

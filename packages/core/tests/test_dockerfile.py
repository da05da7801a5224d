"""Reading a container's start from its Dockerfile, as `chute dev` does for Cortex projects."""

from __future__ import annotations

from pathlib import Path

import pytest

from chute._dev._dockerfile import choose_dockerfile, dockerfile_candidates, read_start
from chute.errors import ConfigError

# Cortex's test/apis/async/hello-world layout (cpu.Dockerfile beside cortex_cpu.yaml).
HELLO = """\
FROM python:3.8-slim

ENV PYTHONUNBUFFERED True

COPY app/requirements.txt /app/requirements.txt
RUN pip install --no-cache-dir -r /app/requirements.txt

COPY app /app
WORKDIR /app/
ENV PYTHONPATH=/app
ENV CORTEX_PORT=8080

CMD uvicorn --workers 1 --host 0.0.0.0 --port $CORTEX_PORT main:app
"""


def project(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_a_cortex_hello_world_dockerfile(tmp_path: Path) -> None:
    root = project(
        tmp_path, {"cpu.Dockerfile": HELLO, "app/main.py": "", "app/requirements.txt": ""}
    )
    start = read_start(root / "cpu.Dockerfile")
    # A shell-form CMD runs under sh, which expands $CORTEX_PORT from the environment.
    assert start.argv == [
        "/bin/sh",
        "-c",
        "uvicorn --workers 1 --host 0.0.0.0 --port $CORTEX_PORT main:app",
    ]
    assert start.workdir == root / "app"  # WORKDIR /app/ ← COPY app /app
    assert start.env == {
        "PYTHONUNBUFFERED": "True",
        "PYTHONPATH": str(root / "app"),  # a copied path, made local
        "CORTEX_PORT": "8080",
    }
    assert start.requirements == root / "app" / "requirements.txt"


def test_cortex_text_generator_dockerfile(tmp_path: Path) -> None:
    # Cortex's text-generator-cpu.dockerfile: a multi-line RUN, COPY . /app, a gunicorn CMD.
    text = """\
FROM python:3.8-slim
ENV PYTHONUNBUFFERED True
RUN pip install --no-cache-dir \\
    "uvicorn[standard]" \\
    gunicorn
COPY . /app
WORKDIR /app/
ENV PYTHONPATH=/app
ENV CORTEX_PORT=9000
CMD gunicorn -k uvicorn.workers.UvicornWorker --workers 1 --bind :$CORTEX_PORT main:app
"""
    root = project(tmp_path, {"text-generator-cpu.dockerfile": text, "main.py": ""})
    start = read_start(root / "text-generator-cpu.dockerfile")
    assert start.workdir == root
    assert start.env["PYTHONPATH"] == str(root)
    assert start.argv[2].startswith("gunicorn -k uvicorn.workers.UvicornWorker")
    assert start.requirements is None


def test_exec_forms_entrypoint_and_cmd_args_and_stages(tmp_path: Path) -> None:
    text = """\
ARG BASE=python:3.11
FROM ${BASE} AS base
ENV APP_HOME=/srv/service LOG=info
FROM base
ARG PORT=7000
WORKDIR $APP_HOME
COPY --chown=1000 src/ ./
COPY ["config.yaml", "/etc/service/"]
ENV CONFIG=/etc/service/config.yaml SEARCH=/srv/service/lib:/usr/lib
EXPOSE ${PORT}/tcp 9090
ENTRYPOINT ["python", "/srv/service/run.py"]
CMD ["--port", "7000"]
"""
    root = project(tmp_path, {"Dockerfile": text, "src/run.py": "", "config.yaml": ""})
    start = read_start(root / "Dockerfile")
    assert start.argv == ["python", str(root / "src" / "run.py"), "--port", "7000"]
    assert start.workdir == root / "src"
    assert start.env["LOG"] == "info"  # inherited from the stage it is built FROM
    assert start.env["CONFIG"] == str(root / "config.yaml")
    assert start.env["SEARCH"] == f"{root / 'src' / 'lib'}:/usr/lib"
    assert start.expose == (7000, 9090)


def test_a_shell_form_entrypoint_ignores_cmd(tmp_path: Path) -> None:
    root = project(tmp_path, {"Dockerfile": 'FROM x\nENTRYPOINT exec serve\nCMD ["--x"]\n'})
    assert read_start(root / "Dockerfile").argv == ["/bin/sh", "-c", "exec serve"]


def test_a_dockerfile_that_starts_nothing_is_refused(tmp_path: Path) -> None:
    root = project(tmp_path, {"Dockerfile": "FROM python:3.11\nRUN true\n"})
    with pytest.raises(ConfigError, match="neither CMD nor ENTRYPOINT"):
        read_start(root / "Dockerfile")


@pytest.mark.parametrize(
    ("files", "api_file", "container", "chosen"),
    [
        (["Dockerfile"], "cortex.yaml", "api", "Dockerfile"),
        (["cpu.Dockerfile", "gpu.Dockerfile"], "cortex_cpu.yaml", "api", "cpu.Dockerfile"),
        (["Dockerfile.cpu", "Dockerfile.gpu"], "cortex_gpu.yaml", "api", "Dockerfile.gpu"),
        (
            ["text-generator-cpu.dockerfile", "text-generator-gpu.dockerfile"],
            "cortex_cpu.yaml",
            "api",
            "text-generator-cpu.dockerfile",
        ),
        (["api.Dockerfile", "proxy.Dockerfile"], "cortex.yaml", "proxy", "proxy.Dockerfile"),
    ],
)
def test_the_dockerfile_is_chosen_as_cortex_users_name_them(
    tmp_path: Path, files: list[str], api_file: str, container: str, chosen: str
) -> None:
    root = project(tmp_path, {name: "FROM x\n" for name in files})
    assert choose_dockerfile(root / api_file, "hello", container) == root / chosen


def test_an_undecidable_choice_lists_the_candidates(tmp_path: Path) -> None:
    root = project(tmp_path, {"a.Dockerfile": "FROM x\n", "b.Dockerfile": "FROM x\n"})
    assert dockerfile_candidates(root) == [root / "a.Dockerfile", root / "b.Dockerfile"]
    with pytest.raises(ConfigError) as info:
        choose_dockerfile(root / "cortex.yaml", "hello", "api")
    message = str(info.value)
    assert "a.Dockerfile, b.Dockerfile" in message
    assert "--dockerfile api=PATH" in message
    explicit = root / "b.Dockerfile"
    assert choose_dockerfile(root / "cortex.yaml", "hello", "api", explicit=explicit) == explicit


def test_no_dockerfile_says_what_to_add(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no Dockerfile beside the API file"):
        choose_dockerfile(tmp_path / "cortex.yaml", "hello", "api")

"""The Dockerfile follows Airbyte's convention, and its install steps work from a clean copy of the repo.

No Docker engine runs here, so the image build is replayed outside Docker: the files the Dockerfile
copies go to a fresh directory, its `pip install` runs in a fresh virtualenv (pip's cache allowed,
where the image passes --no-cache-dir), and its entrypoint runs `spec` there.

Cheaper than the image in two ways that change nothing it proves: the virtualenv is made without pip
(ensurepip costs ~4 s), the test's own pip installing into it with `--python`; and pip does not
byte-compile what it installs (`--no-compile`: a failure there is only a warning; `spec` imports what it uses).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
IMAGE_CODE_DIR = "/airbyte/integration_code"
PINNED_BASE = re.compile(r"^docker\.io/airbyte/python-connector-base:\d+\.\d+\.\d+@sha256:[0-9a-f]{64}$")


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs in order, continuation lines joined and comments dropped."""
    joined: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1].strip()) for text in joined]


def instruction_values(name: str) -> list[str]:
    """The arguments of every instruction with this name."""
    return [args for instruction, args in dockerfile_instructions() if instruction == name]


def exec_form(args: str) -> list[str]:
    """An ENTRYPOINT/CMD in exec (JSON array) form; shell form is rejected (signals would not reach it)."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), f"not exec form: {args}"
    return value


def env_values() -> dict[str, str]:
    """Every ENV key=value, with shell quoting removed."""
    values: dict[str, str] = {}
    for args in instruction_values("ENV"):
        for item in shlex.split(args):
            key, _, value = item.partition("=")
            values[key] = value
    return values


def copy_sources() -> list[tuple[str, str]]:
    """(source, destination) of every COPY from the build context (COPY --from is not one)."""
    pairs = []
    for args in instruction_values("COPY"):
        parts = [p for p in shlex.split(args) if not p.startswith("--")]
        assert not args.startswith("--from"), "multi-stage copies are not expected here"
        pairs.extend((source, parts[-1]) for source in parts[:-1])
    return pairs


def setup_keyword(name: str) -> str:
    """A literal keyword argument of setup() in setup.py, read without running it."""
    for node in ast.walk(ast.parse((ROOT / "setup.py").read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setup":
            for keyword in node.keywords:
                if keyword.arg == name:
                    return ast.literal_eval(keyword.value)
    raise AssertionError(f"setup.py has no literal {name}=")


def test_dockerfile_starts_from_airbytes_python_base_pinned_by_digest():
    """One FROM: Airbyte's python-connector-base, by version and sha256 digest."""
    (base,) = instruction_values("FROM")
    assert PINNED_BASE.match(base), base


def test_dockerfile_entrypoint_and_airbyte_entrypoint_run_the_same_command():
    """AIRBYTE_ENTRYPOINT (what the platform runs) is the exec-form ENTRYPOINT, on the copied main.py."""
    (entrypoint,) = instruction_values("ENTRYPOINT")
    command = exec_form(entrypoint)
    assert shlex.split(env_values()["AIRBYTE_ENTRYPOINT"]) == command
    assert command == ["python", f"{IMAGE_CODE_DIR}/main.py"]
    assert instruction_values("WORKDIR") == [IMAGE_CODE_DIR]


def test_dockerfile_runs_as_the_base_images_non_root_user_after_installing():
    """USER airbyte (made by the base image) comes after every RUN, so only the install runs as root."""
    order = [instruction for instruction, _ in dockerfile_instructions()]
    users = instruction_values("USER")
    assert users == ["airbyte"]
    assert order.index("USER") > max(i for i, name in enumerate(order) if name == "RUN")


def test_dockerfile_copies_files_that_exist_and_the_dockerignore_keeps():
    """Every COPY source exists in the repo and is re-included by the allow-list .dockerignore."""
    kept = {line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")}
    sources = copy_sources()
    assert {"setup.py", "main.py", "source_mixpanel_export"} <= {s for s, _ in sources}
    for source, _ in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such path in the repo"
        assert source.rstrip("/") in kept, f"COPY {source}: excluded by .dockerignore"


def test_dockerfile_labels_carry_the_package_version():
    """LABEL io.airbyte.version matches setup.py, as Airbyte's registry expects."""
    labels = dict(item.split("=", 1) for args in instruction_values("LABEL") for item in shlex.split(args))
    assert labels["io.airbyte.version"] == setup_keyword("version")
    assert labels["io.airbyte.name"] == "airbyte/" + setup_keyword("name")


def replay_copies(code_dir: Path) -> None:
    """Do the Dockerfile's COPY steps into `code_dir` (its WORKDIR), with Docker's rules for directories."""
    code_dir.mkdir(parents=True, exist_ok=True)
    for source, destination in copy_sources():
        origin, target = ROOT / source, code_dir / destination
        if origin.is_dir():  # Docker copies a directory's contents into the destination
            shutil.copytree(origin, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            if destination.endswith("/"):
                target.mkdir(parents=True, exist_ok=True)
                target = target / origin.name
            shutil.copy2(origin, target)


def spec_messages(command: list[str], cwd: Path, env: dict[str, str]) -> list[dict]:
    """Run a connector command and return its SPEC messages (every line must be JSON)."""
    done = subprocess.run([*command, "spec"], capture_output=True, timeout=120, cwd=cwd, env=env)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    messages = [json.loads(line) for line in done.stdout.decode().splitlines() if line.strip()]
    return [m for m in messages if m["type"] == "SPEC"]


def test_given_clean_copy_when_dockerfile_install_steps_replayed_in_fresh_venv_then_entrypoint_prints_spec(tmp_path):
    """The Dockerfile's COPY and pip steps, replayed outside Docker, give a working entrypoint."""
    code_dir = tmp_path / "integration_code"
    replay_copies(code_dir)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    for step in instruction_values("RUN"):
        words = [w for w in shlex.split(step) if w != "--no-cache-dir"]  # reuse pip's cache here
        assert words[:2] == ["pip", "install"], f"unexpected build step: {step}"
        pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-compile"]
        done = subprocess.run([*pip, *words[2:]], cwd=code_dir, env=env, capture_output=True, timeout=600)
        assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]

    (entrypoint,) = instruction_values("ENTRYPOINT")
    image_command = [str(python) if word == "python" else word for word in exec_form(entrypoint)]
    image_command = [w.replace(IMAGE_CODE_DIR, str(code_dir)) for w in image_command]
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    for command in (image_command, [str(venv / "bin" / "source-mixpanel-export")]):
        (spec,) = spec_messages(command, outside, env)
        properties = spec["spec"]["connectionSpecification"]["properties"]
        assert {"credentials", "region", "start_date"} <= set(properties)
    installed = subprocess.run(
        [str(python), "-c", "import source_mixpanel_export, sys; print(source_mixpanel_export.__file__)"],
        cwd=outside, env=env, capture_output=True, text=True, check=True,
    ).stdout
    assert installed.startswith(str(venv)), f"the package was not installed into the venv: {installed}"

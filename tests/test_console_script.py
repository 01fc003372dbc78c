"""The ``qa-notify`` console script: manage.py's commands, and gevent patched for ``web`` as there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .live import REPO

# Installed next to the interpreter by `pip install -e .` ([project.scripts] in pyproject.toml).
SCRIPT = Path(sys.executable).with_name("qa-notify")


@pytest.fixture
def env(tmp_path, redis_url):
    return {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.sqlite'}",
        "REDIS_URL": redis_url,
        "SECRET_KEY": "cli",
    }


def commands(help_text: str) -> set[str]:
    """The command names of a click group's --help."""
    listed = help_text.split("Commands:", 1)[1]
    return {line.split()[0] for line in listed.splitlines() if line.startswith("  ") and line.strip()}


def test_the_script_lists_manage_pys_commands(env):
    assert SCRIPT.exists(), f"{SCRIPT} is missing: reinstall the project (make install)"
    script = subprocess.run([SCRIPT, "--help"], env=env, capture_output=True, text=True, timeout=60)
    manage = subprocess.run(
        [sys.executable, REPO / "manage.py", "--help"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert script.returncode == 0, script.stderr
    assert script.stdout.startswith("Usage: qa-notify ")
    assert commands(script.stdout) == commands(manage.stdout)
    assert {"run", "run-cluster", "web", "worker", "init-db", "create-user", "seed-demo", "notify", "broadcast"} <= (
        commands(script.stdout)
    )


@pytest.mark.parametrize(("command", "patched"), [("web", True), ("worker", False)])
def test_web_patches_gevent_before_the_app_loads(env, tmp_path, command, patched):
    # The script's own code, run as its interpreter runs it, with the argv it would get from
    # `qa-notify web --help`: manage.py must see "web" in argv[1] though argv[0] is no
    # longer manage.py, and patch before socket or threading are imported.
    probe = (
        "import runpy, sys\n"
        f"sys.argv = [{str(SCRIPT)!r}, {command!r}, '--help']\n"
        "try:\n"
        "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "from gevent import monkey\n"
        "print(monkey.is_module_patched('socket'), monkey.is_module_patched('threading'))\n"
    )
    proc = subprocess.run(  # not from the repo's directory: manage is found the way the script finds it
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert f"{command} [OPTIONS]" in proc.stdout  # its help: the script ran and chose the command
    assert proc.stdout.splitlines()[-1] == f"{patched} {patched}"

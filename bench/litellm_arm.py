"""The LiteLLM proxy arm (optional): ``litellm[proxy]`` from PyPI in a venv of its own under
``bench/.work/litellm-env`` (never a project dependency; gitignored), one worker, a master key,
no database, one model pointing at the canned upstream as an OpenAI-compatible ``openai/...``
model with ``api_base``. Installed on first use (bounded by BENCH_LITELLM_INSTALL_TIMEOUT);
when it cannot be installed or started the reason goes to RESULTS.md and the run goes on.

The version is pinned: 1.82.7 and 1.82.8 were a supply-chain compromise (March 2026), and the
proxy runs with a minimal environment (no credentials of the machine's user are inherited).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import yaml
from arms import Arm, Run, Server
from common import BENCH_KEY, WORK, ArmFailed, Settings
from procs import Proc, Stack, free_port, taskset, wait_listening

VERSION = "1.82.6"
ENV_DIR = WORK / "litellm-env"
LITELLM = ENV_DIR / "bin" / "litellm"
INSTALL_LOG = WORK / "litellm-install.log"


def installed_version() -> str | None:
    python = ENV_DIR / "bin" / "python"
    if not LITELLM.exists() or not python.exists():
        return None
    try:
        out = subprocess.run(
            [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def ensure_installed(settings: Settings) -> str:
    """The installed version; raises RuntimeError with the reason when it cannot be had."""
    version = installed_version()
    if version == VERSION:
        return version
    print(
        f"   installing litellm[proxy]=={VERSION} into {ENV_DIR.relative_to(WORK.parent.parent)} "
        f"(at most {settings.litellm_install_timeout:.0f} s; log: "
        f"{INSTALL_LOG.relative_to(WORK.parent.parent)})",
        flush=True,
    )
    started = time.monotonic()
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(ENV_DIR)],
        [
            str(ENV_DIR / "bin" / "pip"),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            f"litellm[proxy]=={VERSION}",
        ],
    ]
    WORK.mkdir(parents=True, exist_ok=True)
    with INSTALL_LOG.open("w") as log:
        for cmd in steps:
            left = settings.litellm_install_timeout - (time.monotonic() - started)
            try:
                done = subprocess.run(
                    cmd, stdout=log, stderr=subprocess.STDOUT, timeout=max(1, left), check=False
                )
            except subprocess.TimeoutExpired:
                raise RuntimeError(
                    f"installing litellm[proxy]=={VERSION} took more than "
                    f"{settings.litellm_install_timeout:.0f} s"
                ) from None
            except OSError as err:
                raise RuntimeError(f"{cmd[0]}: {err}") from None
            if done.returncode != 0:
                lines = [
                    ln for ln in INSTALL_LOG.read_text().splitlines() if "is ignored" not in ln
                ]
                raise RuntimeError(
                    f"`{' '.join(cmd[-2:])}` failed ({done.returncode}): "
                    + " / ".join(lines[-5:])[-600:]
                )
    version = installed_version()
    if version is None:
        raise RuntimeError("litellm installed, but its version cannot be read")
    print(f"   installed litellm {version} in {time.monotonic() - started:.0f} s", flush=True)
    return version


def litellm_config(run: Run) -> Path:
    config = {
        "model_list": [
            {
                "model_name": "bench-model",
                "litellm_params": {
                    "model": "openai/bench-model",
                    "api_base": f"http://127.0.0.1:{run.canned_port}/v1",
                    "api_key": "sk-canned-upstream-needs-none",
                },
            }
        ],
        "general_settings": {"master_key": BENCH_KEY},
        "litellm_settings": {"telemetry": False},
    }
    path = run.dir / "litellm.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def log_config(run: Run) -> Path:
    """No access log (like the light gateway arms), warnings and errors only."""
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(levelname)s %(name)s %(message)s"}},
        "handlers": {"err": {"class": "logging.StreamHandler", "formatter": "plain"}},
        "root": {"level": "WARNING", "handlers": ["err"]},
        "loggers": {
            "uvicorn.access": {"level": "WARNING"},
            "uvicorn.error": {"level": "WARNING"},
        },
    }
    path = run.dir / "litellm-logging.json"
    path.write_text(json.dumps(config))
    return path


def start_litellm(stack: Stack, run: Run) -> Server:
    try:
        ensure_installed(run.settings)
    except RuntimeError as err:
        raise ArmFailed(f"LiteLLM could not be installed: {err}") from None
    port = free_port()
    home = run.dir / "litellm-home"
    home.mkdir(exist_ok=True)
    env = {
        "PATH": f"{ENV_DIR / 'bin'}:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the cost map at start
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
        "NO_PROXY": "*",
    }
    cmd = [
        str(LITELLM),
        "--config",
        str(litellm_config(run)),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
        "--telemetry",
        "False",
        "--log_config",
        str(log_config(run)),
    ]
    proc = Proc("litellm-1w", taskset(run.server_cpus, cmd), run.dir / "litellm-1w.log", env=env)
    stack.start(proc)
    wait_listening(proc, port, 1, deadline_s=120)
    return Server(f"http://127.0.0.1:{port}", proc)


def litellm_arm() -> Arm:
    return Arm("litellm-1w", "LiteLLM proxy, 1 worker", 1, start_litellm, optional=True)

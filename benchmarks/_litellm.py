"""The LiteLLM proxy as a target of ``bench_gateway.py --litellm``: a virtualenv of its
own (made on first use), a configuration routing the model ``mock`` to the benchmark's
mock upstream, and the command that serves it with one worker.

LiteLLM has dependencies of its own that the project must not share, hence its own
virtualenv (``.venv-litellm`` in the repository root unless told otherwise).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# The newest release whose [proxy] extra installs from PyPI: the later ones pin
# companion packages (litellm-enterprise, litellm-proxy) that are not published.
VERSION = "1.108.7"
DEFAULT_VENV = Path(__file__).resolve().parent.parent / ".venv-litellm"


def ensure_venv(venv: Path) -> Path:
    """The ``litellm`` command of ``venv``, after making the virtualenv and installing
    the pinned ``litellm[proxy]`` into it if that was not done yet."""
    litellm = venv / "bin" / "litellm"
    if litellm.exists():
        return litellm
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"litellm: creating a virtualenv in {venv} (python -m venv)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        # Out of git's sight wherever it is (as Python 3.13's venv does by itself).
        (venv / ".gitignore").write_text("*\n")
    print(f"litellm: installing litellm[proxy]=={VERSION} into {venv} (pip)", flush=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", f"litellm[proxy]=={VERSION}"],
        check=True,
    )
    return litellm


def installed_version(venv: Path) -> str:
    """The version of the ``litellm`` package in ``venv``."""
    python = venv / "bin" / "python"
    return subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def write_config(path: Path, mock_port: int) -> None:
    """A proxy configuration with one model, ``mock``: the mock upstream as an
    OpenAI-compatible provider. No master key, as the gateway runs without API keys
    (LiteLLM refuses that unless told it is meant)."""
    path.write_text(
        "model_list:\n"
        "  - model_name: mock\n"
        "    litellm_params:\n"
        "      model: openai/mock\n"
        f"      api_base: http://127.0.0.1:{mock_port}/v1\n"
        "      api_key: dummy\n"
        "general_settings:\n"
        "  dangerously_permit_weak_or_unset_master_key: true\n"
        "  disable_spend_logs: true\n"
    )


def command(litellm: Path, config: Path, port: int) -> list[str]:
    """The proxy on ``port`` with one worker (uvicorn, LiteLLM's default server)."""
    return [
        str(litellm),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]


def environment(upstream_connections: int) -> dict[str, str]:
    """The proxy's environment: no telemetry, the bundled model price list instead of
    a download at start-up, warnings only in its log (the gateway runs at
    ``--log-level warning``), and an upstream connection pool of
    ``upstream_connections`` (its default, 500 per host, would cap larger levels)."""
    env = dict(os.environ)
    env.update(
        LITELLM_TELEMETRY_DISABLED="true",
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        LITELLM_LOG="WARNING",
        AIOHTTP_CONNECTOR_LIMIT=str(upstream_connections),
        AIOHTTP_CONNECTOR_LIMIT_PER_HOST=str(upstream_connections),
    )
    return env

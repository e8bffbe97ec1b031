"""Running the ``h2t-store`` CLI, the one writer of a store."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any, Dict, List, Optional, Sequence

from .errors import H2TStoreError

#: Environment variable naming the binary (default: ``h2t-store`` on PATH).
BINARY_ENV = "H2T_STORE_BIN"


def binary(explicit: Optional[str] = None) -> str:
    """The CLI to run: ``explicit``, else ``$H2T_STORE_BIN``, else ``h2t-store`` on the PATH."""
    path = explicit or os.environ.get(BINARY_ENV) or shutil.which("h2t-store")
    if not path or not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise H2TStoreError(f"h2t-store CLI not found ({explicit or os.environ.get(BINARY_ENV) or 'not on PATH'}); "
                            f"build it (swift build -c release) and set {BINARY_ENV} to .build/release/h2t-store")
    return path


def run_json(arguments: Sequence[str], binary_path: Optional[str] = None) -> Dict[str, Any]:
    """Runs ``h2t-store ARGUMENTS --json`` and returns its JSON output; a failure raises with the
    CLI's own one-line error."""
    done = subprocess.run([binary(binary_path), *arguments, "--json"], capture_output=True, text=True)
    return parse_result(list(arguments), done.returncode, done.stdout, done.stderr)


def parse_result(arguments: List[str], status: int, stdout: str, stderr: str) -> Dict[str, Any]:
    if status != 0:
        message = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit status {status}"
        raise H2TStoreError(f"h2t-store {arguments[0] if arguments else ''} failed: {message}")
    try:
        return json.loads(stdout)
    except json.JSONDecodeError:
        raise H2TStoreError(f"h2t-store {arguments[0] if arguments else ''} printed no JSON: {stdout[:200]!r}") from None

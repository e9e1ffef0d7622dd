"""The type check: pyright (pinned in constraints.txt) over the modules `[tool.pyright].include` in pyproject.toml
lists (the public API, the protocol, the registry, the trainer, the pipeline and the CLI).

Only errors in those files count; what they import (the rest of danqing, torch, ...) is read for its types.
Listed files that do not exist yet are skipped.  A failure prints every error as ``file:line:col: message``.
Run the same check by hand with ``.venv/bin/pyright`` from the repository root.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _pyproject() -> dict:
    try:
        import tomllib
    except ImportError:                   # Python 3.10
        tomllib = pytest.importorskip("tomli", reason="reading pyproject.toml needs tomllib (3.11+) or tomli")
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def _pinned_version() -> str | None:
    text = (ROOT / "constraints.txt").read_text()
    m = re.search(r"^pyright==(\S+)", text, re.MULTILINE)
    return m.group(1) if m else None


def test_pyright_finds_no_errors():
    try:
        from pyright import __pyright_version__ as installed
    except ImportError:
        pytest.fail("pyright is not installed: `pip install -c constraints.txt -e '.[test]'` (or `make install`)")
    pinned = _pinned_version()
    assert pinned is not None, "constraints.txt does not pin pyright"
    assert installed == pinned, (f"pyright {installed} is installed but constraints.txt pins {pinned}: "
                                 "`pip install -c constraints.txt -e '.[test]'`")

    include = _pyproject()["tool"]["pyright"]["include"]
    targets = [p for p in include if (ROOT / p).exists()]
    assert targets, f"none of [tool.pyright].include exists: {include}"

    # the pinned pyright bundled in the wheel (never one fetched from npm), and no look-up of the newest on PyPI
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYRIGHT_PYTHON_FORCE_VERSION", "PYRIGHT_PYTHON_PYLANCE_VERSION",
                        "PYRIGHT_PYTHON_USE_BUNDLED_PYRIGHT")}
    env["PYRIGHT_PYTHON_IGNORE_WARNINGS"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "pyright", "--outputjson", "--project", str(ROOT),
         "--pythonpath", sys.executable, *targets],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"pyright did not run (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    assert proc.returncode in (0, 1), f"pyright failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"

    errors = []
    for d in report["generalDiagnostics"]:
        if d["severity"] != "error":
            continue
        path = Path(d["file"])
        try:
            path = path.relative_to(ROOT)
        except ValueError:
            pass
        start = d.get("range", {}).get("start", {"line": -1, "character": -1})
        rule = f"  ({d['rule']})" if d.get("rule") else ""
        message = d["message"].replace("\xa0", " ").replace("\n", "\n    ")
        errors.append(f"{path}:{start['line'] + 1}:{start['character'] + 1}: {message}{rule}")
    assert report["summary"]["filesAnalyzed"] > 0, f"pyright analysed no file:\n{proc.stdout}\n{proc.stderr}"
    if errors:
        pytest.fail(f"pyright {report.get('version')} found {len(errors)} error(s) in {', '.join(targets)}:\n"
                    + "\n".join(errors), pytrace=False)

"""Run the ``run:`` steps of a GitHub workflow job or composite action here, in order.

It follows the runner where the project's workflows depend on it:

- steps run in order; ``uses:`` steps are skipped (they need GitHub);
- a step without ``shell:`` runs as ``bash -e``, ``shell: bash`` as
  ``bash --noprofile --norc -eo pipefail``;
- env is layered caller → workflow → job → ``$GITHUB_ENV`` → step;
- after a failing step only steps whose ``if:`` is ``always()`` or
  ``failure()`` run;
- ``$GITHUB_OUTPUT`` lines of a step with an ``id`` become
  ``steps.<id>.outputs.<name>``;
- an action's inputs not given fall back to their ``default:``, and
  ``github.action_path`` is the action's folder.

``${{ … }}`` expressions are looked up in a flat dict such as
``{"github.sha": "…", "vars.QGJOB_SERVER": "…", "inputs.tests": "…"}``.
Only names, single-quoted strings and ``||`` are understood. As on GitHub an
unset ``vars``, ``secrets``, ``steps`` or ``inputs`` value is empty; any
other missing name raises ``KeyError``, so a test cannot silently run a step
with a blank.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = ["read_key_values", "run_workflow_steps", "runner_env"]

_RUNNER_FILES = ("GITHUB_STEP_SUMMARY", "GITHUB_OUTPUT", "GITHUB_ENV")
_EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)
_OPERAND = re.compile(r"\s*(?:'((?:[^']|'')*)'|([A-Za-z_][\w-]*(?:\.[\w-]+)*))\s*")
_EMPTY_WHEN_UNSET = ("vars.", "secrets.", "steps.", "inputs.")


def runner_env(directory: Path) -> dict[str, str]:
    """Create the runner's files under ``directory``; return this process's env plus them."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {name: directory / name.lower() for name in _RUNNER_FILES}
    for path in files.values():
        path.touch()
    temp = directory / "runner_temp"
    temp.mkdir(exist_ok=True)
    return {
        **os.environ,
        **{name: str(path) for name, path in files.items()},
        "RUNNER_TEMP": str(temp),
    }


def read_key_values(text: str) -> dict[str, str]:
    """Parse the ``name=value`` and ``name<<EOF`` lines of ``$GITHUB_OUTPUT`` or ``$GITHUB_ENV``."""
    values: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        if not line:
            continue
        heredoc = line.find("<<")
        equals = line.find("=")
        if equals == -1 or -1 < heredoc < equals:
            if heredoc == -1:
                raise ValueError(f"not a name=value line: {line!r}")
            name, delimiter = line[:heredoc], line[heredoc + 2 :]
            body: list[str] = []
            for body_line in lines:
                if body_line == delimiter:
                    break
                body.append(body_line)
            else:
                raise ValueError(f"{name}: no closing {delimiter!r}")
            values[name] = "\n".join(body)
        else:
            values[line[:equals]] = line[equals + 1 :]
    return values


def run_workflow_steps(
    path: Path,
    exprs: Mapping[str, str],
    env: Mapping[str, str],
    cwd: Path,
    *,
    job: str | None = None,
    timeout: float | None = None,
) -> list[subprocess.CompletedProcess[str]]:
    """Run the ``run:`` steps of ``path`` in order; one result per step that ran.

    ``env`` must hold the runner's files (see :func:`runner_env`); ``job``
    names the workflow job when there are several; ``timeout`` bounds each
    step in seconds.
    """
    missing = [name for name in (*_RUNNER_FILES, "RUNNER_TEMP") if name not in env]
    if missing:
        raise KeyError(f"env lacks {', '.join(missing)}: build it with runner_env()")
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    values = dict(exprs)
    base_env = dict(env)
    env_layers: list[Mapping[str, Any]] = []
    defaults: dict[str, Any] = {}
    runs = document.get("runs")
    composite = isinstance(runs, Mapping)
    if composite:
        if runs["using"] != "composite":
            raise ValueError(f"{path}: only composite actions have run steps")
        values.setdefault("github.action_path", str(path.parent.resolve()))
        base_env["GITHUB_ACTION_PATH"] = values["github.action_path"]
        for name, spec in (document.get("inputs") or {}).items():
            if f"inputs.{name}" not in values:
                values[f"inputs.{name}"] = _substitute(spec.get("default", ""), values)
        steps = runs["steps"]
    else:
        jobs = document["jobs"]
        if job is None:
            if len(jobs) != 1:
                raise ValueError(f"{path} has jobs {sorted(jobs)}: name one")
            (job,) = jobs
        spec = jobs[job]
        steps = spec["steps"]
        env_layers = [document.get("env") or {}, spec.get("env") or {}]
        for scope in (document, spec):
            defaults.update((scope.get("defaults") or {}).get("run") or {})
    return _run_steps(
        steps, values, base_env, env_layers, defaults, cwd, timeout, composite=composite
    )


def _run_steps(
    steps: list[dict[str, Any]],
    values: dict[str, str],
    base_env: dict[str, str],
    env_layers: list[Mapping[str, Any]],
    defaults: Mapping[str, Any],
    cwd: Path,
    timeout: float | None,
    *,
    composite: bool,
) -> list[subprocess.CompletedProcess[str]]:
    output_file = Path(base_env["GITHUB_OUTPUT"])
    env_file = Path(base_env["GITHUB_ENV"])
    scripts = Path(base_env["RUNNER_TEMP"])
    file_env: dict[str, str] = {}
    failed = False
    results: list[subprocess.CompletedProcess[str]] = []
    for number, step in enumerate(steps, start=1):
        if "run" not in step or not _should_run(step.get("if"), failed=failed):
            continue
        shell = step.get("shell", defaults.get("shell"))
        if composite and shell is None:
            raise ValueError(f"step {number}: a composite action's run step needs shell:")
        script = scripts / f"step-{number}.sh"
        script.write_text(_substitute(step["run"], values), encoding="utf-8")
        step_env = dict(base_env)
        for layer in env_layers:
            step_env.update(_substitute_env(layer, values))
        step_env.update(file_env)
        step_env.update(_substitute_env(step.get("env") or {}, values))
        directory = step.get("working-directory", defaults.get("working-directory"))
        outputs_from, env_from = output_file.stat().st_size, env_file.stat().st_size
        result = subprocess.run(
            _shell_argv(shell, script),
            cwd=cwd / _substitute(directory, values) if directory else cwd,
            env=step_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        results.append(result)
        if "id" in step:
            for name, value in read_key_values(_read_from(output_file, outputs_from)).items():
                values[f"steps.{step['id']}.outputs.{name}"] = value
        file_env.update(read_key_values(_read_from(env_file, env_from)))
        if result.returncode != 0 and step.get("continue-on-error") is not True:
            failed = True
    return results


def _read_from(path: Path, offset: int) -> str:
    with path.open("rb") as stream:
        stream.seek(offset)
        return stream.read().decode("utf-8")


def _shell_argv(shell: str | None, script: Path) -> list[str]:
    if shell is None:
        return ["bash", "-e", str(script)]
    if shell == "bash":
        return ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)]
    raise ValueError(f"unsupported shell: {shell!r}")


def _should_run(condition: object, *, failed: bool) -> bool:
    if condition is None:
        return not failed
    text = str(condition).strip()
    wrapped = _EXPRESSION.fullmatch(text)
    if wrapped:
        text = wrapped.group(1).strip()
    status = {
        "always()": True,
        "success()": not failed,
        "failure()": failed,
        "cancelled()": False,
        "!cancelled()": True,
    }
    if text not in status:
        raise ValueError(f"unsupported if: {condition!r}")
    return status[text]


def _substitute_env(layer: Mapping[str, Any], values: Mapping[str, str]) -> dict[str, str]:
    return {name: _substitute(value, values) for name, value in layer.items()}


def _substitute(template: object, values: Mapping[str, str]) -> str:
    if isinstance(template, bool):
        return str(template).lower()
    return _EXPRESSION.sub(lambda match: _evaluate(match.group(1), values), str(template))


def _evaluate(expression: str, values: Mapping[str, str]) -> str:
    """Evaluate ``a || 'b' || c`` left to right: the first non-empty value, else the last."""
    operands: list[tuple[str | None, str | None]] = []
    position = 0
    while True:
        match = _OPERAND.match(expression, position)
        if match is None:
            raise ValueError(f"unsupported expression: {expression.strip()!r}")
        literal, name = match.groups()
        operands.append((literal, name))
        position = match.end()
        if position == len(expression):
            break
        if not expression.startswith("||", position):
            raise ValueError(f"unsupported expression: {expression.strip()!r}")
        position += 2
    value = ""
    for literal, name in operands:
        value = literal.replace("''", "'") if literal is not None else _lookup(str(name), values)
        if value:
            break
    return value


def _lookup(name: str, values: Mapping[str, str]) -> str:
    if name in values:
        return values[name]
    if name.startswith(_EMPTY_WHEN_UNSET):
        return ""
    raise KeyError(f"no value for ${{{{ {name} }}}}: pass it in exprs")

"""Reading run configs as text: YAML (each key once) or JSON, ``${VAR}`` substitution by path, and
``--set path.to.key=value`` overrides; every problem names the place and the fix."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import yaml

from reasonrl.core.errors import ReasonRLError


class ConfigError(ReasonRLError):
    """One or more problems in a config; each line names a path, the value and the fix."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = problems
        super().__init__(f"{source} is invalid:\n" + "\n".join(f"  - {p}" for p in problems))


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"file {path} does not exist; pass the path of a .yaml or .json config"], str(path))
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError([f"not UTF-8 text: byte {exc.start} (line {line}) is {raw[exc.start:exc.start + 1]!r}; "
                           f"save the file as UTF-8"], str(path)) from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown line"
        raise ConfigError([f"malformed YAML at {where}: {exc.problem}"], str(path)) from None
    except json.JSONDecodeError as exc:
        raise ConfigError([f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"], str(path)) from None
    if not isinstance(data, dict):
        raise ConfigError([f"the top level must be a mapping, got {type(data).__name__}"], str(path))
    return data


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice in one mapping (the second would win silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice (lines {seen[key]} and {line}); keep one",
                    key_node.start_mark)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def parse_value(text: str, where: str, fix: str) -> Any:
    """A YAML scalar or collection typed in a command line or an environment variable."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError([f"{where}: {text!r} is not valid YAML ({problem}); {fix}"]) from None


_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def substitute_env(
    data: Any, path: tuple = (), problems: list[str] | None = None, templates: dict | None = None
) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string value.

    ``templates`` collects, per config path, the text that held a reference, so a saved
    config writes ``${VAR}`` back at exactly that place (values may be secrets).
    """
    problems = [] if problems is None else problems
    templates = {} if templates is None else templates
    if isinstance(data, dict):
        return {k: substitute_env(v, (*path, k), problems, templates) for k, v in data.items()}
    if isinstance(data, list):
        return [substitute_env(v, (*path, i), problems, templates) for i, v in enumerate(data)]
    if not isinstance(data, str) or not _ENV_PATTERN.search(data):
        return data
    where = _path_text(path)

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        problems.append(f"{where}: environment variable {name} is not set; export it or write ${{{name}:-default}}")
        return match.group(0)

    templates[path] = data
    result = _ENV_PATTERN.sub(replace, data)
    if not _ENV_PATTERN.fullmatch(data):
        return result
    return parse_value(result, f"{where} (from {data})", "quote the value inside the variable, e.g. '\"...\"'")


def _path_text(path: tuple) -> str:
    text = ""
    for key in path:
        text = _join(text, key)
    return text


def _join(path: str, key: Any) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else str(key))


_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def parse_override(text: str) -> tuple[list[str | int], Any]:
    if "=" not in text:
        raise ConfigError([f"--set {text!r}: expected path.to.key=value, e.g. --set stages[0].lr=1e-4"])
    key, _, raw_value = text.partition("=")
    tokens: list[str | int] = []
    for name, index in _TOKEN.findall(key.strip()):
        tokens.append(int(index) if index else (int(name) if name.isdigit() else name))
    if not tokens:
        raise ConfigError([f"--set {text!r}: empty key path"])
    value = parse_value(raw_value, f"--set {text!r}", "quote it, e.g. --set 'key=\"a: b\"'") if raw_value.strip() else ""
    return tokens, value


def apply_override(data: dict[str, Any], text: str) -> None:
    tokens, value = parse_override(text)
    node: Any = data
    walked = ""
    for token in tokens[:-1]:
        if isinstance(node, dict) and token not in node:
            node[token] = {}  # e.g. params of a component left at its defaults
        try:
            node = node[token]
        except (KeyError, IndexError, TypeError):
            raise ConfigError([f"--set {text!r}: {_join(walked, token)} does not exist in the config"]) from None
        walked = _join(walked, token)
    last = tokens[-1]
    if isinstance(node, list):
        if not isinstance(last, int) or last >= len(node):
            raise ConfigError([f"--set {text!r}: {_join(walked, last)} is not an index of the list at {walked}"])
    elif not isinstance(node, dict):
        raise ConfigError([f"--set {text!r}: {walked} holds {node!r}, not a mapping"])
    node[last] = value

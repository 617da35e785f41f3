"""Reading `rlhf.toml` into a `Config`, writing one back, and `--set section.key=value` overrides."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import tomllib

from rlhf_core.config.sections import Config
from rlhf_core.config.settings import ConfigError
from rlhf_core.config.validation import validate


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        default = getattr(cls(), key)
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: [{key}] must be a table")
            kwargs[key] = _build(type(default), value, f"{where} [{key}]")
            continue
        expected = type(default)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if expected is list and isinstance(value, list):  # lists of fractions: 1 means 1.0
            value = [float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: {key} must be {expected.__name__}, got {value!r}")
        kwargs[key] = value
    return cls(**kwargs)


def load_config(path: Path) -> Config:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    config = _build(Config, data, str(path))
    validate(config, path)
    return config


def apply_overrides(config: Config, items: list[str]) -> None:
    """`section.key=value` strings (benchmarks' --set) over `config`, each parsed as the key's type (a list:
    comma-separated numbers), then validated."""
    parsers = {bool: lambda v: v == "true", list: lambda v: [float(x) for x in v.split(",") if x.strip()]}
    for item in items:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        target = getattr(config, section, None)
        if not dataclasses.is_dataclass(target) or not hasattr(target, name):
            raise ConfigError(f"--set {item!r}: no setting {key!r} (expected section.key=value)")
        current = getattr(target, name)
        setattr(target, name, parsers.get(type(current), type(current))(value))
    validate(config, "--set")


def toml_value(value: Any) -> str:
    """`value` as TOML writes it (a string quoted, a bool lower-case, a list in brackets)."""
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    text = text.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")  # a basic string is one line
    return f'"{text}"'


def dump_config(config: Config) -> str:
    """TOML text for `config`: top-level scalars first, then one table per section."""
    lines: list[str] = ["# rlhf-loop project configuration", ""]
    tables: list[tuple[str, Any]] = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            tables.append((f.name, value))
        else:
            lines.append(f"{f.name} = {toml_value(value)}")
    for name, section in tables:
        lines += ["", f"[{name}]"]
        lines += [f"{sf.name} = {toml_value(getattr(section, sf.name))}" for sf in dataclasses.fields(section)]
    return "\n".join(lines) + "\n"

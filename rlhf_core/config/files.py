"""Reading `rlhf.toml` into a `Config`, writing one back, and `--set section.key=value` overrides."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import tomllib

from rlhf_core.config.sections import Config
from rlhf_core.config.settings import ConfigError, entry_class, field_hint
from rlhf_core.config.validation import validate


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        default = getattr(cls(), key)
        if (entry := entry_class(field_hint(cls, key))) is not None:  # a list of tables: [[reward.functions]]
            if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
                raise ConfigError(f"{where}: {key} must be a list of tables ([[{_dotted(where, key)}]])")
            kwargs[key] = [_build(entry, item, f"{where} [[{_dotted(where, key)}]] #{i + 1}")
                           for i, item in enumerate(value)]
            continue
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


def _dotted(where: str, key: str) -> str:
    """"reward.functions" from where = "FILE [reward]" and key = "functions"."""
    section = where.rpartition("[")[2].rstrip("]") if where.endswith("]") else ""
    return f"{section}.{key}" if section else key


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
        if isinstance(current, dict) or entry_class(field_hint(type(target), name)) is not None:
            raise ConfigError(f"--set {item!r}: {key} is a table or a list of tables; set it in rlhf.toml")
        setattr(target, name, parsers.get(type(current), type(current))(value))
    validate(config, "--set")


def toml_value(value: Any) -> str:
    """`value` as TOML writes it (a string quoted, a bool lower-case, a list in brackets, a table inline)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    text = text.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")  # a basic string is one line
    return f'"{text}"'


def toml_key(key: str) -> str:
    """A TOML key: bare when it can be, else quoted."""
    return key if key and all(c.isalnum() or c in "_-" for c in key) else toml_value(key)


def dump_config(config: Config) -> str:
    """TOML text for `config`: top-level scalars first, then one table per section, each followed by its lists of
    tables (`[[reward.functions]]`, only the keys an entry sets)."""
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
        entries: list[tuple[str, list[Any]]] = []
        for sf in dataclasses.fields(section):
            value = getattr(section, sf.name)
            if entry_class(field_hint(type(section), sf.name)) is not None:
                entries.append((sf.name, value))
            else:
                lines.append(f"{sf.name} = {toml_value(value)}")
        for key, items in entries:
            for item in items:
                defaults = type(item)()
                lines += ["", f"[[{name}.{key}]]"]
                lines += [f"{f.name} = {toml_value(getattr(item, f.name))}" for f in dataclasses.fields(item)
                          if getattr(item, f.name) != getattr(defaults, f.name)]
    return "\n".join(lines) + "\n"

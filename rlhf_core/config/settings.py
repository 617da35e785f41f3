"""How a setting of `rlhf.toml` is declared, and what the rest reads from the declaration: its help text
(field metadata) and its allowed values, given once, as a `typing.Literal` type for a fixed set of strings or
as a table of kinds read at check time (a registry, so a plugin's entry is accepted). The "must be one of"
checks (`validation`) and the reference pages (`reference`) derive from here; nothing else lists them."""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal


class ConfigError(ValueError):
    """`rlhf.toml` is malformed; the message names the file and the key."""


# Where a setting's allowed values come from when they are not a Literal type: a table (its keys), or a function
# that returns them when a config is checked (a registry's names, which plugins extend).
Choices = Mapping[str, Any] | Callable[[], Iterable[str]]


def setting(default: Any, help: str, *, choices: Choices | None = None) -> Any:
    """A dataclass field with its help text for the reference; a list or dict default is copied per instance.
    `choices`: the allowed values where they are not the field's Literal type."""
    metadata = {"help": " ".join(help.split()), "choices": choices}
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Setting:
    """One key of `rlhf.toml` as declared: where it is (`section` is "" at the top level), its type as
    written in the code, its default, its allowed values (None: any value of its type) and its help."""

    section: str
    name: str
    type: str
    default: Any
    allowed: tuple[str, ...] | None
    help: str

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}" if self.section else self.name


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return "str"
    if typing.get_origin(hint) is list:
        return f"list[{_type_name(typing.get_args(hint)[0])}]"
    return getattr(hint, "__name__", str(hint))


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of a dataclass (the modules use `from __future__ import annotations`)."""
    return typing.get_type_hints(cls)


def allowed_values(cls: type, field: dataclasses.Field) -> tuple[str, ...] | None:
    """The values `field` of dataclass `cls` accepts, or None when any value of its type goes. A table of kinds
    is read now, so an entry registered since (a plugin's) is allowed."""
    hint = _hints(cls)[field.name]
    if typing.get_origin(hint) is Literal:
        return typing.get_args(hint)
    source = field.metadata.get("choices")
    if source is None:
        return None
    return tuple(source() if callable(source) else source)


def _default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def entry_class(hint: Any) -> type | None:
    """The dataclass of one entry of a list-of-tables key (`list[RewardFunctionConfig]`: `[[reward.functions]]`),
    else None."""
    if typing.get_origin(hint) is list:
        (arg,) = typing.get_args(hint)
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def field_hint(cls: type, name: str) -> Any:
    """The resolved type of field `name` of dataclass `cls`."""
    return _hints(cls)[name]


def table_lists(config_cls: type) -> Iterator[tuple[str, str, type]]:
    """(section, key, entry class) of every list-of-tables key of a config dataclass (`reward`, `functions`,
    `RewardFunctionConfig`)."""
    for section, cls, field in _fields(config_cls):
        if (entry := entry_class(_hints(cls)[field.name])) is not None:
            yield section, field.name, entry


def entry_settings(entry_cls: type, section: str) -> Iterator[Setting]:
    """Every key of one entry of a list of tables, as `Setting`s under `section` (e.g. "reward.functions")."""
    for field in dataclasses.fields(entry_cls):
        yield Setting(section=section, name=field.name, type=_type_name(_hints(entry_cls)[field.name]),
                      default=_default(field), allowed=allowed_values(entry_cls, field),
                      help=field.metadata.get("help", ""))


@functools.cache
def _fields(config_cls: type) -> tuple[tuple[str, type, dataclasses.Field], ...]:
    """(section, section class, field) of every key: the top-level keys first, then each section's."""
    hints = _hints(config_cls)
    fields = dataclasses.fields(config_cls)
    top = [("", config_cls, f) for f in fields if not dataclasses.is_dataclass(hints[f.name])]
    tables = [(f.name, hints[f.name]) for f in fields if dataclasses.is_dataclass(hints[f.name])]
    return tuple(top + [(name, cls, f) for name, cls in tables for f in dataclasses.fields(cls)])


def declared_settings(config_cls: type) -> Iterator[Setting]:
    """Every key of a config dataclass (`Config`): its top-level keys first, then each section's, in the order
    the code declares them."""
    for section, cls, field in _fields(config_cls):
        yield Setting(section=section, name=field.name, type=_type_name(_hints(cls)[field.name]),
                      default=_default(field), allowed=allowed_values(cls, field), help=field.metadata.get("help", ""))


def declared_choices(config_cls: type) -> Iterator[tuple[str, str, tuple[str, ...]]]:
    """(section, name, allowed values) of every key that declares them ("" section: top level), for the checks."""
    for section, cls, field in _fields(config_cls):
        if (allowed := allowed_values(cls, field)) is not None:
            yield section, field.name, allowed

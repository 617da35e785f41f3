"""The one table class every kind of thing is registered in (STYLE.md 12): an ordered name -> entry map
with messages that list what is known, a temporary registration for tests, and lazy references
("package.module:attribute") from an entry to the code that does its work, so reading a table never
imports the model stack."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownKind(ValueError):
    """A name that is not in its table; the message lists the names that are."""


def spoken_list(names: list[str] | tuple[str, ...], last: str = "or") -> str:
    """("a", "b", "c") -> "a, b or c"; one name alone; "" for none."""
    names = list(names)
    if len(names) <= 1:
        return "".join(names)
    return f"{', '.join(names[:-1])} {last} {names[-1]}"


def resolve(reference: str) -> Any:
    """The object a "package.module:attribute" reference names (imported on first use)."""
    module, _, attribute = reference.partition(":")
    if not module or not attribute:
        raise ValueError(f"{reference!r} is not a reference of the form package.module:attribute")
    target: Any = importlib.import_module(module)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target


class Registry(MutableMapping[str, T], Generic[T]):
    """Entries of one kind by name, in registration order. An entry may be any object with a `name`
    (`add`), or any value stored under a name (`table[name] = value`, e.g. a factory)."""

    def __init__(self, kind: str, entries: tuple[T, ...] | list[T] = ()) -> None:
        self.kind = kind  # what one entry is, for messages: "policy algorithm", "job kind", ...
        self._entries: dict[str, T] = {}
        for entry in entries:
            self.add(entry)

    def add(self, entry: T) -> T:
        name = getattr(entry, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"a {self.kind} entry needs a non-empty `name`")
        self[name] = entry
        return entry

    def __setitem__(self, name: str, entry: T) -> None:
        self._entries[name] = entry

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self, where: Callable[[T], bool] | None = None) -> tuple[str, ...]:
        """The names, in registration order; only those whose entry passes `where` when given."""
        return tuple(n for n, e in self._entries.items() if where is None or where(e))

    def require(self, name: str, where: Callable[[T], bool] | None = None, *, what: str | None = None) -> T:
        """The entry of `name`, or UnknownKind naming the known ones (among those passing `where`)."""
        known = self.names(where)
        if name not in known:
            raise UnknownKind(f"unknown {what or self.kind} {name!r} (known: {', '.join(known) or 'none'})")
        return self._entries[name]

    @contextmanager
    def registered(self, entry: T) -> Iterator[T]:
        """Register `entry` for the length of a `with` block (tests), then restore what was there."""
        name = entry.name  # type: ignore[attr-defined]
        before = self._entries.get(name)
        self.add(entry)
        try:
            yield entry
        finally:
            if before is None:
                self._entries.pop(name, None)
            else:
                self._entries[name] = before

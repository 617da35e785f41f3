"""Who asks for an action, and the one audit call every action makes.

An action is requested from a shell (`rlhf ...`: the actor is `cli:<login name>`), from the operator
page (the operator's username and client address) or by the worker itself (`auto`, e.g. automatic
rounds). `ActionRefused` carries the sentence both front ends show: why, and what to do.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from typing import Any

from storage import Database, record_audit


class ActionRefused(ValueError):
    """An action that cannot run now; the message says why and what to do."""


@dataclass(frozen=True)
class Actor:
    name: str  # a username, "cli:<login>" or "auto"
    via: str  # "cli", "operator" or "auto" (rlhf_core.registry.REQUESTERS)
    address: str = ""  # the page's client address

    @classmethod
    def shell(cls) -> Actor:
        """The person running `rlhf` in a shell: `cli:<login name>` (`cli` where the name is unknown)."""
        try:
            return cls(f"cli:{getpass.getuser()}", "cli")
        except (KeyError, OSError):  # no user name in the environment or password database
            return cls("cli", "cli")

    @classmethod
    def operator(cls, username: str, address: str = "") -> Actor:
        return cls(username, "operator", address)


def audit(db: Database, actor: Actor, action: str, **params: Any) -> None:
    """One audit row: who, from where, did `action` with `params`."""
    record_audit(db, actor.name, action, address=actor.address, **params)

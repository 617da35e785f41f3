"""Keeping the best version: `rlhf rollback --to N` and the operator console's Rollback make policy version N the one
that is served and that the next round starts from. Nothing is deleted: newer versions stay, with their files and
figures, and may be made current again. Refused, with one sentence and nothing changed: an unknown version, a
reward-model version, the version already current, or while a round (or any training) is queued or running."""

from __future__ import annotations

import re

from rlhf_core.registry import training_kinds
from rlhf_core.service.actor import ActionRefused, Actor, audit
from storage import (
    Database,
    PolicyVersion,
    active_job,
    current_policy,
    get_policy,
    list_policies,
    retire_open_pairs,
    set_current_policy,
    update_policy_metrics,
    utcnow,
)

_POLICY = re.compile(r"v?(\d+)")
_REWARD = re.compile(r"(?:rm|r|reward)-?v?(\d+)")


def parse_version(target: str | int) -> int:
    """A policy version number from "3" or "v3"; ActionRefused for a reward-model version ("rm3") or nonsense."""
    text = str(target).strip().lower()
    if (match := _POLICY.fullmatch(text)) is not None:
        return int(match.group(1))
    if (match := _REWARD.fullmatch(text)) is not None:
        raise ActionRefused(f"{target} is a reward-model version; rollback chooses the policy version that is served "
                            "and trained from next (give v0, v1, ...)")
    raise ActionRefused(f"{target!r} is not a policy version; give its number, e.g. 3 or v3")


def rollback(db: Database, target: str | int, actor: Actor) -> PolicyVersion:
    """Make policy version `target` current; audited. Open pairs of the versions it leaves behind (newer than the
    target, outside its lineage) are closed, so the page serves the target's pairs."""
    number = parse_version(target)
    version = get_policy(db, number)
    if version is None:
        known = ", ".join(f"v{v.id}" for v in list_policies(db))
        raise ActionRefused(f"there is no policy version {number} (versions: {known})")
    for kind in training_kinds():
        running = active_job(db, kind)
        if running is not None:
            raise ActionRefused(f"a {kind} job is under way (job #{running.id}, {running.status}): roll back once it "
                                "is done or failed, so it does not build on the version you leave")
    before = current_policy(db)
    if before.id == version.id:
        raise ActionRefused(f"v{version.id} is already the current version; nothing changed")
    set_current_policy(db, version.id)
    update_policy_metrics(db, version.id, {"rollback": {"by": actor.name, "at": utcnow().strftime("%Y-%m-%d %H:%M"),
                                                        "from": before.id}})
    left = [v.id for v in list_policies(db) if v.id > version.id]
    closed = retire_open_pairs(db, left)
    audit(db, actor, "rollback", to=version.id, **{"from": before.id, "open_pairs_closed": closed})
    return version

"""What an export request must be before anything is loaded or written: a known version of the asked
kind, a format that fits it, an empty (or `--overwrite`) `--out`. Imports only the database layer, so
a refused request costs no model libraries (and their warnings) and prints one line."""

from __future__ import annotations

from pathlib import Path

from storage import (
    Database,
    PolicyVersion,
    RewardModelVersion,
    current_policy,
    current_reward_model,
    get_policy,
    get_reward_model,
    list_policies,
    list_reward_models,
)

WHATS = ("policy", "reward")
FORMATS = ("merged", "peft")


class ModelExportError(ValueError):
    """An export that cannot be done as asked; the message says why and what to do instead."""


def _versions_text(ids: list[int], kind: str) -> str:
    return f"{kind} versions: " + (", ".join(f"v{i}" for i in ids) if ids else "none yet")


def resolve_version(db: Database, what: str, version: str | int | None) -> PolicyVersion | RewardModelVersion:
    """The version `--version` names ("latest"/None: the newest) of the `what` kind, or ModelExportError."""
    latest = version is None or str(version).strip().lower() == "latest"
    if not latest and not str(version).strip().lstrip("v").isdigit():
        raise ModelExportError(f"--version must be a version number or 'latest', not {version!r}")
    if what == "policy":
        if latest:
            return current_policy(db)
        number = int(str(version).strip().lstrip("v"))
        found = get_policy(db, number)
        if found is None:
            other = f" (reward model v{number} exists: add --what reward)" if get_reward_model(db, number) else ""
            ids = [v.id for v in list_policies(db)]
            raise ModelExportError(f"policy version {number} does not exist{other}; {_versions_text(ids, 'policy')}")
        return found
    if latest:
        found = current_reward_model(db)
        if found is None:
            raise ModelExportError("no reward model yet: train one first (rlhf train-rm or rlhf round)")
        return found
    number = int(str(version).strip().lstrip("v"))
    found = get_reward_model(db, number)
    if found is None:
        other = f" (policy v{number} exists: use --what policy)" if get_policy(db, number) else ""
        ids = [v.id for v in list_reward_models(db)]
        raise ModelExportError(f"reward model version {number} does not exist{other}; "
                               f"{_versions_text(ids, 'reward model')}")
    return found


def check_request(out: Path, what: str, fmt: str, overwrite: bool) -> None:
    if what not in WHATS:
        raise ModelExportError(f"--what must be policy or reward, not {what!r}")
    if fmt not in FORMATS:
        raise ModelExportError(f"--format must be merged or peft, not {fmt!r}")
    if what == "reward" and fmt == "peft":
        raise ModelExportError("the reward model exports as one directory (merged LoRA + its head + modeling "
                               "code); leave out --format peft")
    if out.exists() and not out.is_dir():
        raise ModelExportError(f"--out {out} is a file; name a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ModelExportError(f"--out {out} exists and is not empty; choose another directory or add --overwrite")


def check_fit(found: PolicyVersion | RewardModelVersion, what: str, fmt: str) -> None:
    """A version the asked format cannot express: the base model (v0) has no adapter to export as PEFT."""
    if what == "policy" and fmt == "peft" and not found.adapter_path:
        raise ModelExportError(f"policy v{found.id} is the base model itself and has no adapter: export it with "
                               "--format merged, or use the base model directory")

"""What an export request must be before anything is loaded or written: a known version of the asked
kind, a format that fits it, a dtype we write, an empty (or `--overwrite`) `--out`; and which dtype the
weights get (`export_dtype`). Imports only the database layer, so a refused request costs no model
libraries (and their warnings) and prints one line."""

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
# "auto": the precision the loop decodes in (`rlhf_core.models.generation.decoding_dtype`).
DTYPES = ("auto", "float32", "bfloat16")


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


def check_request(out: Path, what: str, fmt: str, overwrite: bool, dtype: str = "auto") -> None:
    """ModelExportError for a request that is wrong whatever the version: kind, format, dtype, `--out`."""
    if what not in WHATS:
        raise ModelExportError(f"--what must be policy or reward, not {what!r}")
    if fmt not in FORMATS:
        raise ModelExportError(f"--format must be merged or peft, not {fmt!r}")
    if dtype not in DTYPES:
        raise ModelExportError(f"--dtype must be auto (the precision the loop decodes in), float32 or bfloat16, "
                               f"not {dtype!r}")
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


ROUNDED = ("; merged into bfloat16 weights, LoRA changes smaller than their rounding step are lost, while the loop "
           "keeps the adapter beside them, so a greedy answer can part from the loop's where two tokens are nearly "
           "tied: --dtype float32 is the policy as trained")


def export_dtype(asked: str, what: str, fmt: str, loop: str, settings: str = "") -> tuple[str, str]:
    """(dtype, why) of an export's weights: the merged policy follows the precision the loop decodes in
    (`loop`, e.g. "bfloat16", from the workspace's `settings` as the card shows them), so the model you
    try is the model you export; a PEFT adapter and a reward model stay float32, as the loop holds them,
    unless `--dtype` names another."""
    decodes = "the precision the loop decodes in" + (f" ({settings})" if settings else "")
    if what == "policy" and fmt == "merged":
        if asked == "auto":
            return loop, decodes + (ROUNDED if loop == "bfloat16" else "")
        if asked == loop:
            return asked, f"as asked (--dtype), {decodes}"
        return asked, (f"as asked (--dtype); the loop decodes in {loop}, so a greedy answer can part from the "
                       "loop's where two tokens are nearly tied")
    held = ("the adapter as the loop trains and holds it" if what == "policy" else
            "the weights the loop's scoring passes read (the loop never decodes with a reward model)")
    if asked in ("auto", "float32"):
        return "float32", held + (f"; the loop decodes in {loop}" if what == "policy" else "")
    return asked, (f"as asked (--dtype); float32 is {held}"
                   + ("; the head stays float32" if what == "reward" else ""))

"""`rlhf export-model`: check the request, write the version into a temporary sibling of `--out`, add
the model card, rename it into place, and record the export in the audit log.

Nothing is written until the request is known to be good (the version exists and is of the asked
kind, `--out` is empty or `--overwrite` was given), and the directory at `--out` only ever appears
complete: a crash or a kill leaves, at most, a hidden `.NAME.tmp-*` sibling, which a later export of
the same name removes once it is an hour old.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf_core.model_export.card import (
    DEFAULT_BASE_HUB_ID,
    MERGED_USAGE,
    PEFT_USAGE,
    REWARD_USAGE,
    CardFacts,
    model_card,
    num,
    pct,
)
from rlhf_core.model_export.request import (  # noqa: F401 - ModelExportError: callers catch it from here
    ModelExportError,
    check_fit,
    check_request,
    export_dtype,
    resolve_version,
)
from rlhf_core.model_export.writers import (
    load_export_stack,
    lora_settings,
    write_merged_policy,
    write_peft_policy,
    write_reward_model,
)
from rlhf_core.models.generation import decoding_dtype, dtype_name
from rlhf_core.models.loading import DEFAULT_MODEL, pick_device, resolve_model_dir
from rlhf_core.models.stack import LoraSettings
from rlhf_core.service.dashboard import rounds_table
from rlhf_core.training.workspace_stack import use_4bit
from rlhf_core.workspace import Workspace
from storage import (
    Database,
    PolicyVersion,
    RewardModelVersion,
    count_judgments,
    get_reward_model,
    record_audit,
)

STALE_TMP_SECONDS = 3600.0


@dataclass
class ModelExportResult:
    path: Path
    what: str
    fmt: str
    version: int
    weights: str  # the precision sentence the card carries
    seconds: float
    dtype: str = "float32"  # of the written weights: "float32" or "bfloat16"


def export_model(ws: Workspace, db: Database, out: Path, *, what: str = "policy", fmt: str = "merged",
                 version: str | int | None = None, overwrite: bool = False, actor: str = "cli",
                 address: str = "", dtype: str = "auto") -> ModelExportResult:
    """Write a version in the ecosystem's formats (see the module docstring); returns where and what.
    `dtype`: "auto" (the precision the loop decodes in, for a merged policy; see `export_dtype`),
    "float32" or "bfloat16"."""
    import torch

    started = time.perf_counter()
    out = Path(out).expanduser().resolve()
    check_request(out, what, fmt, overwrite, dtype)
    found = resolve_version(db, what, version)
    check_fit(found, what, fmt)
    cfg = ws.config
    device = pick_device(cfg.model.device)
    loop = dtype_name(decoding_dtype(cfg.model.generation, cfg.model.precision, device))
    chosen, why = export_dtype(dtype, what, fmt, loop, f'model.generation = "{cfg.model.generation}", '
                                                      f'model.precision = "{cfg.model.precision}" on {device}')
    torch_dtype = getattr(torch, chosen)
    model_dir = resolve_model_dir(cfg.model.name, ws.model_cache_dir())
    metrics = json.loads(found.metrics_json or "{}")
    quantized = metrics.get("base_4bit")
    if quantized is None:  # versions trained before the precision was recorded: the workspace's rule
        quantized = use_4bit(ws, device)
    adapter = Path(found.adapter_path) if found.adapter_path else None
    policy_lora = LoraSettings(cfg.policy.lora_r, cfg.policy.lora_alpha, cfg.policy.lora_dropout)
    reward_lora = LoraSettings(cfg.reward.lora_r, cfg.reward.lora_alpha, cfg.reward.lora_dropout)
    if adapter is not None and what == "policy":
        policy_lora = lora_settings(adapter, policy_lora)
    if adapter is not None and what == "reward":
        reward_lora = lora_settings(adapter, reward_lora)

    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.tmp-*"):  # left by an export that was killed (an hour ago or more)
        if time.time() - stale.stat().st_mtime > STALE_TMP_SECONDS:
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        # A bfloat16 merge starts from the base as the loop's passes store it, so it rounds as the loop's copy does.
        stack = load_export_stack(model_dir, quantize_4bit=bool(quantized), device=cfg.model.device,
                                  policy_lora=policy_lora, reward_lora=reward_lora,
                                  precision=cfg.model.precision if chosen == "bfloat16" else "fp32")
        weights = (f"{chosen}, merged into the base de-quantized from its 4-bit NF4 weights (those the loop trained "
                   f"on)" if quantized else f"{chosen} (the base model's weights with the LoRA merged in)")
        if what == "reward":
            stack.load_adapter("reward", adapter)
            write_reward_model(stack, tmp, max_length=cfg.reward.max_length, dtype=torch_dtype)
            facts = _reward_facts(found, cfg.model.name, model_dir, weights, out)
        else:
            if adapter is not None:
                stack.load_adapter("policy", adapter)
            if fmt == "peft":
                weights = (f"LoRA adapter ({chosen}), trained on the base loaded in 4-bit NF4: load the base with "
                           "BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type='nf4', "
                           "bnb_4bit_use_double_quant=True) to reproduce the loop's outputs exactly"
                           if quantized else f"LoRA adapter ({chosen}) for the base model's own weights")
                write_peft_policy(stack, tmp, dtype=torch_dtype)
            else:
                sampling = {k: getattr(cfg.sampling, k) for k in ("temperature", "top_p", "max_new_tokens")}
                write_merged_policy(stack, tmp, adapter="policy" if adapter is not None else None,
                                    sampling=sampling, dtype=torch_dtype)
            facts = _policy_facts(db, found, fmt, cfg.model.name, model_dir, weights, out)
        facts.facts.insert([label for label, _ in facts.facts].index("Weights") + 1, ("Dtype", f"{chosen}: {why}"))
        (tmp / "README.md").write_text(model_card(facts), encoding="utf-8")
        _move_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    record_audit(db, actor, "export_model", address=address, what=what, format=fmt, version=found.id,
                 out=str(out), overwrite=overwrite, dtype=chosen)
    return ModelExportResult(path=out, what=what, fmt=fmt, version=found.id, weights=weights,
                             seconds=time.perf_counter() - started, dtype=chosen)


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished export to `out`; an existing `out` (with --overwrite) is moved aside first and
    removed only once the new one is in place."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{time.time_ns()}")
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _base_name(model_name: str, model_dir: Path) -> str:
    return DEFAULT_BASE_HUB_ID if model_name == DEFAULT_MODEL else str(model_dir)


def _policy_facts(db: Database, version: PolicyVersion, fmt: str, model_name: str, model_dir: Path, weights: str,
                  out: Path) -> CardFacts:
    row: dict[str, Any] = next((r for r in rounds_table(db) if r["version"] == version.id), {})
    metrics = json.loads(version.metrics_json or "{}")
    # The KL to the base is logged apart when the round's reference was another version; else the two are one.
    kl_base = row.get("kl_base_per_token") if row.get("kl_base_per_token") is not None else row.get("kl_per_token")
    rm = get_reward_model(db, metrics["rm_version"]) if metrics.get("rm_version") else None
    rm_metrics = json.loads(rm.metrics_json or "{}") if rm else {}
    facts = [
        ("Version", f"policy v{version.id}" + (f" (parent v{version.parent_id})" if version.parent_id is not None
                                                else " (the base model)")),
        ("Algorithm", version.algorithm), ("Round", str(version.round)),
        ("Created (UTC)", version.created_at.strftime("%Y-%m-%d %H:%M")),
        ("Base model", f"{_base_name(model_name, model_dir)} (`{model_dir}`)"),
        ("Weights", weights),
        ("Judgments in the workspace when it was made", str(count_judgments(db, before=version.created_at))),
        ("KL to the base (nats/token)", num(kl_base)),
        ("Mean reward (reward model's scale)", num(row.get("reward_mean"))),
        ("Mean response length (tokens)", num(row.get("response_length"), 3)),
        ("Human win rate vs the base", pct(row.get("human_win_rate"), row.get("win_rate_judgments"))),
    ]
    if rm is not None:
        facts += [
            ("Reward model of its round", f"v{rm.id}, trained on {rm.trained_on} judgments"),
            ("Reward model held-out accuracy", pct(rm.heldout_accuracy, rm_metrics.get("n_heldout"))),
            ("Reward model calibration error (ECE)", num(rm_metrics.get("heldout_calibration_error"), 3)),
        ]
    usage = (PEFT_USAGE.format(dir=out, base=model_dir, quantized="The adapter was trained on a 4-bit base; see "
                               "Weights above." if "4-bit" in weights else "")
             if fmt == "peft" else MERGED_USAGE.format(dir=out))
    return CardFacts(title=f"Policy v{version.id} ({version.algorithm}, round {version.round})", what="policy",
                     fmt=fmt, base_model=_base_name(model_name, model_dir), algorithm=version.algorithm,
                     facts=facts, usage=usage)


def _reward_facts(version: RewardModelVersion, model_name: str, model_dir: Path, weights: str,
                  out: Path) -> CardFacts:
    metrics = json.loads(version.metrics_json or "{}")
    facts = [
        ("Version", f"reward model v{version.id}"),
        ("Created (UTC)", version.created_at.strftime("%Y-%m-%d %H:%M")),
        ("Base model", f"{_base_name(model_name, model_dir)} (`{model_dir}`)"),
        ("Weights", weights),
        ("Trained on", f"{version.trained_on} judgments ({metrics.get('n_heldout', 'n/a')} held out by prompt)"),
        ("Held-out accuracy", pct(version.heldout_accuracy, metrics.get("n_heldout"))),
        ("Held-out loss", num(version.heldout_loss)),
        ("Calibration error (ECE of σ(r_a − r_b))", num(metrics.get("heldout_calibration_error"), 3)),
        ("Head", f"{metrics.get('ensemble', 1)} member(s) reading the {metrics.get('pooling', 'last')} of layers at "
                 f"depths {metrics.get('feature_depths', [1.0])}"),
    ]
    return CardFacts(title=f"Reward model v{version.id}", what="reward", fmt="reward",
                     base_model=_base_name(model_name, model_dir), algorithm=None, facts=facts,
                     usage=REWARD_USAGE.format(dir=out))

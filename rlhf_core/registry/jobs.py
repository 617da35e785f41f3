"""Job kinds: the work the worker takes from the `Job` table. One entry each; the worker's dispatch, the
queue's one-training-at-a-time rule (storage is told the training kinds), the action service's refusal rules
and who may request a kind, the operator page's training-job picker and the docs read this table.

- `run(worker, job, params, on_progress) -> metrics` does the job in the worker (`loop.jobs`);
- `follow(worker, params)` is a data-parallel non-main process's share of it (None: it waits);
- `refuse(ws, db, params) -> reason | None` holds the rules under which a request is refused, the same
  for the CLI, the operator page (`service.jobs.request_job`) and automatic rounds;
- `requested_by`: who may queue it: "cli" (a shell on the workspace), "operator" (the operator page),
  "auto" (the worker itself, e.g. automatic rounds).
"""

from __future__ import annotations

from dataclasses import dataclass

from rlhf_core.registry.base import Registry

REQUESTERS = ("cli", "operator", "auto")


@dataclass(frozen=True)
class JobKind:
    name: str
    help: str
    run: str  # "module:function"
    trains: bool  # training jobs run one at a time across all workers, and log per-step metrics
    follow: str | None = None  # "module:function"
    refuse: str | None = None  # "module:function"
    requested_by: tuple[str, ...] = ("cli", "operator")


JOB_KINDS: Registry[JobKind] = Registry("job kind", [
    JobKind("sample", "sample pairs from the current policy", run="rlhf_core.loop.jobs:run_sample", trains=False,
            refuse="rlhf_core.loop.job_rules:refuse_sample"),
    JobKind("train_rm", "train the reward model", run="rlhf_core.loop.jobs:run_train_rm", trains=True,
            follow="rlhf_core.loop.jobs:follow_train_rm", refuse="rlhf_core.loop.job_rules:refuse_train_rm",
            requested_by=("cli",)),
    JobKind("train_policy", "update the policy (PPO, GRPO or DPO)", run="rlhf_core.loop.jobs:run_train_policy",
            trains=True, follow="rlhf_core.loop.jobs:follow_policy_update",
            refuse="rlhf_core.loop.job_rules:refuse_train_policy", requested_by=("cli",)),
    JobKind("round", "a round: reward model, policy update, next pairs", run="rlhf_core.loop.jobs:run_round",
            trains=True, follow="rlhf_core.loop.jobs:follow_round_job", refuse="rlhf_core.loop.job_rules:refuse_round",
            requested_by=("cli", "operator", "auto")),
    JobKind("eval_batch", "policy-vs-base pairs on eval prompts", run="rlhf_core.loop.jobs:run_eval_batch",
            trains=False, refuse="rlhf_core.loop.job_rules:refuse_eval_batch"),
    JobKind("train_sft", "supervised fine-tuning on the demonstrations (stage 1)",
            run="rlhf_core.loop.jobs:run_train_sft", trains=True, refuse="rlhf_core.loop.job_rules:refuse_train_sft"),
    JobKind("judge", "an AI judge labels pairs, each in both orders (`rlhf judge run`)",
            run="rlhf_core.loop.jobs:run_judge", trains=False, refuse="rlhf_core.loop.job_rules:refuse_judge",
            requested_by=("cli", "operator", "auto")),
    JobKind("train_prm", "train the process reward model on the step labels",
            run="rlhf_core.loop.jobs:run_train_prm", trains=True, refuse="rlhf_core.loop.job_rules:refuse_train_prm"),
])


def training_kinds() -> tuple[str, ...]:
    """The job kinds that train (and log per-step metrics), in the table's order."""
    return JOB_KINDS.names(lambda k: k.trains)

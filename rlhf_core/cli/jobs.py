"""`rlhf` commands that queue work for the worker: sampling, training, rounds, evaluation batches, and the job
list. A request goes through the action service (`rlhf_core.service.jobs`: the operator page's rules and audit),
then runs here until done, so the command shows progress and exits with the job's outcome; with `--queue` it is
only queued, as the operator page's button does, and a worker (`rlhf serve`, `rlhf worker`) takes it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from rlhf_core.cli.app import DbOpt, WorkspaceOpt, algo_option, app, open_db, shell

AlgoOpt = algo_option()
QueueOpt = Annotated[bool, typer.Option("--queue", help="Only queue the job (as the operator page's button does); a "
                                                        "worker takes it: `rlhf serve` starts one, or `rlhf worker`")]


@app.command()
def sample(
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    pairs: Annotated[int | None, typer.Option(help="Pairs to create (default: sampling.pool_refill_pairs)")] = None,
    per_prompt: Annotated[int | None, typer.Option(help="Responses per prompt, >= 2")] = None,
    split: Annotated[str, typer.Option(help="Prompt split to sample for")] = "train",
) -> None:
    """Sample response pairs from the current policy for prompts that need them."""
    from rlhf_core.loop.sampling import sample_pairs
    from rlhf_core.training.workspace_stack import load_stack

    ws, database = open_db(workspace, db)
    typer.echo(f"Loading model {ws.config.model.name} ...")
    stack = load_stack(ws)
    result = sample_pairs(ws, database, stack, n_pairs=pairs, per_prompt=per_prompt, split=split)
    if result.prompts == 0:
        typer.echo("No prompts need pairs: import prompts with `rlhf prompts import FILE`.")
        return
    typer.echo(
        f"Policy v{result.policy_version}: {result.samples} responses for {result.prompts} prompts -> "
        f"{result.pairs} pairs ({result.identical_skipped} identical and {result.empty_skipped} empty responses "
        "not paired)."
    )


def run_job_now(workspace: Path | None, db: str | None, kind: str, params: dict[str, Any], queue: bool = False) -> None:
    """Request a job through the action service and work the queue in this process until it has finished;
    print its outcome (a refusal or a failure: one `error:` line, exit 1). With `queue`, only queue it."""
    from rlhf_core.service.jobs import request_job

    ws, database = open_db(workspace, db)
    job = request_job(ws, database, kind, params, shell())  # a refusal prints before any model code loads
    if queue:
        typer.echo(f"Job #{job.id} ({kind}) queued: a worker takes it (`rlhf serve` starts one, or run `rlhf worker`);"
                   " follow it with `rlhf jobs list`.")
        return
    from rlhf_core.loop.worker import Worker

    typer.echo(f"Job #{job.id} ({kind}) queued; running it here. {expected_duration(database, kind)}")
    done = Worker(ws, database, progress=True).run_until_done(job.id)
    if done.status == "failed":
        typer.echo(f"error: job #{done.id} failed: {done.error.splitlines()[0] if done.error else 'unknown'}", err=True)
        raise typer.Exit(1)
    metrics = json.loads(done.metrics_json)
    typer.echo(f"Job #{done.id} done: " + ", ".join(f"{k}={_fmt(v)}" for k, v in metrics.items()))


def expected_duration(database, kind: str) -> str:  # noqa: ANN001
    """A sentence on how long this kind of job took last time in this workspace (the best estimate we have)."""
    from storage import last_finished_job

    last = last_finished_job(database, kind)
    if last is None:
        return "No earlier run to estimate from: the progress bars below show an ETA."
    seconds = (last.finished_at - last.started_at).total_seconds()
    took = f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"
    return f"Expected: about {took}, as the last {kind} job (#{last.id}) took."


def _fmt(value) -> str:  # noqa: ANN001
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@app.command("train-rm")
def train_rm(workspace: WorkspaceOpt = None, db: DbOpt = None, queue: QueueOpt = False) -> None:
    """Retrain the LoRA reward model on all judgments (Bradley-Terry; ties and both-bad left out)."""
    run_job_now(workspace, db, "train_rm", {}, queue)


@app.command("train-sft")
def train_sft(workspace: WorkspaceOpt = None, db: DbOpt = None, queue: QueueOpt = False) -> None:
    """Fine-tune the policy on the demonstrations (stage 1; loss on answer tokens only): a policy version "sft"."""
    run_job_now(workspace, db, "train_sft", {"algo": "sft"}, queue)


@app.command("train-policy")
def train_policy(workspace: WorkspaceOpt = None, db: DbOpt = None, algo: AlgoOpt = None, queue: QueueOpt = False
                 ) -> None:
    """Update the policy: PPO or GRPO against the current reward model, or DPO on this round's judged pairs."""
    run_job_now(workspace, db, "train_policy", {"algo": algo}, queue)


@app.command("round")
def round_(workspace: WorkspaceOpt = None, db: DbOpt = None, algo: AlgoOpt = None, queue: QueueOpt = False) -> None:
    """Run the training half of a round now (reward model, policy update, next pairs), or with --queue put it on the
    queue for the worker, as the operator page's button does."""
    run_job_now(workspace, db, "round", {"algo": algo}, queue)


@app.command("eval-batch")
def eval_batch(
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    prompts: Annotated[int, typer.Option(help="Eval prompts to pair policy against base on")] = 32,
    queue: QueueOpt = False,
) -> None:
    """Create policy-vs-base pairs on eval prompts, so annotators measure the human win rate."""
    run_job_now(workspace, db, "eval_batch", {"prompts": prompts}, queue)


jobs_app = typer.Typer(no_args_is_help=True, help="Inspect and retry jobs.")
app.add_typer(jobs_app, name="jobs")


@jobs_app.command("list")
def jobs_list(workspace: WorkspaceOpt = None, db: DbOpt = None,
              limit: Annotated[int, typer.Option(help="How many, newest first")] = 20) -> None:
    """List recent jobs: each one's attempts (a job whose worker died is queued again, up to recovery.job_attempts
    starts, after a backoff: "retry at" says when a worker may take it again)."""
    from rlhf_core.service.dashboard import job_attempt
    from storage import list_jobs

    _, database = open_db(workspace, db)
    typer.echo(f"{'id':>5}  {'kind':<13}{'status':<9}{'progress':>9}  {'attempt':<22}message")
    for j in list_jobs(database, limit):
        message = (j.error or j.message or "").splitlines()[0][:70] if (j.error or j.message) else ""
        typer.echo(f"{j.id:>5}  {j.kind:<13}{j.status:<9}{j.progress:>8.0%}  {job_attempt(j):<22}{message}")


@jobs_app.command("retry")
def jobs_retry(job_id: int, workspace: WorkspaceOpt = None, db: DbOpt = None) -> None:
    """Queue a failed job again."""
    from rlhf_core.service.jobs import retry

    _, database = open_db(workspace, db)
    job = retry(database, job_id, shell())
    typer.echo(f"Queued job #{job.id} ({job.kind}) as a retry of #{job_id}.")


@app.command()
def rollback(
    to: Annotated[str, typer.Option("--to", help="The policy version to make current: 3 or v3")],
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
) -> None:
    """Make policy version N the one that is served and that the next round starts from (nothing is deleted)."""
    from rlhf_core.service.versions import rollback as roll_back

    _, database = open_db(workspace, db)
    before = _current(database)
    version = roll_back(database, to, shell())
    typer.echo(f"Policy v{version.id} is current (was v{before}): annotators get its pairs, the next round starts "
               "from it.")


def _current(database) -> int:  # noqa: ANN001
    from storage import current_policy

    return current_policy(database).id

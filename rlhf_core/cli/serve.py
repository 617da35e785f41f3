"""The long-running commands: `rlhf serve` (labeling app, pool sampler, and a worker process unless
--no-worker) and `rlhf worker`, with their shutdown.

SIGTERM (systemd, `docker stop`) and SIGINT (Ctrl-C) stop `rlhf serve` in order: the web server
finishes the requests in flight (an acknowledged judgment is committed before it is acknowledged),
the worker is asked to stop and waited for, and the process exits 0. A worker stops at the same
signals, putting a job it was running back on the queue while it has attempts left (`recovery.job_attempts`;
else marking it failed: retry it with `rlhf jobs retry ID`), and exits by itself when the `rlhf serve` that
started it is gone (even after `kill -9`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from rlhf_core.cli.app import DbOpt, VerboseOpt, WorkspaceOpt, app, open_db, open_ws, route_logs

if TYPE_CHECKING:
    from rlhf_core.workspace import Workspace
    from storage import Database

WORKER_STOP_SECONDS = 30.0  # a worker mid-job unwinds its training step; then it is killed
PARENT_CHECK_SECONDS = 1.0


@contextmanager
def stop_signals() -> Iterator[threading.Event]:
    """An event set by the first SIGTERM or SIGINT while inside (previous handlers restored after)."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda _signum, _frame: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _interrupt_main(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def exit_with_parent(parent_pid: int, interval_s: float = PARENT_CHECK_SECONDS) -> threading.Thread:
    """A daemon thread that sends this process SIGTERM once `parent_pid` is no longer its parent
    (the parent died and the process was adopted), so a worker never outlives its `rlhf serve`."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            threading.Event().wait(interval_s)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="exit-with-parent", daemon=True)
    thread.start()
    return thread


@app.command()
def worker(
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    once: Annotated[bool, typer.Option(help="Run at most one job, then exit")] = False,
    until_empty: Annotated[bool, typer.Option(help="Run queued jobs until the queue is empty, then exit")] = False,
    poll: Annotated[float, typer.Option(help="Seconds between polls of an empty queue")] = 2.0,
    stale_after: Annotated[float, typer.Option(
        help="Queue again (or fail, after recovery.job_attempts) running jobs with no heartbeat for this long (s)")
    ] = 120.0,
    parent_pid: Annotated[int | None, typer.Option(hidden=True, help="Exit when this process is gone")] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Take jobs from the queue and run them (training, sampling, rounds)."""
    route_logs(open_ws(workspace, db).root, "worker", verbose)  # before the model stack's imports log anything
    from rlhf_core.loop.worker import Worker
    from storage import list_jobs, requeue_or_fail

    # SIGTERM stops the worker the way Ctrl-C does: the job's code unwinds, then we record it.
    signal.signal(signal.SIGTERM, _interrupt_main)
    if parent_pid is not None:
        exit_with_parent(parent_pid)
    ws, database = open_db(workspace, db)
    w = Worker(ws, database, poll_seconds=poll, stale_after_seconds=stale_after)
    try:
        if once or until_empty:
            say = typer.echo if w.dp.is_main else (lambda _text: None)  # one report per launch
            while (job := w.run_once()) is not None:
                say(f"job #{job.id} {job.kind}: {job.status}")
                if once:
                    break
            else:
                say("queue empty")
            w.dp.close()  # a launch's processes leave the process group together before they exit
            return
        typer.echo(f"Worker {w.worker_id} on {database.display_url()} (Ctrl-C to stop)")
        w.run_forever()
    except KeyboardInterrupt:
        for job in list_jobs(database, limit=200):
            if job.status == "running" and job.worker_id == w.worker_id:
                after = requeue_or_fail(database, job.id, f"worker {w.worker_id} was stopped during this job",
                                        ws.config.recovery.retry_backoff_s)
                what = "queued again" if after is not None and after.status == "queued" else "marked failed"
                typer.echo(f"job #{job.id} ({job.kind}) {what}: the worker was stopped", err=True)
        typer.echo("worker stopped")


def start_worker(workspace: str, db: str | None, verbose: bool = False) -> subprocess.Popen:
    """`rlhf worker` as a child that exits by itself if this process dies (its logs: logs/worker.log)."""
    cmd = [sys.executable, "-m", "rlhf_core", "worker", "--workspace", workspace, "--parent-pid", str(os.getpid())]
    cmd += ["--verbose"] if verbose else []
    if db:
        cmd += ["--db", db]
    return subprocess.Popen(cmd)


def stop_worker(proc: subprocess.Popen, timeout_s: float = WORKER_STOP_SECONDS) -> int:
    """SIGTERM, wait, SIGKILL if it has not stopped; returns its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            typer.echo(f"worker {proc.pid} did not stop within {timeout_s:.0f} s; killing it", err=True)
            proc.kill()
    return proc.wait()


@app.command()
def serve(
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0 for all)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 7860,
    no_worker: Annotated[bool, typer.Option("--no-worker", help="Do not start a training worker process")] = False,
    verbose: VerboseOpt = False,
) -> None:
    """The labeling page (/) and the operator console (/operator/); also starts a worker unless --no-worker."""
    route_logs(open_ws(workspace, db).root, "serve", verbose)
    ws, database = open_db(workspace, db)
    run_server(ws, database, db, host=host, port=port, no_worker=no_worker, verbose=verbose)


def run_server(ws: Workspace, database: Database, db: str | None, *, host: str, port: int, no_worker: bool = False,
               on_ready: Callable[[str], None] | None = None, verbose: bool = False) -> None:
    """Serve the app, the pool sampler and (unless `no_worker`) a worker until SIGTERM/SIGINT, then stop
    them in order. `on_ready(url)` runs once the page is up (`rlhf quickstart` prints its logins there).
    Logging goes where the caller routed it (`route_logs`); `verbose` passes to the worker."""
    from labeling_app import AppServices
    from labeling_app import serve as serve_app
    from rlhf_core.loop.sampling import PoolTopper
    from rlhf_core.service.best_of_n import BestOfNPlayground
    from rlhf_core.service.playground import Playground

    topper = PoolTopper(ws, database)
    playground = Playground(ws, database, topper.model)  # "Try it" borrows the sampler's model
    best_of = BestOfNPlayground(ws, database, topper.model)  # so does best-of-N
    services = AppServices(pool_topper=topper, request_pairs=lambda n: "sampling started" if topper.request_pairs(n)
                           else "sampling is already running", sampling_progress=topper.progress,
                           try_versions=lambda prompt, versions, greedy, n: playground.answer(
                               prompt, versions, greedy=greedy, max_new_tokens=n), best_of_n=best_of.answer)
    with stop_signals() as stop:
        worker_proc = None if no_worker else start_worker(str(ws.root), db, verbose)
        if worker_proc is not None:
            typer.echo(f"Started worker process {worker_proc.pid}.")
        served = None
        try:
            topper.request_top_up()
            served = serve_app(ws, database, services, host=host, port=port, block=False, quiet=True)
            typer.echo(f"Serving on {served.url} (Ctrl-C or SIGTERM to stop)", err=False)
            if on_ready is not None:
                on_ready(served.url)
            while not stop.wait(1.0):
                if worker_proc is not None and worker_proc.poll() is not None:
                    typer.echo(f"warning: worker process {worker_proc.pid} exited with code "
                               f"{worker_proc.returncode}; jobs wait until `rlhf worker` runs", err=True)
                    worker_proc = None
        finally:
            typer.echo("Stopping: web server ...")
            if served is not None:
                served.close()
            if worker_proc is not None:
                typer.echo(f"Stopping: worker process {worker_proc.pid} ...")
                stop_worker(worker_proc)
            if topper.busy:
                typer.echo("Stopping: a pool top-up was sampling; pairs already written are kept.")
                if not topper.stop():
                    # Still inside one long native step: leave without running interpreter
                    # finalisation under a live torch thread (which can abort the process).
                    typer.echo("Stopped (the sampler did not end in time).")
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(0)
            database.dispose()
            typer.echo("Stopped.")

"""`rlhf quickstart`: one command from install to the labeling page with pairs from the model.

It makes (or reuses) a workspace with the built-in prompt set, a machine-sized profile, automatic
rounds and two accounts, then runs `rlhf serve` (`serve.run_server`) in it. Bad input (a port in use,
a directory that holds other files) is refused before anything is written.
"""

from __future__ import annotations

import errno
import secrets
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from rlhf_core.cli.app import VerboseOpt, app, route_logs

if TYPE_CHECKING:
    from rlhf_core.workspace import Workspace
    from storage import Database

DEFAULT_DIR = "rlhf-quickstart"
ACCOUNTS = (("annotator", "annotator"), ("operator", "operator"))  # (username, role)
FIRST_BATCH_PAIRS = 2  # the first pairs from one prompt's responses, before the rest (sampling.first_batch_pairs)
ROUND_EVERY = 24  # judgments between automatic rounds: a small round on a CPU profile


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def port_problem(host: str, port: int) -> str | None:
    """Why `host:port` cannot be served (in use, not an address here), or None when it can."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the web server binds it
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is in use; pick another with --port"
            return f"cannot listen on {host}:{port} ({exc.strerror}); check --host and --port"
    return None


def directory_problem(root: Path) -> str | None:
    """Why `root` cannot hold a quickstart workspace, or None (new, empty, or already a workspace)."""
    from rlhf_core.workspace import CONFIG_FILE

    if not root.exists() or (root / CONFIG_FILE).is_file():
        return None
    if not root.is_dir():
        return f"{root} is a file, not a directory; give a new or empty directory"
    if any(root.iterdir()):
        return (f"{root} is not an rlhf workspace (no {CONFIG_FILE}) and holds other files; "
                "give a new or empty directory")
    return None


@app.command()
def quickstart(
    directory: Annotated[Path, typer.Argument(help="Workspace directory (made if missing, reused if present)")]
    = Path(DEFAULT_DIR),
    host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0 for all)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 7860,
    reset_passwords: Annotated[bool, typer.Option("--reset-passwords",
                                                  help="New passwords for the quickstart accounts")] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Make or reuse a workspace with the built-in prompts and two accounts, then serve it (Ctrl-C stops)."""
    root = directory.expanduser().resolve()
    for problem in (directory_problem(root), port_problem(host, port)):
        if problem:
            _fail(problem)
    route_logs(root, "quickstart", verbose)  # libraries log to <root>/logs/quickstart.log, not the console
    from rlhf_core.cli.serve import run_server
    from rlhf_core.config import dump_config
    from rlhf_core.simulator.demo import demo_prompt_files
    from rlhf_core.workspace import init_workspace, open_workspace

    ws, created = init_workspace(root, new_profile="auto")
    if created:
        ws.config.loop.auto_round_every = ROUND_EVERY
        ws.config.sampling.first_batch_pairs = FIRST_BATCH_PAIRS
        ws.config_path.write_text(dump_config(ws.config), encoding="utf-8")
        ws = open_workspace(root)
    database = ws.database()
    imported = _import_prompts(ws, database, demo_prompt_files())
    logins = _accounts(database, reset_passwords)
    typer.echo(f"Workspace {ws.root} ({'new' if created else 'reused'}; profile {ws.config.profile}; "
               f"{imported} prompts imported; a round every {ws.config.loop.auto_round_every} judgments)")

    def ready(url: str) -> None:
        typer.echo(f"\nOpen {url} and log in:")
        for name, password in logins:
            typer.echo(f"  {name:<10} " + ("(password unchanged)" if password is None else f"password: {password}"))
        if any(p is None for _, p in logins):
            typer.echo("  (passwords were printed when they were made; "
                       f"`rlhf quickstart {directory} --reset-passwords` makes new ones)")
        else:
            typer.echo("These passwords are shown once; keep them.")
        typer.echo("The first pairs are being sampled from the model; the page shows their progress.")
        typer.echo(f"The operator console is at {url.rstrip('/')}/operator/ (log in as operator; the labeling page "
                   "links to it).")

    run_server(ws, database, None, host=host, port=port, on_ready=ready, verbose=verbose)


def _import_prompts(ws: Workspace, database: Database, files: tuple[Path, Path]) -> int:
    """The built-in train and eval prompts, once (a rerun finds them all as duplicates)."""
    from rlhf_core.data.prompt_files import read_prompt_file
    from storage import add_prompts

    limit = ws.config.labeling.max_prompt_chars
    added = 0
    for path, split in zip(files, ("train", "eval"), strict=True):
        added += add_prompts(database, read_prompt_file(path, max_prompt_chars=limit), split=split,
                             source="quickstart").added
    return added


def _accounts(database: Database, reset: bool) -> list[tuple[str, str | None]]:
    """Create the quickstart accounts (or give them new passwords with `reset`); `(name, password)`
    with the password None for an account kept as it was."""
    from storage import create_annotator, get_annotator, set_password

    logins: list[tuple[str, str | None]] = []
    for name, role in ACCOUNTS:
        password = secrets.token_urlsafe(12)
        if get_annotator(database, name) is None:
            create_annotator(database, name, password, role)
        elif reset:
            set_password(database, name, password)
        else:
            password = None
        logins.append((name, password))
    return logins

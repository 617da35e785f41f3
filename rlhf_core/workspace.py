"""A workspace: one directory with `rlhf.toml`, the SQLite file, adapters, caches and exports."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from rlhf_core.config import Config, apply_profile, dump_config, load_config, resolve_profile, validate
from storage import Database

CONFIG_FILE = "rlhf.toml"
DEFAULT_GUIDELINES = """# Labeling guidelines

Read the prompt, then both responses. Pick the response a careful expert would rather send.

- **A better / B better**: one response is more helpful, correct and honest.
- **Tie**: both are about equally good (or equally flawed in the same way).
- **Both bad**: neither response is acceptable (wrong, harmful, off-topic, or gibberish).
- **Strength**: how sure you are: slight, clear or strong.
- **Skip** when you cannot judge (e.g. outside your expertise).

Judge the content, not the position: A and B are shown in random order.
"""


class WorkspaceError(RuntimeError):
    """No workspace where one was expected; the message says to run `rlhf init`."""


@dataclass(frozen=True)
class Workspace:
    root: Path
    config: Config

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def adapters_dir(self) -> Path:
        return self.root / "adapters"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def exports_dir(self) -> Path:
        return self.root / "exports"

    @property
    def guidelines_path(self) -> Path:
        return self.root / self.config.labeling.guidelines_file

    @property
    def database_url(self) -> str:
        """The configured URL, with a relative SQLite path resolved inside the workspace."""
        url = self.config.database_url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite:///:memory:":
            return prefix + str(self.root / url[len(prefix):])
        return url

    def database(self) -> Database:
        return Database(self.database_url)

    def model_cache_dir(self) -> Path:
        """Converted models are shared between workspaces (RLHF_MODEL_CACHE) or kept in this one."""
        shared = os.environ.get("RLHF_MODEL_CACHE")
        return Path(shared).expanduser() if shared else self.cache_dir / "models"


def resolve_root(workspace: str | Path | None) -> Path:
    if workspace is None:
        workspace = os.environ.get("RLHF_WORKSPACE") or "."
    return Path(workspace).expanduser().resolve()


def open_workspace(workspace: str | Path | None = None, db_url: str | None = None) -> Workspace:
    """Open an existing workspace; `db_url` overrides the configured database for this run."""
    root = resolve_root(workspace)
    path = root / CONFIG_FILE
    if not path.is_file():
        raise WorkspaceError(f"no {CONFIG_FILE} in {root}: run `rlhf init --workspace {root}` first")
    config = load_config(path)
    if db_url:
        config = replace(config, database_url=db_url)
    return Workspace(root=root, config=config)


def init_workspace(
    workspace: str | Path | None = None, *, model: str | None = None, db_url: str | None = None,
    profile: str | None = None, new_profile: str | None = None,
) -> tuple[Workspace, bool]:
    """Create (or upgrade) a workspace. Returns it and whether it was new; never wipes data.

    `profile` ("auto", "cpu", "gpu"; see `config.PROFILES`) sizes sampling and training for the
    machine; on an existing workspace it rewrites just those settings in `rlhf.toml`.
    `new_profile` applies only when the workspace is created and no `profile` is given.
    """
    root = resolve_root(workspace)
    path = root / CONFIG_FILE
    created = not path.exists()
    if not created and profile is not None:
        config = apply_profile(load_config(path), profile)
        config.profile = resolve_profile(profile)
        path.write_text(dump_config(config), encoding="utf-8")
    if created:
        config = Config()
        if (profile or new_profile) is not None:
            apply_profile(config, profile or new_profile)
            config.profile = resolve_profile(profile or new_profile)
        if model:
            config.model.name = model if model == "default" else str(Path(model).expanduser().resolve())
        if db_url:
            config.database_url = db_url
        validate(config)
        root.mkdir(parents=True, exist_ok=True)
        path.write_text(dump_config(config), encoding="utf-8")
    ws = open_workspace(root, db_url if not created else None)
    for d in (ws.adapters_dir, ws.cache_dir, ws.exports_dir):
        d.mkdir(parents=True, exist_ok=True)
    if not ws.guidelines_path.exists():
        ws.guidelines_path.write_text(DEFAULT_GUIDELINES, encoding="utf-8")
    db = ws.database()
    try:
        db.upgrade()
        from storage import ensure_base_policy

        ensure_base_policy(db)
    finally:
        db.dispose()
    return ws, created

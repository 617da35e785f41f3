"""Shared fixtures: databases (SQLite file and, when configured, a real PostgreSQL) and tiny models."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from storage import Database, ensure_base_policy

PG_URL_ENV = "RLHF_TEST_PG_URL"


def _postgres_url() -> str | None:
    url = os.environ.get(PG_URL_ENV)
    if not url and os.environ.get("CI"):
        raise RuntimeError(f"{PG_URL_ENV} must be set in CI (scripts/test_postgres.sh starts a server)")
    return url


def _fresh_postgres(base_url: str) -> tuple[Database, str]:
    """A new, empty database on the test server, so tests never see each other's rows."""
    from sqlalchemy import create_engine, text

    from storage import normalize_url

    name = f"rlhf_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(normalize_url(base_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    prefix, _, _ = base_url.rpartition("/")
    return Database(f"{prefix}/{name}"), name


def _drop_postgres(base_url: str, name: str) -> None:
    from sqlalchemy import create_engine, text

    from storage import normalize_url

    admin = create_engine(normalize_url(base_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path):
    """A migrated, empty database: a SQLite file, then the same test against PostgreSQL."""
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'test.db'}")
        database.upgrade()
        ensure_base_policy(database)
        yield database
        database.dispose()
        return
    base = _postgres_url()
    if not base:
        pytest.skip(f"set {PG_URL_ENV} to run against PostgreSQL (scripts/test_postgres.sh starts one)")
    database, name = _fresh_postgres(base)
    database.upgrade()
    ensure_base_policy(database)
    yield database
    database.dispose()
    _drop_postgres(base, name)


@pytest.fixture
def sqlite_db(tmp_path: Path):
    database = Database(f"sqlite:///{tmp_path / 'test.db'}")
    database.upgrade()
    ensure_base_policy(database)
    yield database
    database.dispose()


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright (never `playwright install`), one per test module."""
    from browser_utils import CHROMIUM, CHROMIUM_ARGS

    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)")
    with playwright_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):  # noqa: ANN001, ANN201
    """A fresh browser context and page per test (cookies not shared), 15 s default timeout."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture
def app(tmp_path: Path):  # noqa: ANN201
    """A running labeling app with one annotator (alice) and one operator (olga); a module that needs
    other users or services defines its own `app`."""
    from browser_utils import start_app

    running = start_app(tmp_path / "ws", users={"alice": "annotator", "olga": "operator"})
    yield running
    running.close()


def shrink_for_tiny_rounds(config) -> None:  # noqa: ANN001
    """Training sizes that make a whole round on the tiny model take seconds on a CPU."""
    config.sampling.max_new_tokens = 10
    config.sampling.pool_refill_pairs = 12
    config.reward.epochs = 1
    config.policy.steps = 2
    config.policy.prompts_per_step = 2
    config.policy.group_size = 2
    config.policy.max_new_tokens = 8
    config.policy.minibatch_size = 4
    config.policy.update_epochs = 1
    # A tiny model learns little from a dozen judgments: these rounds test mechanics, so the policy update is not
    # gated on the reward model beating chance (tests/test_policy_gate.py tests the gate).
    config.loop.min_reward_confidence = 0.0
    config.loop.probe_prompts = 4  # the proxy-gain probe runs (tests/test_round_evidence.py), on few prompts
    config.policy.kl_budget = 0.0  # every step runs: a tiny model's first steps can pass the default budget's share


@pytest.fixture(scope="session")
def tiny_rounds():
    """`shrink_for_tiny_rounds`, handed to tests as a fixture (conftest is not imported directly)."""
    return shrink_for_tiny_rounds


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random causal LM with a locally trained tokenizer (built once per test session)."""
    from rlhf_core.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


def seed_judged_pairs(db, n_prompts: int, annotators: dict[str, bool]) -> None:  # noqa: ANN001
    """Pairs where the "banana" answer is right, judged by each annotator (name -> judges right or
    wrong) through `next_pair_for`, as people would."""
    import random

    from storage import add_prompts, create_annotator, list_prompts, next_pair_for, record_generations, record_judgment

    add_prompts(db, [[{"role": "user", "content": f"question {i}"}] for i in range(n_prompts)])
    rng = random.Random(1)
    for prompt in list_prompts(db):
        good, bad = f"{rng.random():.3f} banana", f"{rng.random():.3f} apple"
        record_generations(db, prompt_id=prompt.id, policy_version_id=0, responses=[(good, 3), (bad, 3)],
                           gen_params={}, pairs=[(0, 1)], judgments_wanted=len(annotators))
    for name, right in annotators.items():
        user = create_annotator(db, name, "password123")
        while (served := next_pair_for(db, user.id, rng=random.Random(name))) is not None:
            a = served.left_text if served.left_side == "a" else served.right_text
            wants_a = ("banana" in a) == right
            record_judgment(db, pair_id=served.pair_id, annotator_id=user.id, choice="a" if wants_a else "b")


@pytest.fixture(scope="session")
def judged_pairs():
    """`seed_judged_pairs`, handed to tests as a fixture."""
    return seed_judged_pairs


@pytest.fixture
def one_thread():  # noqa: ANN201
    """One torch thread for the test: tiny matmuls gain nothing from a second one, and OpenMP
    spin-waiting on a shared 2-core machine turned a 2 s training run into 40 s."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def perturb_adapter(stack, adapter: str, seed: int = 0) -> None:  # noqa: ANN001 - a ModelStack
    """A non-identity `adapter` (seeded): its LoRA B matrices start at zero."""
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in stack.model.named_parameters():
            if f".{adapter}." in name and "lora_B" in name:
                p.normal_(0, 0.05)


@pytest.fixture
def perturb():
    """`perturb_adapter`, handed to tests as a fixture."""
    return perturb_adapter


def import_kind(db, kind: str, path, *, source: str | None = None, imported_by: str = "test",  # noqa: ANN001, ANN201
                judgments_wanted: int | None = None, max_prompt_chars: int | None = None, **options):
    """An import kind's importer (the action service's, without the workspace and audit), with a default config:
    `judgments_wanted` and `max_prompt_chars` set labeling.judgments_per_pair and labeling.max_prompt_chars."""
    from rlhf_core.config import Config
    from rlhf_core.registry import IMPORT_KINDS, resolve

    config = Config()
    if judgments_wanted is not None:
        config.labeling.judgments_per_pair = judgments_wanted
    if max_prompt_chars is not None:
        config.labeling.max_prompt_chars = max_prompt_chars
    return resolve(IMPORT_KINDS[kind].importer)(db, Path(path), config=config, imported_by=imported_by, source=source,
                                                options=options)

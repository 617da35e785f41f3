"""`rlhf judge add|list|disable|run` and `rlhf status --json`'s `judges` in subprocesses, against a real
OpenAI-compatible server on loopback: a bad configuration is one `error:` line, a failing run one line naming the
judge, and the API key appears in no output, not in the database file, the job rows, the audit log, the logs (the
openai client's debug log included) or an export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from judge_helpers import SECRET, seed_pairs

from rlhf_core.simulator.judge_endpoint import JudgeBehaviour, SimulatedJudgeEndpoint, free_port
from rlhf_core.workspace import open_workspace

ROOT = Path(__file__).resolve().parent.parent
KEY = "RLHF_CLI_JUDGE_KEY"


def rlhf(*args: str, key: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENAI_LOG": "debug"}  # the client logs requests: key redacted?
    env.pop(KEY, None)
    if key:
        env[KEY] = SECRET
    return subprocess.run([sys.executable, "-m", "rlhf_core", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_judges_from_the_command_line_and_the_key_is_never_written(tmp_path) -> None:
    ws_dir = tmp_path / "ws"
    assert rlhf("init", "-w", str(ws_dir)).returncode == 0
    ws = open_workspace(ws_dir)
    for key, value in (("requests_per_second", 1000.0), ("backoff_seconds", 0.0), ("retries", 0)):
        setattr(ws.config.judges, key, value)
    from rlhf_core.config import dump_config

    ws.config_path.write_text(dump_config(ws.config))
    db = ws.database()
    seed_pairs(db, 5, controls=1)
    db.dispose()
    outputs = []
    with SimulatedJudgeEndpoint(JudgeBehaviour(accuracy=1.0)) as endpoint:
        bad = rlhf("judge", "add", "gpt", "--kind", "openai", "--base-url", endpoint.base_url, "--model", "sim",
                   "--api-key-env", SECRET, "-w", str(ws_dir))
        assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and bad.stderr.startswith("error: --api-key-env")
        missing = rlhf("judge", "add", "gpt", "--kind", "openai", "--model", "sim", "-w", str(ws_dir))
        assert missing.returncode == 1 and missing.stderr == "error: a judge of kind openai needs --base-url\n"
        added = rlhf("judge", "add", "gpt", "--kind", "openai", "--base-url", endpoint.base_url, "--model", "sim",
                     "--api-key-env", KEY, "-w", str(ws_dir))
        assert added.returncode == 0, added.stderr
        ran = rlhf("judge", "run", "gpt", "--pairs", "4", "-w", str(ws_dir))
        assert ran.returncode == 0, ran.stderr
        assert "done:" in ran.stdout and "pairs=4" in ran.stdout
        assert set(endpoint.seen.authorizations) == {f"Bearer {SECRET}"}
        unset = rlhf("judge", "run", "gpt", "-w", str(ws_dir), key=False)
        assert unset.returncode == 1
        (line,) = [x for x in unset.stderr.splitlines() if x.startswith("error:")]
        assert f"judge 'gpt': the environment variable {KEY} is not set" in line
        outputs += [bad, missing, added, ran, unset]
    down = f"http://127.0.0.1:{free_port()}/v1"
    outputs.append(rlhf("judge", "add", "offline", "--kind", "openai", "--base-url", down, "--model", "m",
                        "--api-key-env", KEY, "-w", str(ws_dir)))
    failed = rlhf("judge", "run", "offline", "-w", str(ws_dir))
    assert failed.returncode == 1 and "error: job #" in failed.stderr
    assert "judge 'offline': http://127.0.0.1" in failed.stderr and "could not be reached" in failed.stderr
    listed = rlhf("judge", "list", "-w", str(ws_dir))
    assert "gpt" in listed.stdout and "openai" in listed.stdout
    status = rlhf("status", "--json", "-w", str(ws_dir))
    figures = json.loads(status.stdout)["judges"]["gpt"]
    assert figures["control_accuracy"] == 1.0 and figures["left_bias"] == 0.5 and figures["requests"] == 8
    assert {"kappa", "kappa_ci", "shared", "eta", "crowd_left_bias", "prompt_tokens"} <= set(figures)
    assert "judge      gpt (openai)" in rlhf("status", "-w", str(ws_dir)).stdout
    disabled = rlhf("judge", "disable", "gpt", "-w", str(ws_dir))
    again = rlhf("judge", "run", "gpt", "-w", str(ws_dir))
    assert again.returncode == 1 and again.stderr == "error: Judge 'gpt' is disabled.\n"
    export = tmp_path / "export"
    exported = rlhf("export", "--out", str(export), "--format", "jsonl", "--include-ties", "-w", str(ws_dir))
    assert exported.returncode == 0, exported.stderr
    audit = rlhf("audit", "--json", "-w", str(ws_dir))
    assert '"api_key_env": "RLHF_CLI_JUDGE_KEY"' in audit.stdout  # the variable's name is audited, not its value
    outputs += [failed, listed, status, disabled, again, exported, audit]
    texts = [o.stdout + o.stderr for o in outputs]
    files = [p for p in [*ws_dir.rglob("*"), *export.rglob("*")] if p.is_file()]
    assert any(p.name.startswith("rlhf.db") for p in files)
    assert not [t for t in texts if SECRET in t]
    assert not [p for p in files if SECRET.encode() in p.read_bytes()]

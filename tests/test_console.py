"""A quiet console: `rlhf quickstart` (and the `rlhf serve` and worker it runs) print what a person
needs; library warnings and INFO logs go to logs/ in the workspace, or also to the console with
--verbose."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

from browser_utils import free_port
from process_utils import ROOT, kill_session, log_match, rlhf_process, wait_for

import storage
from rlhf_core.config import dump_config
from rlhf_core.workspace import init_workspace

# Every line quickstart may print (stdout and stderr together), start to stop.
OUR_LINES = [
    r"Workspace \S+ \((new|reused); profile \w+; \d+ prompts imported; a round every \d+ judgments\)",
    r"Started worker process \d+\.",
    r"Worker \S+ on \S+ \(Ctrl-C to stop\)",
    r"worker stopped",
    r"Serving on http://\S+ \(Ctrl-C or SIGTERM to stop\)",
    r"Open http://\S+ and log in:",
    r"  (annotator|operator)\s+password: \S+",
    r"These passwords are shown once; keep them\.",
    r"The first pairs are being sampled from the model; the page shows their progress\.",
    r"The operator console is at http://\S+/operator/ \(log in as operator; the labeling page links to it\)\.",
    r"Stopping: web server \.\.\.",
    r"Stopping: worker process \d+ \.\.\.",
    r"Stopping: a pool top-up was sampling; pairs already written are kept\.",
    r"Stopped\.",
    r"",
]


def test_quickstart_prints_only_our_lines_and_logs_the_rest(tmp_path: Path, tiny_model_dir: Path) -> None:
    qs = tmp_path / "qs"
    ws, _ = init_workspace(qs, model=str(tiny_model_dir))  # quickstart reuses it, with the tiny model
    ws.config.sampling.max_new_tokens = 8
    ws.config.sampling.pool_refill_pairs = 4
    ws.config.sampling.first_batch_pairs = 2
    ws.config_path.write_text(dump_config(ws.config), encoding="utf-8")
    console = tmp_path / "console.txt"
    proc = rlhf_process("quickstart", str(qs), "--port", str(free_port()), log=console)
    db = ws.database()
    try:
        wait_for(lambda: log_match(console, r"Open http\S+ and log in"), "quickstart ready", 120, proc, console)
        # The model has loaded (and bitsandbytes, transformers, httpx, alembic have had their say) once
        # the background sampler has written pairs.
        wait_for(lambda: storage.open_pair_count(db) > 0, "first pairs sampled", 120, proc, console)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(90) == 0, console.read_text()[-2000:]
    finally:
        db.dispose()
        if proc.poll() is None:
            kill_session(proc.pid)
    printed = console.read_text().splitlines()
    strangers = [line for line in printed if not any(re.fullmatch(p, line) for p in OUR_LINES)]
    assert strangers == [], "\n".join(printed)
    logs = {p.name: p.read_text() for p in (qs / "logs").iterdir()}
    assert set(logs) >= {"quickstart.log", "worker.log"}
    assert "alembic" in logs["quickstart.log"] or "httpx" in logs["quickstart.log"]
    # bitsandbytes' failed hub-kernel fetch is quieted where rlhf_core is imported (rlhf_core.stay_offline).
    assert "gemm_4bit_forward" not in console.read_text()


ROUTE = """
import logging, sys, warnings
from pathlib import Path
from rlhf_core.cli.app import route_logs
route_logs(Path(sys.argv[1]), "probe", verbose=sys.argv[2] == "1")
logging.getLogger("httpx").info("HTTP Request: GET http://x/ 200")
warnings.warn("a library FutureWarning", FutureWarning)
from transformers.utils import logging as hf_logging
hf_logging.get_logger("transformers.modeling_utils").warning("a transformers warning")
print("our own line")
"""


def test_library_lines_reach_the_console_only_with_verbose(tmp_path: Path) -> None:
    for verbose in ("0", "1"):
        root = tmp_path / f"ws{verbose}"
        run = subprocess.run([sys.executable, "-c", ROUTE, str(root), verbose], capture_output=True, text=True,
                             cwd=ROOT, timeout=120)
        assert run.returncode == 0, run.stderr
        assert run.stdout == "our own line\n"
        log = (root / "logs" / "probe.log").read_text()
        for line in ("HTTP Request: GET", "a library FutureWarning", "a transformers warning"):
            assert line in log
            assert (line in run.stderr) == (verbose == "1"), (verbose, run.stderr)

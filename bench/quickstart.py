"""Time `rlhf quickstart` in a fresh directory until the first pair is visible in Chromium.

    python bench/quickstart.py [--pairs 16] [--port P] [--json F]
    python bench/quickstart.py --smoke           # seconds: the same, on the tiny model, until 4 pairs

Starts `python -m rlhf_core quickstart DIR` (a new temporary directory), reads the annotator's
password it prints, logs in with Playwright (Debian's /usr/bin/chromium) and measures, from the
command's start: seconds until the page answers, until the first pair is visible, and until
`--pairs` pairs exist in the database. Targets on 2 CPU cores (the model's one-time conversion
included, when the model cache is cold): first pair < 60 s, 16 pairs < 180 s. Prints the load
average with the figures. Ends with SIGTERM and checks the command exits 0.

`--smoke`: `rlhf quickstart` has no model option (it always makes its workspace on the default model),
so the smoke run makes the workspace first, on the tiny model with small sampling sizes, and the
command reuses it; the page, the login and the wait for the first pair are the real ones.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this tree's rlhf_core and storage, before any installed copy
sys.path.insert(1, str(ROOT / "tests"))  # browser_utils: Chromium's settings and what the page shows

from _smoke import add_smoke_option, apply_smoke, tiny_model_dir  # noqa: E402  (bench/_smoke.py)

TARGET_FIRST_S = 60.0
TARGET_PAIRS_S = 180.0
SMOKE_SAMPLING = {"max_new_tokens": 8, "per_prompt": 2, "batch_size": 8, "first_batch_pairs": 2,
                  "pool_refill_pairs": 4}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(condition, what: str, timeout_s: float, proc: subprocess.Popen, log: Path) -> float:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return time.monotonic()
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    sys.exit(f"{what}: not within {timeout_s:.0f} s\n{log.read_text()[-3000:]}")


def smoke_workspace(directory: Path) -> None:
    """The workspace a smoke run's quickstart reuses: the tiny model, responses of a few tokens, small batches."""
    from rlhf_core.cli.quickstart import ROUND_EVERY
    from rlhf_core.config import dump_config
    from rlhf_core.workspace import init_workspace

    ws, _ = init_workspace(directory, model=str(tiny_model_dir()), new_profile="auto")
    ws.config.loop.auto_round_every = ROUND_EVERY  # as quickstart sets it in the workspaces it makes
    for key, value in SMOKE_SAMPLING.items():
        setattr(ws.config.sampling, key, value)
    ws.config_path.write_text(dump_config(ws.config), encoding="utf-8")


def first_pair_seen(url: str, password: str, timeout_s: float, log: Path) -> float:
    """Log in as the annotator in Chromium and wait until a pair is on screen; the time it showed."""
    from browser_utils import CHROMIUM, CHROMIUM_ARGS, PAIR_SHOWN, login
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            login(page, url, "annotator", password)
            page.wait_for_selector(PAIR_SHOWN, state="visible", timeout=timeout_s * 1000)
            return time.monotonic()
        except PlaywrightTimeout:
            sys.exit(f"first pair: {PAIR_SHOWN} (tests/browser_utils.py: PAIR_SHOWN) not visible within "
                     f"{timeout_s:.0f} s of logging in; if the page changed, update PAIR_SHOWN with it\n"
                     f"{log.read_text()[-3000:]}")
        finally:
            browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--json", type=Path, default=None)
    add_smoke_option(parser)
    args = parser.parse_args()
    apply_smoke(args, pairs=4)
    waits = (120, 120, 120) if args.smoke else (300, 600, 900)  # page up, first pair, all pairs (s)

    tmp = Path(tempfile.mkdtemp(prefix="rlhf-quickstart-bench-"))
    directory, log = tmp / "rlhf-quickstart", tmp / "quickstart.log"
    if args.smoke:
        smoke_workspace(directory)
    port = args.port or _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "rlhf_core", "quickstart", str(directory), "--port", str(port)],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        def printed() -> re.Match | None:
            return re.search(r"^\s+annotator\s+password: (\S+)$", log.read_text(), re.M)

        t_page = _wait(printed, "page up and logins printed", waits[0], proc, log)
        t_first = first_pair_seen(f"http://127.0.0.1:{port}/", printed().group(1), waits[1], log)
        from rlhf_core.workspace import open_workspace

        db = open_workspace(directory).database()

        def enough() -> bool:
            from storage import status_counts

            return status_counts(db)["counts"]["pairs"] >= args.pairs

        t_pairs = _wait(enough, f"{args.pairs} pairs", waits[2], proc, log)
        db.dispose()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = "killed after 120 s"
        else:
            code = proc.returncode
    load = Path("/proc/loadavg").read_text().split()[:3]
    figures = {"page_up_s": round(t_page - t0, 1), "first_pair_s": round(t_first - t0, 1),
               f"pairs_{args.pairs}_s": round(t_pairs - t0, 1),
               "first_pair_vs_target": round((t_first - t0) / TARGET_FIRST_S, 2),
               "pairs_vs_target": round((t_pairs - t0) / TARGET_PAIRS_S, 2), "exit_code": code,
               "loadavg": " ".join(load), "cpus": os.cpu_count()}
    print(f"page up        {figures['page_up_s']:7.1f} s")
    print(f"first pair     {figures['first_pair_s']:7.1f} s  ({figures['first_pair_vs_target']:.2f} x the "
          f"{TARGET_FIRST_S:.0f} s target)")
    print(f"{args.pairs} pairs      {t_pairs - t0:7.1f} s  ({figures['pairs_vs_target']:.2f} x the "
          f"{TARGET_PAIRS_S:.0f} s target)")
    print(f"exit code on SIGTERM: {code}; load average {' '.join(load)}; {os.cpu_count()} CPUs; log {log}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    if code != 0:
        sys.exit(f"rlhf quickstart exited with {code} on SIGTERM (expected 0); see {log}")


if __name__ == "__main__":
    main()

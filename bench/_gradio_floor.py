"""The framework floor for bench/labeling_load.py: a trivial Gradio 6 app with login.

One `queue=False` event returning three strings, registered under the API names the labeling page
uses (`next_pair`, `judge_*`), so the same load generator drives it. It answers what our server
would cost if everything of ours (database, sessions, rendering) took no time at all.

    python bench/_gradio_floor.py --port 7999 --users bench-a,bench-b --password PW
"""

from __future__ import annotations

import argparse
import itertools

import gradio as gr

VERDICTS = ("judge_left", "judge_right", "judge_tie", "judge_both_bad")


def build(counter: itertools.count) -> gr.Blocks:
    def three_strings(token: str = "", strength: str | None = None, reason: str = "") -> tuple[str, str, str]:
        # A token in the page's format, so the load generator's parsing works unchanged.
        return "Which response is better?", f"{next(counter)}:20260101T000000000000", "Saved: floor"

    with gr.Blocks(analytics_enabled=False) as demo:
        token, strength, reason = gr.Textbox(), gr.Textbox(), gr.Textbox()
        outputs = [gr.Textbox(), gr.Textbox(), gr.Textbox()]
        fast = {"queue": False, "show_progress": "hidden"}
        demo.load(three_strings, outputs=outputs, api_name="next_pair", **fast)
        for name in VERDICTS:
            gr.Button(name).click(three_strings, inputs=[token, strength, reason], outputs=outputs, api_name=name,
                                  **fast)
    return demo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--users", required=True, help="comma-separated usernames; all share --password")
    parser.add_argument("--password", required=True)
    args = parser.parse_args(argv)
    demo = build(itertools.count(1))
    demo.launch(server_name="127.0.0.1", server_port=args.port, quiet=True, ssr_mode=False, mcp_server=False,
                auth=[(name, args.password) for name in args.users.split(",")], show_error=False)


if __name__ == "__main__":
    main()

"""Write the reference pages that are generated from the code:

- docs/reference/configuration.md: every key of `rlhf.toml`, from the declarations in rlhf_core/config;
- docs/reference/cli.md: every `rlhf` command and subcommand with its arguments and options, from the typer app.

docs/reference/status.md (the keys of `rlhf status --json`) is written by hand, since what a key means is not in
the code; tests/test_docs.py checks it against the JSON of a real workspace, and these two pages against what
this script makes now.

    python scripts/gen_docs.py           # write the pages
    python scripts/gen_docs.py --check   # exit 1 naming each stale page, writing nothing
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONFIGURATION_PAGE = Path("docs/reference/configuration.md")
CLI_PAGE = Path("docs/reference/cli.md")


def _cell(text: str) -> str:
    from rlhf_core.config.reference import markdown_cell

    return markdown_cell(text)


def _paragraphs(text: str) -> str:
    """A command's help as Markdown paragraphs (click's `\\b` no-rewrap markers dropped)."""
    blocks = [" ".join(block.replace("\b", "").split()) for block in (text or "").split("\n\n")]
    return "\n\n".join(b.replace("<", "&lt;").replace("*", "\\*") for b in blocks if b)


def _default(param: Any) -> str:
    if param.required:
        return "required"
    if param.show_default is False or param.default is None or param.param_type_name == "argument":
        return ""
    if param.is_flag and param.secondary_opts:  # --x / --no-x: the spelling that is on by default
        return f"`{(param.opts if param.default else param.secondary_opts)[0]}`"
    if param.is_flag:  # a switch: off unless given
        return "on" if param.default else "off"
    if isinstance(param.default, (list, tuple)):
        return ", ".join(f"`{v}`" for v in param.default) if param.default else ""
    return f"`{param.default}`"


def _command(path: str, command: Any, context_class: Any) -> list[str]:
    ctx = context_class(command, info_name=path)
    usage = " ".join(command.collect_usage_pieces(ctx))
    lines = [f"## {path}", "", _paragraphs(command.help), "", "```", f"{path} {usage}".rstrip(), "```", ""]
    params = [p for p in command.params if not p.hidden and p.name != "help"]
    if params:
        lines += ["| argument / option | default | help |", "| --- | --- | --- |"]
        for p in params:
            record = p.get_help_record(ctx)
            spelled = record[0] if record else p.name
            lines.append(f"| `{spelled}` | {_default(p)} | {_cell(p.help or '')} |")
        lines.append("")
    return lines


def cli_reference() -> str:
    """The Markdown page: every command of `rlhf --help` in its order, groups followed by their subcommands."""
    os.environ.pop("RLHF_PLUGINS", None)  # the reference shows the project's own kinds, not this shell's plugins
    import typer

    from rlhf_core.cli.main import load_commands
    from rlhf_core.config.reference import GENERATED_NOTE

    root = typer.main.get_command(load_commands())  # every command module, as the console script registers them
    context_class = root.context_class
    lines = ["# Command line reference", "", GENERATED_NOTE, "",
             "One console script, `rlhf` (or `python -m rlhf_core`). Every command that works on a workspace takes "
             "`--workspace DIR` (`-w`; default `$RLHF_WORKSPACE` or the current directory) and `--db URL`. "
             "`rlhf COMMAND --help` prints the same as this page.", ""]
    groups = []
    for name, command in root.commands.items():
        if getattr(command, "commands", None):
            groups.append((name, command))
        elif not command.hidden:
            lines += _command(f"rlhf {name}", command, context_class)
    for name, group in groups:
        lines += [f"## rlhf {name}", "", _paragraphs(group.help), ""]
        lines += [f"- [`rlhf {name} {sub}`](#rlhf-{name}-{sub})" for sub in group.commands] + [""]
        for sub, command in group.commands.items():
            if not command.hidden:
                lines += _command(f"rlhf {name} {sub}", command, context_class)
    return "\n".join(lines).rstrip("\n") + "\n"


def pages() -> dict[Path, str]:
    """Each generated page (path relative to the repository) and its text as the code makes it now."""
    from rlhf_core.config.reference import configuration_reference

    return {CONFIGURATION_PAGE: configuration_reference(), CLI_PAGE: cli_reference()}


def stale_pages(root: Path = ROOT) -> list[Path]:
    """The generated pages whose committed text differs from what the code makes now."""
    return [path for path, text in pages().items()
            if not (root / path).is_file() or (root / path).read_text(encoding="utf-8") != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only say which pages are stale (exit 1 if any)")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_pages()
        for path in stale:
            print(f"{path} is stale: run python scripts/gen_docs.py", file=sys.stderr)
        return 1 if stale else 0
    for path, text in pages().items():
        (ROOT / path).parent.mkdir(parents=True, exist_ok=True)
        (ROOT / path).write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # this tree's packages, wherever the installed copy lives
    sys.exit(main())

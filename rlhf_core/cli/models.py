"""`rlhf` commands for the trained models themselves: export a version in the ecosystem's formats
(`export-model`) and look at what versions answer (`generate`)."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path
from typing import Annotated

import typer

from rlhf_core.cli.app import DbOpt, WorkspaceOpt, app, open_db, shell
from rlhf_core.registry import BEST_OF_N_SCORERS


@app.command("export-model")
def export_model(
    out: Annotated[Path, typer.Option("--out", help="Directory to write (must be empty, or --overwrite)")],
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    version: Annotated[str, typer.Option(help="Version number, or 'latest'")] = "latest",
    what: Annotated[str, typer.Option(help="policy or reward")] = "policy",
    fmt: Annotated[str, typer.Option("--format", help="policy: merged (a full model directory) or peft "
                                                      "(a LoRA adapter)")] = "merged",
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --out")] = False,
    dtype: Annotated[str, typer.Option(help="Weights: auto (a merged policy in the precision the loop decodes "
                                            "in; adapters and reward models float32), float32 or bfloat16")]
    = "auto",
) -> None:
    """Write a policy or reward-model version as transformers, peft, TRL and vLLM load it, with a model card."""
    from rlhf_core.model_export.request import check_fit, check_request, resolve_version

    ws, database = open_db(workspace, db)
    check_request(out.expanduser().resolve(), what, fmt, overwrite, dtype)  # before any model library loads
    found = resolve_version(database, what, version)
    check_fit(found, what, fmt)
    from rlhf_core.model_export.service import export_model

    typer.echo(f"Exporting {what} v{found.id} ({'reward model' if what == 'reward' else fmt}) ...")
    result = export_model(ws, database, out, what=what, fmt=fmt, version=version, overwrite=overwrite,
                          actor=shell().name, dtype=dtype)
    typer.echo(f"Wrote {what} v{result.version} to {result.path} in {result.seconds:.1f} s ({result.weights}).")
    typer.echo(f"Model card: {result.path / 'README.md'}")


def _columns(left: str, right: str, width: int) -> list[str]:
    """Two texts side by side, each wrapped to half the terminal."""
    half = max(20, (width - 3) // 2)
    a = [line for para in left.splitlines() or [""] for line in (textwrap.wrap(para, half) or [""])]
    b = [line for para in right.splitlines() or [""] for line in (textwrap.wrap(para, half) or [""])]
    rows = max(len(a), len(b))
    a += [""] * (rows - len(a))
    b += [""] * (rows - len(b))
    return [f"{x:<{half}} │ {y}".rstrip() for x, y in zip(a, b)]


@app.command()
def generate(
    prompt: Annotated[str | None, typer.Argument(help="The prompt (one user turn); or --file")] = None,
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    version: Annotated[str, typer.Option(help="Policy version number, or 'latest'")] = "latest",
    compare: Annotated[int | None, typer.Option(help="Another version to answer beside it (e.g. 0, the base)")] = None,
    greedy: Annotated[bool, typer.Option(help="The most likely token at each step (else sampling.temperature/top_p)")]
    = False,
    max_new_tokens: Annotated[int | None, typer.Option(help="Default: sampling.max_new_tokens")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="A prompt file (JSONL, CSV or a datasets dir)")] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per prompt and version")] = False,
    best_of: Annotated[int | None, typer.Option(help="Sample N answers and print the one --by ranks highest")] = None,
    by: Annotated[str, typer.Option(help="; ".join(f"{s.name}: {s.help}" for s in BEST_OF_N_SCORERS.values()))
                  ] = "rm",
    function: Annotated[list[str] | None, typer.Option(
        "--function", help="--by functions: a reward function module:function with TRL's signature (repeatable; "
                           "summed; default: the workspace's [[reward.functions]]); a --file's other fields are its "
                           "keyword columns")] = None,
) -> None:
    """Print what a policy version answers to a prompt (and, with --compare, another version beside it), or with
    --best-of N the best of N sampled answers by the reward model, the process reward model or reward functions."""
    from rlhf_core.data.prompt_files import read_prompt_file
    from rlhf_core.service.playground import prompt_conversation, resolve_versions, try_versions, version_label

    if (prompt is None) == (file is None):
        raise typer.BadParameter("give a PROMPT or --file F (one of them)")
    if not (version == "latest" or version.lstrip("v").isdigit()):
        raise typer.BadParameter("a version number or 'latest'", param_hint="--version")
    if best_of is not None:
        if compare is not None or greedy:
            raise typer.BadParameter("--best-of samples N answers of one version: not with --compare or --greedy")
        _best_of(prompt, file, workspace, db, version, best_of, by, function or [], max_new_tokens, seed, as_json)
        return
    ws, database = open_db(workspace, db)
    limit = ws.config.labeling.max_prompt_chars
    conversations = ([prompt_conversation(prompt, limit)] if prompt is not None
                     else read_prompt_file(file, max_prompt_chars=limit))
    wanted = [None if version == "latest" else int(version.lstrip("v"))] + ([compare] if compare is not None else [])
    chosen = resolve_versions(database, wanted)  # an unknown version fails before the model loads
    from rlhf_core.models.generation import dtype_name
    from rlhf_core.training.workspace_stack import load_stack

    cfg = ws.config.sampling
    stack = load_stack(ws)
    results = try_versions(stack, database, conversations, [v.id for v in chosen], greedy=greedy,
                           max_new_tokens=max_new_tokens or cfg.max_new_tokens, temperature=cfg.temperature,
                           top_p=cfg.top_p, seed=seed)
    width = shutil.get_terminal_size((100, 20)).columns
    decoded_in = dtype_name(stack.decoding_dtype)
    if not as_json:
        typer.echo(f"Decoded in {decoded_in} (model.generation = {ws.config.model.generation!r}, model.precision = "
                   f"{ws.config.model.precision!r}); `rlhf export-model` writes a merged policy in it by default.")
    for i, conversation in enumerate(conversations):
        answers = [per_version[i] for per_version in results]
        if as_json:
            for answer in answers:
                typer.echo(json.dumps({"prompt": conversation, "version": answer.version, "text": answer.text,
                                       "tokens": answer.tokens, "finish_reason": answer.finish_reason,
                                       "dtype": decoded_in}))
            continue
        if len(conversations) > 1:
            typer.echo(f"── prompt {i + 1}: {conversation[-1]['content'][:width - 16]}")
        labels = [f"{version_label(v)} ({a.tokens} tokens{', cut off' if a.finish_reason == 'length' else ''})"
                  for v, a in zip(chosen, answers)]
        if len(answers) == 1:
            typer.echo(f"[{labels[0]}]\n{answers[0].text}")
        else:
            typer.echo("\n".join(_columns(f"[{labels[0]}]\n{answers[0].text}", f"[{labels[1]}]\n{answers[1].text}",
                                          width)))


def _best_of(prompt: str | None, file: Path | None, workspace: Path | None, db: str | None, version: str, n: int,
             by: str, functions: list[str], max_new_tokens: int | None, seed: int, as_json: bool) -> None:
    """`rlhf generate --best-of N`: the kept answer of each prompt (with --json, every candidate and its score)."""
    from rlhf_core.service.best_of_n import (
        BestOfNError,
        ScoringContext,
        best_of_n,
        check_scorer,
        functions_from_references,
        read_prompts_with_columns,
    )
    from rlhf_core.service.playground import prompt_conversation, resolve_versions

    ws, database = open_db(workspace, db)
    limit = ws.config.labeling.max_prompt_chars
    if file is not None:
        conversations, columns = read_prompts_with_columns(file, limit)
    else:
        conversations, columns = [prompt_conversation(prompt, limit)], [{}]
    if functions and by != "functions":
        raise BestOfNError("--function is for --by functions")
    wanted = None if version == "latest" else int(version.lstrip("v"))
    resolve_versions(database, [wanted])
    ctx = ScoringContext(ws, database, stack=None, functions=functions_from_references(functions) if functions
                         else None)
    check_scorer(ctx, by)  # refused before the model loads
    from rlhf_core.training.workspace_stack import load_stack

    cfg = ws.config.sampling
    ctx.stack = load_stack(ws)
    results = best_of_n(ctx, conversations, n=n, by=by, version=wanted, columns=columns,
                        max_new_tokens=max_new_tokens or cfg.max_new_tokens, temperature=cfg.temperature,
                        top_p=cfg.top_p, seed=seed)
    for conversation, result in zip(conversations, results):
        if as_json:
            typer.echo(json.dumps({"prompt": conversation, "version": result.version, "by": by,
                                   "chosen": result.chosen, "text": result.best.text,
                                   "candidates": [{"text": c.text, "score": c.score, "tokens": c.tokens,
                                                   "finish_reason": c.finish_reason} for c in result.candidates]}))
            continue
        scores = ", ".join("—" if c.score is None else f"{c.score:.3g}" for c in result.candidates)
        typer.echo(f"── v{result.version}, best of {n} by {by} (candidate {result.chosen + 1}; scores {scores})")
        typer.echo(result.best.text)

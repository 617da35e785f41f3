"""`rlhf export-model` on a tiny model after a real policy update, loaded back by plain transformers,
peft and TRL in processes that never import rlhf-loop: the same greedy tokens and log-probs as the
loop's own passes, the same rewards; model cards; bad requests refused with nothing written; an
interrupted export leaves nothing at --out; the weights' dtype (`--dtype`); `rlhf generate`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from process_utils import ROOT

import storage
from rlhf_core.config import dump_config
from rlhf_core.loop.worker import Worker
from rlhf_core.model_export.request import ROUNDED
from rlhf_core.model_export.service import ModelExportError, export_model
from rlhf_core.models.batching import build_sequences, prompt_token_ids, response_token_ids
from rlhf_core.models.generation import decoding_dtype, dtype_name, native_bf16
from rlhf_core.service.playground import try_versions
from rlhf_core.simulator.simulate import simulate_annotators
from rlhf_core.training.workspace_stack import activate_policy, activate_reward_model, load_stack
from rlhf_core.workspace import init_workspace

PROMPTS = ["say something about item 3", "Tell me a story.", "What is two plus two?", "Why is the sky blue?"]
CONTINUATION = "The model writes a short poem today."
# A subprocess that must not import the project (nor peft, for the merged model): it reads a request
# as JSON on stdin and prints what the exported model computes as JSON on stdout.
NOT_IMPORTED = "bad = [m for m in sys.modules if m.split('.')[0] in FORBIDDEN]; assert not bad, bad"
MERGED_SCRIPT = """
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
FORBIDDEN = {"rlhf_core", "storage", "labeling_app", "peft"}
req = json.load(sys.stdin)
tok = AutoTokenizer.from_pretrained(req["dir"])
if req.get("peft"):
    from peft import PeftModel
    FORBIDDEN.discard("peft")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(req["base"]), req["dir"]).eval()
else:
    model = AutoModelForCausalLM.from_pretrained(req["dir"], dtype="auto").eval()  # the saved dtype
out = {"greedy": [], "logprobs": [], "dtype": str(model.dtype).removeprefix("torch.")}
for prompt in req["prompts"]:
    ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    n = ids["input_ids"].shape[1]
    gen = model.generate(**ids, do_sample=False, max_new_tokens=req["max_new_tokens"])
    out["greedy"].append(gen[0, n:].tolist())
    full = torch.tensor([ids["input_ids"][0].tolist() + req["continuation"]])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=full).logits.float(), dim=-1)[0, n - 1:-1]
    out["logprobs"].append(logp.gather(1, torch.tensor(req["continuation"])[:, None])[:, 0].tolist())
""" + NOT_IMPORTED + "\nprint(json.dumps(out))\n"
REWARD_SCRIPT = """
import json, sys
from transformers import AutoModelForSequenceClassification, AutoTokenizer
FORBIDDEN = {"rlhf_core", "storage", "labeling_app", "peft"}
req = json.load(sys.stdin)
model = AutoModelForSequenceClassification.from_pretrained(req["dir"], trust_remote_code=True).eval()
tok = AutoTokenizer.from_pretrained(req["dir"], trust_remote_code=True)
scores = model.score_texts(tok, req["prompts"], req["responses"])
""" + NOT_IMPORTED + "\nprint(json.dumps(scores))\n"


def run_script(script: str, request: dict) -> object:
    """Run `script` in a fresh interpreter outside the project directory; its printed JSON."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", script], input=json.dumps(request), capture_output=True, text=True,
                          env=env, cwd="/", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def train_a_version(root: Path, model_dir: Path, tiny_rounds, *, quantize: bool = False):  # noqa: ANN001, ANN202
    """A workspace whose policy v1 came out of a real GRPO round (a high learning rate, so its greedy
    answers move away from the base's) with reward model v1 beside it."""
    ws, _ = init_workspace(root, model=str(model_dir))
    tiny_rounds(ws.config)
    ws.config.model.precision, ws.config.model.generation = "fp32", "adapter"  # exact passes to compare with
    ws.config.model.quantize_4bit = "true" if quantize else "false"
    ws.config.policy.learning_rate = 0.05
    ws.config_path.write_text(dump_config(ws.config))
    db = ws.database()
    storage.add_prompts(db, [[{"role": "user", "content": f"say something about item {i}"}] for i in range(16)])
    worker = Worker(ws, db, poll_seconds=0.01)
    assert worker.run_until_done(storage.enqueue_job(db, "sample", {"pairs": 12}).id, timeout=300).status == "done"
    simulate_annotators(db, annotators=2, judgments=12, gold="longer", seed=1, progress=False)
    done = worker.run_until_done(storage.enqueue_job(db, "round", {"algo": "grpo"}).id, timeout=600)
    assert done.status == "done", done.error
    return ws, db


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir, tiny_rounds):  # noqa: ANN001, ANN201
    ws, db = train_a_version(tmp_path_factory.mktemp("export") / "ws", tiny_model_dir, tiny_rounds)
    stack = load_stack(ws)
    yield ws, db, stack
    db.dispose()


def loop_view(stack, db, version: int, max_new_tokens: int = 10) -> dict:  # noqa: ANN001
    """The loop's own greedy tokens and teacher-forced log-probs of CONTINUATION for `version`."""
    convs = [[{"role": "user", "content": p}] for p in PROMPTS]
    (greedy,) = try_versions(stack, db, convs, [version], greedy=True, max_new_tokens=max_new_tokens)
    activate_policy(stack, db, version)
    tok = stack.tokenizer
    cont = tok(CONTINUATION, add_special_tokens=False)["input_ids"]
    batch = build_sequences([prompt_token_ids(tok, c) for c in convs], [cont] * len(convs), tok.pad_token_id)
    with torch.no_grad(), stack.use("policy"):
        logp, _ = stack.token_logprobs(batch.input_ids, batch.attention_mask)
    logprobs = [logp[i][batch.response_mask[i].bool()].tolist() for i in range(len(convs))]
    activate_policy(stack, db)
    return {"greedy": [r.token_ids for r in greedy], "logprobs": logprobs, "continuation": cont}


def test_merged_policy_is_the_loops_policy_in_plain_transformers(trained, tmp_path) -> None:
    ws, db, stack = trained
    result = export_model(ws, db, tmp_path / "merged", actor="test")
    assert result.version == 1 and result.path == (tmp_path / "merged").resolve()
    files = {p.name for p in result.path.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer_config.json",
            "README.md"} <= files
    ours = loop_view(stack, db, 1)
    base = loop_view(stack, db, 0)
    assert ours["greedy"] != base["greedy"], "the update must have moved the policy, or this test proves nothing"
    theirs = run_script(MERGED_SCRIPT, {"dir": str(result.path), "prompts": PROMPTS, "max_new_tokens": 10,
                                        "continuation": ours["continuation"]})
    assert theirs["greedy"] == ours["greedy"]
    for a, b in zip(theirs["logprobs"], ours["logprobs"]):
        assert a == pytest.approx(b, abs=1e-4)
    config = json.loads((result.path / "config.json").read_text())
    assert "quantization_config" not in config and config["use_cache"] is True
    generation = json.loads((result.path / "generation_config.json").read_text())
    assert (generation["temperature"], generation["top_p"], generation["top_k"]) == (
        ws.config.sampling.temperature, ws.config.sampling.top_p, 0)
    events = storage.audit_events(db, action="export_model")
    assert events and events[0].params["out"] == str(result.path) and events[0].actor == "test"


def test_peft_adapter_loads_with_peft_on_the_base_directory(trained, tmp_path) -> None:
    ws, db, stack = trained
    result = export_model(ws, db, tmp_path / "adapter", fmt="peft")
    adapter_config = json.loads((result.path / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(stack.model_dir)
    assert (result.path / "adapter_model.safetensors").is_file()
    ours = loop_view(stack, db, 1)
    theirs = run_script(MERGED_SCRIPT, {"dir": str(result.path), "base": str(stack.model_dir), "peft": True,
                                        "prompts": PROMPTS, "max_new_tokens": 10, "continuation": ours["continuation"]})
    assert theirs["greedy"] == ours["greedy"]
    for a, b in zip(theirs["logprobs"], ours["logprobs"]):
        assert a == pytest.approx(b, abs=1e-4)


def test_exported_reward_model_scores_as_the_loop_does(trained, tmp_path) -> None:
    ws, db, stack = trained
    result = export_model(ws, db, tmp_path / "reward", what="reward")
    assert (result.path / "rlhf_reward.py").is_file()
    responses = ["The model writes a short poem.", "A small cat likes the river today.", "", "Yes. " * 40]
    theirs = run_script(REWARD_SCRIPT, {"dir": str(result.path), "prompts": PROMPTS, "responses": responses})
    activate_reward_model(stack, db)
    tok = stack.tokenizer
    convs = [[{"role": "user", "content": p}] for p in PROMPTS]
    batch = build_sequences([prompt_token_ids(tok, c) for c in convs], [response_token_ids(tok, r) for r in responses],
                            tok.pad_token_id)
    with torch.no_grad():
        ours = stack.reward(batch.input_ids, batch.attention_mask, batch.response_mask).tolist()
    assert theirs == pytest.approx(ours, abs=1e-4)
    assert max(ours) - min(ours) > 1e-3  # distinct responses score apart: the comparison has teeth


def test_reward_function_trains_a_trl_grpo_step(trained, tmp_path, tiny_model_dir) -> None:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    import rlhf_core

    ws, db, _ = trained
    result = export_model(ws, db, tmp_path / "reward", what="reward")
    reward = rlhf_core.reward_function(result.path, device="cpu")
    scores = reward(["Tell me a story."], [[{"role": "assistant", "content": "Once upon a time."}]])
    assert len(scores) == 1 and isinstance(scores[0], float)
    assert reward(["Tell me a story."], ["Once upon a time."]) == pytest.approx(scores, abs=1e-6)
    seen = []

    def recording(prompts, completions, **kwargs):  # noqa: ANN001, ANN003, ANN202
        rewards = reward(prompts, completions, **kwargs)
        seen.extend(rewards)
        return rewards

    args = GRPOConfig(output_dir=str(tmp_path / "trl"), max_steps=1, per_device_train_batch_size=2, num_generations=2,
                      max_completion_length=6, report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True,
                      logging_steps=1, learning_rate=1e-3)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), reward_funcs=recording,
                          args=args, processing_class=tokenizer,
                          train_dataset=Dataset.from_list([{"prompt": [{"role": "user", "content": p}]}
                                                           for p in PROMPTS]))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert len(seen) == 2 and trainer.state.global_step == 1
    assert any(not torch.equal(before[n], p.detach()) for n, p in trainer.model.named_parameters())


def test_model_card_is_hub_yaml_with_the_versions_figures(trained, tmp_path) -> None:
    ws, db, stack = trained
    policy = export_model(ws, db, tmp_path / "p")
    card = (policy.path / "README.md").read_text()
    _, header, body = card.split("---\n", 2)
    meta = yaml.safe_load(header)
    assert meta["base_model"] == str(stack.model_dir) and meta["library_name"] == "transformers"
    assert {"rlhf", "grpo"} <= set(meta["tags"]) and "license" not in meta
    version = storage.get_policy(db, 1)
    rm = storage.current_reward_model(db)
    metrics = json.loads(version.metrics_json)
    assert "policy v1 (parent v0)" in body and "| Algorithm | grpo |" in body
    assert f"{100 * rm.heldout_accuracy:.1f}%" in body and f"trained on {rm.trained_on} judgments" in body
    assert f"{metrics['kl_per_token']:.4g}" in body
    assert "Human win rate vs the base | not measured" in body
    reward = export_model(ws, db, tmp_path / "r", what="reward")
    meta = yaml.safe_load((reward.path / "README.md").read_text().split("---\n")[1])
    assert meta["pipeline_tag"] == "text-classification" and "reward-model" in meta["tags"]


def rlhf(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlhf_core", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


@pytest.mark.parametrize(("args", "says"), [
    (["--version", "7"], "policy version 7 does not exist"),
    (["--what", "reward", "--version", "0"], "policy v0 exists: use --what policy"),
    (["--version", "0", "--format", "peft"], "is the base model itself and has no adapter"),
    (["--dtype", "fp16"], "--dtype must be auto (the precision the loop decodes in), float32 or bfloat16, not 'fp16'"),
])
def test_bad_requests_are_one_error_line_and_write_nothing(trained, tmp_path, args, says) -> None:
    ws, _, _ = trained
    out = tmp_path / "out"
    done = rlhf("export-model", "-w", str(ws.root), "--out", str(out), *args)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and done.stderr.startswith("error: ")
    assert says in done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"what": "reward", "version": "9"}, "reward model version 9 does not exist"),
    ({"what": "reward", "fmt": "peft"}, "leave out --format peft"),
    ({"fmt": "gguf"}, "--format must be merged or peft"),
    ({"version": "two"}, "--version must be a version number or 'latest'"),
    ({"what": "value"}, "--what must be policy or reward"),
    ({"dtype": "bf16"}, "--dtype must be auto"),
])
def test_the_service_refuses_the_same_way(trained, tmp_path, kwargs, says) -> None:
    ws, db, _ = trained
    with pytest.raises(ModelExportError, match=says):
        export_model(ws, db, tmp_path / "out", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_a_bad_dtype_is_refused_before_any_model_library_loads(trained, tmp_path) -> None:
    ws, _, _ = trained
    code = ("import sys\nfrom rlhf_core.cli import main\nsys.argv = ['rlhf', 'export-model', '-w', sys.argv[1], "
            "'--out', sys.argv[2], '--dtype', 'half']\ntry:\n    main()\nexcept SystemExit as exit:\n"
            "    print(exit.code, sorted({'transformers', 'peft'} & set(sys.modules)))\n")
    done = subprocess.run([sys.executable, "-c", code, str(ws.root), str(tmp_path / "out")], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert done.stdout.strip() == "1 []", done.stderr
    assert done.stderr.strip() == ("error: --dtype must be auto (the precision the loop decodes in), float32 or "
                                   "bfloat16, not 'half'")
    assert list(tmp_path.iterdir()) == []


def tensor_dtypes(path: Path) -> dict[str, set[str]]:
    """{"model" or "score" or "lora": the dtypes of those tensors} in a safetensors file, as written."""
    from safetensors import safe_open

    found: dict[str, set[str]] = {}
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():
            part = "lora" if "lora_" in key else key.split(".")[0] if key.startswith("score.") else "model"
            found.setdefault(part, set()).add(dtype_name(f.get_tensor(key).dtype))
    return found


@pytest.mark.parametrize(("what", "fmt", "asked", "written"), [
    ("policy", "merged", "auto", "float32"),  # this workspace decodes in float32 (fp32 passes through the adapter)
    ("policy", "merged", "bfloat16", "bfloat16"),
    ("policy", "merged", "float32", "float32"),
    ("policy", "peft", "auto", "float32"),
    ("policy", "peft", "bfloat16", "bfloat16"),
    ("reward", "merged", "auto", "float32"),
    ("reward", "merged", "bfloat16", "bfloat16"),
])
def test_the_written_weights_config_and_card_have_the_chosen_dtype(trained, tmp_path, what, fmt, asked,
                                                                    written) -> None:
    ws, db, _ = trained
    result = export_model(ws, db, tmp_path / "out", what=what, fmt=fmt, dtype=asked)
    assert result.dtype == written and result.weights.startswith(("LoRA adapter (" if fmt == "peft" else "") + written)
    weights = result.path / ("adapter_model.safetensors" if fmt == "peft" else "model.safetensors")
    dtypes = tensor_dtypes(weights)
    if fmt == "peft":
        assert dtypes == {"lora": {written}}
    else:
        assert dtypes["model"] == {written}
        config = json.loads((result.path / "config.json").read_text())
        assert config.get("dtype", config.get("torch_dtype")) == written
    if what == "reward":
        assert dtypes["score"] == {"float32"}  # the head reads float32 features in any dtype
        assert config["base_config"]["dtype"] == written
    card = (result.path / "README.md").read_text()
    assert f"| Dtype | {written}: " in card
    if what == "policy" and fmt == "merged":
        assert ("the precision the loop decodes in" in card) == (written == "float32")
    assert storage.audit_events(db, action="export_model")[0].params["dtype"] == written


def test_a_bfloat16_reward_model_loads_in_plain_transformers_and_scores_near_the_loop(trained, tmp_path) -> None:
    ws, db, stack = trained
    result = export_model(ws, db, tmp_path / "reward", what="reward", dtype="bfloat16")
    responses = ["The model writes a short poem.", "A small cat likes the river today.", "", "Yes. " * 40]
    theirs = run_script(REWARD_SCRIPT, {"dir": str(result.path), "prompts": PROMPTS, "responses": responses})
    activate_reward_model(stack, db)
    tok = stack.tokenizer
    convs = [[{"role": "user", "content": p}] for p in PROMPTS]
    batch = build_sequences([prompt_token_ids(tok, c) for c in convs], [response_token_ids(tok, r) for r in responses],
                            tok.pad_token_id)
    with torch.no_grad():
        ours = stack.reward(batch.input_ids, batch.attention_mask, batch.response_mask).tolist()
    assert theirs == pytest.approx(ours, abs=0.05)


@pytest.mark.parametrize(("generation", "precision"), [("adapter", "fp32"), ("adapter", "bf16"), ("merged", "bf16"),
                                                       ("merged", "fp32")])
def test_auto_is_the_precision_the_loop_decodes_in_and_decodes_as_the_loop_does(trained, tmp_path, generation,
                                                                                  precision) -> None:
    """`--dtype auto` follows model.generation / model.precision; with the merged copy in float32, the exported
    model in plain transformers answers greedily token for token as `rlhf generate` does. (In bfloat16 the
    export merges the adapter into the weights, which rounds small LoRA changes away, while the loop keeps
    them beside the weights: answers can part where two tokens are nearly tied, and the card says so.)"""
    ws, db, _ = trained
    saved = ws.config.model.generation, ws.config.model.precision
    ws.config.model.generation, ws.config.model.precision = generation, precision
    try:
        result = export_model(ws, db, tmp_path / "out")
        expected = {("adapter", "fp32"): "float32", ("adapter", "bf16"): "bfloat16"}.get(
            (generation, precision), "bfloat16" if native_bf16(torch.device("cpu")) else "float32")
        assert result.dtype == expected == dtype_name(decoding_dtype(generation, precision, torch.device("cpu")))
        card = (result.path / "README.md").read_text()
        rounded = ROUNDED if expected == "bfloat16" else ""
        assert (f'| Dtype | {expected}: the precision the loop decodes in (model.generation = "{generation}", '
                f'model.precision = "{precision}" on cpu){rounded} |') in card
        stack = load_stack(ws)
        assert stack.decoding_dtype == getattr(torch, expected)
        if generation == "merged" and expected == "float32":
            ours = loop_view(stack, db, 1, max_new_tokens=24)
            theirs = run_script(MERGED_SCRIPT, {"dir": str(result.path), "prompts": PROMPTS, "max_new_tokens": 24,
                                                "continuation": ours["continuation"]})
            assert theirs["dtype"] == expected and theirs["greedy"] == ours["greedy"]
    finally:
        ws.config.model.generation, ws.config.model.precision = saved


def test_generate_says_the_precision_it_decoded_in(trained) -> None:
    from typer.testing import CliRunner

    from rlhf_core.cli.main import load_commands

    app = load_commands()  # the commands register as their modules load; alone, this test loads none before
    ws, _, _ = trained
    args = ["generate", "-w", str(ws.root), "--greedy", "--max-new-tokens", "4", PROMPTS[0]]
    text = CliRunner().invoke(app, args)
    assert text.exit_code == 0, text.output
    assert text.stdout.splitlines()[0] == ("Decoded in float32 (model.generation = 'adapter', model.precision = "
                                           "'fp32'); `rlhf export-model` writes a merged policy in it by default.")
    rows = CliRunner().invoke(app, [*args, "--json"])
    assert rows.exit_code == 0, rows.output
    assert [json.loads(line)["dtype"] for line in rows.stdout.splitlines()] == ["float32"]


def test_a_non_empty_out_needs_overwrite_and_overwrite_replaces_it(trained, tmp_path) -> None:
    ws, db, _ = trained
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ModelExportError, match="exists and is not empty"):
        export_model(ws, db, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    export_model(ws, db, out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary or old copies left


def test_a_killed_export_leaves_no_directory_at_out(trained, tmp_path) -> None:
    ws, _, _ = trained
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "rlhf_core", "export-model", "-w", str(ws.root), "--out", str(out)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".out.tmp-*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(tmp_path.glob(".out.tmp-*")), "the export finished before it could be killed"
    assert not out.exists()


@pytest.mark.slow  # subprocesses that load models: ~16 s on 2 cores (CI runs the slow suite too)
def test_generate_prints_two_versions_side_by_side(trained) -> None:
    ws, db, stack = trained
    done = rlhf("generate", "-w", str(ws.root), "--greedy", "--compare", "0", "--max-new-tokens", "6", "--json",
                PROMPTS[0])
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [r["version"] for r in rows] == [1, 0]
    ours = loop_view(stack, db, 1, max_new_tokens=6)
    assert rows[0]["tokens"] == len(ours["greedy"][0]) and rows[0]["finish_reason"] in ("eos", "length")
    assert [r["dtype"] for r in rows] == ["float32", "float32"]
    text = rlhf("generate", "-w", str(ws.root), "--greedy", "--compare", "0", "--max-new-tokens", "6", PROMPTS[0])
    assert "v1 · grpo · round 1" in text.stdout and "v0 · base" in text.stdout and "│" in text.stdout
    bad = rlhf("generate", "-w", str(ws.root), "--version", "5", "hello")
    assert bad.returncode == 1 and bad.stderr.startswith("error: policy version 5 does not exist")


def test_a_4bit_workspace_exports_from_its_dequantized_base(tmp_path, tiny_model_dir, tiny_rounds) -> None:
    """The 4-bit NF4 base is de-quantized for the merge: the exported float model computes what the loop's
    4-bit passes computed, up to the matmul's rounding."""
    ws, db = train_a_version(tmp_path / "ws", tiny_model_dir, tiny_rounds, quantize=True)
    try:
        assert json.loads(storage.get_policy(db, 1).metrics_json)["base_4bit"] is True
        stack = load_stack(ws)
        assert stack.quantized
        result = export_model(ws, db, tmp_path / "merged")
        assert "4-bit NF4" in result.weights and "4-bit NF4" in (result.path / "README.md").read_text()
        ours = loop_view(stack, db, 1)
        theirs = run_script(MERGED_SCRIPT, {"dir": str(result.path), "prompts": PROMPTS, "max_new_tokens": 10,
                                            "continuation": ours["continuation"]})
        for a, b in zip(theirs["logprobs"], ours["logprobs"]):
            assert a == pytest.approx(b, abs=1e-3)
        assert theirs["greedy"] == ours["greedy"]
    finally:
        db.dispose()


def readme_snippets(section: str = "## Use the trained model") -> list[str]:
    """The python code blocks of README.md's section `section`, in order."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    body = text.split(section, 1)[1].split("\n## ", 1)[0]
    return [block.split("\n```", 1)[0] for block in body.split("```python\n")[1:]]


@pytest.mark.slow  # subprocesses that load models: ~16 s on 2 cores (CI runs the slow suite too)
def test_the_readmes_loading_snippets_run_as_written(trained, tmp_path) -> None:
    """The three snippets of "Use the trained model", run with the README's export paths pointing at real
    exports; only the GRPO run is shortened to one step of short answers, on the CPU in float32."""
    ws, db, _ = trained
    paths = {"exports/policy-adapter": export_model(ws, db, tmp_path / "adapter", fmt="peft").path,
             "exports/policy": export_model(ws, db, tmp_path / "policy").path,
             "exports/reward": export_model(ws, db, tmp_path / "reward", what="reward").path}
    snippets = readme_snippets()
    assert len(snippets) == 3
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for i, code in enumerate(snippets):
        for placeholder, path in paths.items():  # longest first: "exports/policy-adapter" before "exports/policy"
            code = code.replace(f'"{placeholder}"', f'"{path}"')
        code = code.replace("max_steps=100", "max_steps=1").replace("max_completion_length=64",
                                                                      "max_completion_length=8")
        code = code.replace("report_to=[]", "report_to=[], use_cpu=True, bf16=False")  # this machine has no GPU
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                              timeout=300)
        assert done.returncode == 0, f"snippet {i + 1}:\n{code}\n{done.stderr[-3000:]}"

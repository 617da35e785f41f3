"""Training the LoRA reward model on human judgments: Bradley-Terry (or Davidson's tie model) on a LoRA
trunk with K bootstrap heads, early stopping on held-out loss, and the held-out figures a round
stores (accuracy, loss, calibration). The service that runs it on a workspace is `reward_service`.

Each step scores B pairs in one forward pass, every distinct response packed once behind its prompt
(`reward_data.packed_unique_responses`), the score read per `RewardConfig.pooling`. An ensemble of K
members shares the trunk; member k weighs training example i by a Poisson(1) bootstrap count (member 0
sees every example once), so the members disagree where the data is thin, which is what active pair
selection asks about.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from rlhf_core.algorithms.preference import (
    bootstrap_weights,
    bradley_terry_loss,
    bt_accuracy,
    davidson_log_likelihood,
    fit_linear_bt,
    fit_temperature,
    margins_from_strength,
    normalized_example_weights,
    symmetric_calibration_error,
    weighted_bt_loss,
    weighted_mean_over_members,
)
from rlhf_core.config import RewardConfig
from rlhf_core.models.stack import ModelStack
from rlhf_core.training.checkpoint import (
    Checkpoint,
    Tracked,
    adapter_snapshot,
    candidate_from_state,
    candidate_state,
    fingerprint,
    restore_snapshot,
)
from rlhf_core.training.distributed import DataParallel
from rlhf_core.training.reward_data import (
    EncodedPair,
    PreferenceExample,
    encode_pairs,
    length_grouped_batches,
    packed_unique_responses,
    per_pair_values,
    prompt_grouped_batches,
)

GRAD_CLIP_NORM = 1.0


@dataclass
class HeldoutFigures:
    """The reward model on held-out decisive pairs: accuracy in [0, 1], BT loss in nats, and the
    expected calibration error of σ(r_c − r_r) (both orientations); None without held-out pairs."""

    accuracy: float | None = None
    loss: float | None = None
    calibration_error: float | None = None
    n: int = 0


@dataclass
class RewardTrainResult:
    """Outcome of one training run. `heldout` is measured on the kept (best) epoch; `train_loss`
    is the mean step loss of the last epoch; `history` has one row per optimisation step."""

    heldout: HeldoutFigures
    train_loss: float
    steps: int
    n_train: int
    n_heldout: int
    best_epoch: int
    tie_log_nu: float | None = None  # Davidson's tie parameter log ν, when ties were modelled
    probe_l2: float | None = None  # the L2 strength of the head's probe fit (head_init = "probe")
    temperature: float | None = None  # the factor the head's scores were scaled by (calibrate), or None
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def heldout_accuracy(self) -> float | None:
        return self.heldout.accuracy

    @property
    def heldout_loss(self) -> float | None:
        return self.heldout.loss


def pair_member_scores(stack: ModelStack, pairs: Sequence[EncodedPair], *, with_margin: bool = False
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Member scores of chosen and rejected ([B, K] each) from one forward pass over the B pairs, and the
    strength margins [B] (None unless `with_margin`). Each distinct (prompt, response) is computed once,
    packed with its prompt (`packed_unique_responses`): pairs of one prompt share the prompt and responses."""
    r_c, r_r = per_pair_values(pairs, stack.tokenizer.pad_token_id, stack.device, stack.packed_reward_members)
    margin = margins_from_strength([p.strength for p in pairs]).to(stack.device) if with_margin else None
    return r_c, r_r, margin


@torch.no_grad()
def score_pairs(stack: ModelStack, pairs: Sequence[EncodedPair], batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Member scores [N, K] of the chosen and the rejected side of every pair, in eval mode.

    Each distinct (prompt, response) is scored once, in rows of a prompt with all its responses
    (`packed_unique_responses`): a prompt's n samples form up to n(n-1)/2 pairs, so pairs from all of
    a prompt's candidates cost about a third of scoring them pair by pair."""
    return _read_pairs(stack, pairs, batch_size, stack.packed_reward_members)


@torch.no_grad()
def pair_features(stack: ModelStack, pairs: Sequence[EncodedPair], batch_size: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The reward head's input features [N, F] of the chosen and the rejected side, in eval mode (each
    distinct response read once, as `score_pairs` does)."""
    return _read_pairs(stack, pairs, batch_size, stack.packed_reward_features)


def _read_pairs(stack: ModelStack, pairs: Sequence[EncodedPair], batch_size: int,
                read: Callable[..., torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """`read` ([B, S, ·] per packed batch) of every pair's chosen and rejected response, in eval mode."""
    was_training = stack.model.training
    stack.model.eval()
    batches, chosen, rejected = packed_unique_responses(pairs, stack.tokenizer.pad_token_id, max(1, batch_size))
    try:
        parts = []
        for batch in batches:
            batch = batch.to(stack.device)
            parts.append(read(batch)[batch.present].float().cpu())
        values = torch.cat(parts)
    finally:
        stack.model.train(was_training)
    return values[chosen], values[rejected]


def heldout_figures(stack: ModelStack, pairs: Sequence[EncodedPair], batch_size: int) -> HeldoutFigures:
    """Accuracy, loss and calibration of the ensemble mean on the decisive pairs among `pairs`."""
    decisive = [p for p in pairs if not p.tie]
    if not decisive:
        return HeldoutFigures()
    r_c, r_r = score_pairs(stack, decisive, batch_size)
    return _figures(r_c.mean(dim=1), r_r.mean(dim=1))


def _figures(r_c: torch.Tensor, r_r: torch.Tensor) -> HeldoutFigures:
    """Held-out figures of the ensemble-mean scores [N] of N decisive pairs' chosen and rejected sides."""
    return HeldoutFigures(accuracy=float(bt_accuracy(r_c, r_r)), loss=float(bradley_terry_loss(r_c, r_r)),
                          calibration_error=symmetric_calibration_error(r_c, r_r), n=len(r_c))


def calibrate_head(stack: ModelStack, pairs: Sequence[EncodedPair], batch_size: int) -> tuple[float, HeldoutFigures]:
    """Scale the reward head (every member's weights and bias) by the temperature that makes σ(r_c − r_r)
    of the ensemble mean calibrated on the decisive pairs among `pairs` (`fit_temperature`); returns the
    factor and the held-out figures after scaling (accuracy is unchanged by it)."""
    decisive = [p for p in pairs if not p.tie]
    r_c, r_r = score_pairs(stack, decisive, batch_size)
    r_c, r_r = r_c.mean(dim=1), r_r.mean(dim=1)
    factor = fit_temperature(r_c - r_r)
    head = stack.heads["reward"]
    with torch.no_grad():
        head.weight.mul_(factor)
        head.bias.mul_(factor)
    return factor, _figures(r_c * factor, r_r * factor)


def evaluate_reward_model(stack: ModelStack, examples: Sequence[PreferenceExample], cfg: RewardConfig
                          ) -> tuple[float | None, float | None]:
    """(accuracy, BT loss) of the current `reward` adapter on `examples`; (None, None) if empty.

    Accuracy is the fraction with r_chosen > r_rejected (ensemble mean); the loss has no strength
    margin, so it is the plain negative log-likelihood and comparable across configurations.
    """
    figures = heldout_figures(stack, encode_pairs(stack.tokenizer, examples, cfg.max_length), cfg.batch_size)
    return figures.accuracy, figures.loss


def _batch_loss(r_c: torch.Tensor, r_r: torch.Tensor, chunk: Sequence[EncodedPair], weights: torch.Tensor,
                margin: torch.Tensor | None, log_nu: torch.Tensor | None, normalizer: torch.Tensor) -> torch.Tensor:
    """The members' mean loss on one batch: weighted BT, or Davidson's likelihood when `log_nu` is given.

    `normalizer` [K]: the weight sums of the whole batch (of which `chunk` may be one process's share).
    """
    if log_nu is None:
        return weighted_bt_loss(r_c, r_r, weights, margin, normalizer)
    outcome = torch.tensor([2 if p.tie else 0 for p in chunk], device=r_c.device)
    nll = -torch.stack([davidson_log_likelihood(r_c[:, k], r_r[:, k], outcome, log_nu)
                        for k in range(r_c.shape[1])])  # [K, B]
    return weighted_mean_over_members(nll, weights, normalizer)


PROBE_L2_GRID = (1e-3, 1e-2, 1e-1, 1.0)
MIN_CALIBRATION_PAIRS = 16  # fewer decisive held-out pairs: no temperature fit (it would chase noise)
STANDARDIZE_PAIRS = 128  # responses of this many training pairs (x2) give a fresh head its feature statistics


def start_head(stack: ModelStack, train: Sequence[EncodedPair], heldout: Sequence[EncodedPair], weights: torch.Tensor,
               cfg: RewardConfig) -> tuple[float | None, HeldoutFigures | None]:
    """A fresh reward head for `cfg` (members, pooling, feature depths): its feature standardization fitted
    on training responses as the trunk computes them now (the decisive pairs' with `cfg.head_init ==
    "probe"`, else a sample of STANDARDIZE_PAIRS pairs), then with "probe" its members fitted on those same
    features (`fit_head_by_probe`). Returns the probe's L2 strength and held-out figures, or Nones."""
    stack.set_reward_head(cfg.ensemble, cfg.pooling, cfg.feature_depths)
    probe = cfg.head_init == "probe"
    decisive = [i for i, p in enumerate(train) if not p.tie]
    sample = decisive if probe else list(range(len(train)))
    if not probe and len(sample) > STANDARDIZE_PAIRS:
        sample = random.Random(cfg.seed).sample(sample, STANDARDIZE_PAIRS)
    chosen, rejected = pair_features(stack, [train[i] for i in sample], cfg.batch_size)
    if len(sample):
        stack.heads["reward"].fit_standardization(torch.cat([chosen, rejected]).to(stack.device))
    if not probe or not decisive:
        return None, None
    return fit_head_by_probe(stack, (chosen, rejected), heldout, weights[:, decisive], cfg.batch_size)


def fit_head_by_probe(stack: ModelStack, train_features: tuple[torch.Tensor, torch.Tensor],
                      heldout: Sequence[EncodedPair], weights: torch.Tensor, batch_size: int
                      ) -> tuple[float, HeldoutFigures | None]:
    """Set each head member to a linear Bradley-Terry fit on the current features (its bootstrap
    weights), before fine-tuning the trunk: "linear probe, then fine-tune" (Kumar et al. 2022),
    which starts the LoRA from a useful head instead of a random one.

    train_features: `pair_features` (chosen, rejected) [N, F] of N decisive training pairs; weights:
    [K, N] the members' bootstrap weights of those pairs. The L2 strength is the one of PROBE_L2_GRID
    with the lowest held-out loss (the middle one without held-out pairs); returned, with the fitted
    head's held-out figures (None without decisive held-out pairs), read from the same features.
    """
    head = stack.heads["reward"]
    feature_scale = head.feature_scale.cpu()  # differences of standardized features: the shift cancels
    fc, fr = train_features
    diff = (fc - fr) / feature_scale
    scale = diff.std(dim=0).clamp(min=1e-6) if len(diff) > 1 else torch.ones(diff.shape[1])
    held = [p for p in heldout if not p.tie]
    l2 = PROBE_L2_GRID[1]
    if held:
        hc, hr = pair_features(stack, held, batch_size)
        held_diff = ((hc - hr) / feature_scale / scale).double()

        def heldout_loss(candidate: float) -> float:
            theta = fit_linear_bt(diff / scale, None, candidate)
            return float(torch.nn.functional.softplus(-(held_diff @ theta)).mean())

        l2 = min(PROBE_L2_GRID, key=heldout_loss)
    with torch.no_grad():
        for k in range(head.out_features):
            theta = fit_linear_bt(diff / scale, weights[k], l2)
            head.weight[k].copy_((theta / scale.double()).float().to(head.weight.device))
        head.bias.zero_()
        if not held:
            return l2, None
        device = head.weight.device
        return l2, _figures(head(hc.to(device)).mean(dim=1).cpu(), head(hr.to(device)).mean(dim=1).cpu())


def batch_schedule(pairs: Sequence[EncodedPair], cfg: RewardConfig, rng: random.Random) -> list[list[list[int]]]:
    """The batches of every pass a training makes, epoch by epoch: `cfg.epochs` passes (whole prompts per
    batch with `cfg.group_by_prompt`, else length-grouped pairs), cut after `cfg.max_steps` steps in all
    when that is set (the last pass may then be partial, and later ones are dropped)."""
    make = prompt_grouped_batches if cfg.group_by_prompt else length_grouped_batches
    schedule, steps = [], 0
    for _ in range(cfg.epochs):
        batches = make(pairs, cfg.batch_size, rng)
        if cfg.max_steps > 0:
            batches = batches[:cfg.max_steps - steps]
        if not batches:
            break
        schedule.append(batches)
        steps += len(batches)
    return schedule


def train_reward_model(
    stack: ModelStack, train: Sequence[PreferenceExample], heldout: Sequence[PreferenceExample],
    cfg: RewardConfig, *, on_step: Callable[[dict[str, float]], None] | None = None, progress: bool = True,
    fresh_head: bool = True, dp: DataParallel | None = None, checkpoint: Checkpoint | None = None,
) -> RewardTrainResult:
    """Fit the `reward` adapter (LoRA trunk + K-member head; the base stays frozen) on `train`.

    Up to `cfg.epochs` passes (and at most `cfg.max_steps` steps, when set) in batches of at least
    `cfg.batch_size` pairs, whole prompts each with `cfg.group_by_prompt` (`batch_schedule`, seeded),
    AdamW with gradient-norm clipping at 1.0. The loss is the members' bootstrap-weighted Bradley-Terry
    loss −log σ(r_c − r_r − margin) (margin from strength when `cfg.use_strength_margin`), each example
    also weighted by its `weight` relative to the mean (`normalized_example_weights`), or with
    `cfg.ties == "davidson"` the negative log-likelihood under Davidson's tie model, ties included.
    With `cfg.early_stopping` and held-out pairs, the epoch with the lowest held-out loss is kept.
    `fresh_head` (default) starts the head over (`start_head`): `cfg.ensemble` members reading
    `cfg.pooling` features of the layers at `cfg.feature_depths`, standardized on the training responses,
    and with `cfg.head_init == "probe"` fitted as linear probes on them first (then the probe before any
    step, "epoch 0", is an early-stopping candidate too). False keeps the loaded head (a warm start)
    if it reads the features `cfg` asks for. With `dp` (several
    processes, `training.distributed`) each process trains on its share of every batch and the
    gradients are summed: the same result as one process. `on_step` receives {"step", "epoch", "loss",
    "accuracy", "reward_margin", "grad_norm", "lr"} and "steps_total", the training's planned steps. With
    `checkpoint`, the training resumes from it and writes it every `checkpoint.every` steps (`training.checkpoint`).
    The adapter is frozen and in eval mode after.
    """
    if not train:
        raise ValueError("no training examples: the reward model needs at least one decisive judgment")
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise ValueError(f"reward.epochs and reward.batch_size must be at least 1, got {cfg.epochs} and "
                         f"{cfg.batch_size}")
    dp = dp or DataParallel(single=True)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    train_pairs = encode_pairs(stack.tokenizer, train, cfg.max_length)
    heldout_pairs = encode_pairs(stack.tokenizer, heldout, cfg.max_length)
    counts = bootstrap_weights(len(train_pairs), cfg.ensemble, torch.Generator().manual_seed(cfg.seed))
    # Each example's weight (normalised to mean 1) scales its bootstrap count in the loss's numerator;
    # batches stay normalised by the counts alone, so a batch of down-weighted examples moves the model
    # less (all-ones weights: exactly the unweighted loss).
    weights = counts * normalized_example_weights(torch.tensor([p.weight for p in train_pairs]))
    probe_l2 = None
    early = cfg.early_stopping and any(not p.tie for p in heldout_pairs)
    best = (math.inf, 0, None, None)  # (held-out loss, epoch, state, figures)
    if (fresh_head or stack.reward_members_count != cfg.ensemble or stack.reward_pooling != cfg.pooling
            or stack.reward_depths != tuple(float(d) for d in cfg.feature_depths)):
        probe_l2, figures = start_head(stack, train_pairs, heldout_pairs, weights, cfg)
        if early and figures is not None:  # the probe alone is a candidate too ("epoch 0")
            best = (figures.loss, 0, adapter_snapshot(stack, "reward"), figures)

    stack.freeze_adapters()
    params = stack.trainable_parameters("reward")
    log_nu = None
    if cfg.ties == "davidson":
        log_nu = torch.zeros((), device=stack.device, requires_grad=True)
        params = [*params, log_nu]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate)
    schedule = batch_schedule(train_pairs, cfg, rng)
    saved = Tracked(None if dp.enabled else checkpoint, stack, optimizer, heads=("reward",), rng=rng,
                    inputs=fingerprint(train, heldout, cfg, fresh_head))
    state = saved.resume()  # {} unless a checkpoint of this same training is there
    schedule, history = state.get("schedule", schedule), state.get("history", [])
    best = candidate_from_state(state["best"], HeldoutFigures) if "best" in state else best
    total_steps, epochs = sum(map(len, schedule)), len(schedule)
    bar = tqdm(total=total_steps, initial=len(history), desc="reward model", unit="step", disable=not progress)
    try:
        for epoch, batches in enumerate(schedule, start=1):
            stack.model.train()
            for batch in batches[max(0, saved.resumed_from - sum(map(len, schedule[:epoch - 1]))):]:
                mine = dp.shard(batch)  # this process's share; the others take the rest
                chunk = [train_pairs[i] for i in mine]
                optimizer.zero_grad(set_to_none=True)
                loss_value, correct, decisive = 0.0, 0.0, 0.0
                margin_sum = 0.0
                if chunk:
                    # Forward and backward under one adapter context (checkpointing recomputes through it).
                    with stack.use("reward"):
                        r_c, r_r, margin = pair_member_scores(stack, chunk, with_margin=cfg.use_strength_margin)
                        loss = _batch_loss(r_c, r_r, chunk, weights[:, mine], margin, log_nu,
                                           counts[:, batch].sum(dim=1))
                        loss.backward()
                    loss_value = float(loss.detach())
                    keep = [i for i, p in enumerate(chunk) if not p.tie]
                    gap = (r_c.detach().mean(dim=1) - r_r.detach().mean(dim=1))[keep]
                    correct, decisive, margin_sum = float((gap > 0).sum()), float(len(keep)), float(gap.sum())
                dp.sum_gradients(params)
                grad_norm = torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP_NORM)
                optimizer.step()
                total = dp.sums({"correct": correct, "decisive": decisive, "margin": margin_sum, "loss": loss_value})
                decisive = total["decisive"]
                row = {"step": len(history) + 1, "epoch": epoch, "loss": total["loss"],
                       "accuracy": total["correct"] / decisive if decisive else math.nan,
                       "reward_margin": total["margin"] / decisive if decisive else math.nan,
                       "grad_norm": float(grad_norm), "lr": optimizer.param_groups[0]["lr"]}
                history.append(row)
                bar.update(1)
                bar.set_postfix(loss=f"{row['loss']:.3f}", epoch=epoch)
                if on_step is not None:
                    on_step({**row, "steps_total": total_steps})
                saved.step_done(len(history), schedule=schedule, history=history, best=candidate_state(best))
            if early:
                figures = heldout_figures(stack, heldout_pairs, cfg.batch_size)
                history[-1]["heldout_loss"] = figures.loss
                if figures.loss < best[0]:
                    best = (figures.loss, epoch, adapter_snapshot(stack, "reward") if epoch < epochs else None, figures)
    finally:
        bar.close()
        stack.model.eval()
        stack.freeze_adapters()
    best_epoch = best[1] if early else epochs
    if early and best[2] is not None:  # a later epoch was worse on held-out pairs: go back
        restore_snapshot(stack, "reward", best[2])
    last_epoch = [r["loss"] for r in history if r["epoch"] == epochs]
    temperature = None
    if cfg.calibrate and sum(not p.tie for p in heldout_pairs) >= MIN_CALIBRATION_PAIRS:
        temperature, heldout = calibrate_head(stack, heldout_pairs, cfg.batch_size)
    else:  # the kept epoch's figures were measured on exactly the weights kept: no second pass
        heldout = best[3] if early else heldout_figures(stack, heldout_pairs, cfg.batch_size)
    return RewardTrainResult(
        heldout=heldout, train_loss=sum(last_epoch) / len(last_epoch),
        steps=len(history), n_train=len(train_pairs), n_heldout=len(heldout_pairs), best_epoch=best_epoch,
        tie_log_nu=None if log_nu is None else float(log_nu.detach()), probe_l2=probe_l2, temperature=temperature,
        history=history,
    )

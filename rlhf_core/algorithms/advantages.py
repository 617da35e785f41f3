"""Advantages and shaped rewards: GAE over response tokens (PPO), the KL-shaped per-token reward
(InstructGPT), and group-normalised advantages (GRPO, and Dr. GRPO without the std scaling).

Pure functions. B = sequences, T = response tokens; rewards in reward units.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlhf_core.algorithms.kl import kl_k1


def compute_gae(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[Tensor, Tensor]:
    """Generalized Advantage Estimation over response tokens.

    rewards, values, mask: [B, T]; mask is 1 on response tokens and 0 on padding. The value after the
    last real token is 0 (episode ends). Returns (advantages, returns), both [B, T], detached, with
    returns = advantages + values and zeros at padded positions.
    """
    m = mask.to(torch.bool)
    rewards = torch.where(m, rewards.detach(), torch.zeros_like(rewards))
    values = torch.where(m, values.detach(), torch.zeros_like(values))
    mf = m.to(values.dtype)
    advantages = torch.zeros_like(values)
    next_value = torch.zeros_like(values[:, 0])
    next_adv = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv = (delta + gamma * lam * next_adv) * mf[:, t]
        advantages[:, t] = adv
        # A padded step passes nothing back: what precedes it sees a terminal state.
        next_value = values[:, t] * mf[:, t]
        next_adv = adv
    returns = (advantages + values) * mf
    return advantages, returns


def per_token_rewards(scores: Tensor, logp: Tensor, ref_logp: Tensor, mask: Tensor, beta: float) -> Tensor:
    """KL-shaped reward: −β·k1 on every real token plus the sequence score on the last real token.

    scores: [B] reward-model scores; logp, ref_logp, mask: [B, T]. Returns [B, T] (0 at padding).
    Rows with no real token get no score.
    """
    m = mask.to(torch.bool)
    rewards = torch.where(m, -beta * kl_k1(logp, ref_logp), torch.zeros_like(logp))
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(m)
    last = torch.where(m, positions, torch.full_like(positions, -1)).max(dim=1).values
    has_token = last >= 0
    rows = torch.arange(mask.shape[0], device=mask.device)
    bonus = torch.zeros_like(rewards)
    bonus[rows[has_token], last[has_token]] = scores[has_token].to(rewards.dtype)
    return rewards + bonus


def grpo_advantages(rewards: Tensor, group_size: int, eps: float = 1e-6, *, scale_by_std: bool = True) -> Tensor:
    """Group-relative advantages: (r − group mean) / (group population std + eps).

    rewards: [B] with B = n_groups · group_size, each prompt's completions consecutive.
    Returns [B]; a group whose rewards are all equal gets zeros. `scale_by_std=False` is Dr. GRPO
    (Liu et al. 2025): r − group mean only, so a group whose samples differ little (a prompt that is
    too easy or too hard) is not blown up to the same weight as one with a real difference.
    """
    if group_size < 1 or rewards.numel() % group_size != 0:
        raise ValueError(f"{rewards.numel()} rewards cannot be split into groups of {group_size}")
    grouped = rewards.reshape(-1, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if not scale_by_std:
        return centred.reshape(rewards.shape)
    std = grouped.std(dim=1, unbiased=False, keepdim=True)
    return (centred / (std + eps)).reshape(rewards.shape)

"""Checks of a whole `Config`, each failure one sentence naming the key: the allowed values of every key that
declares them (`settings`), then numeric bounds and the rules between keys, written here."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from rlhf_core.config.reward_functions import check_reward_functions
from rlhf_core.config.sections import AuthConfig, Config, LabelingConfig, LoggingConfig, PolicyConfig
from rlhf_core.config.settings import ConfigError, declared_choices
from rlhf_core.registry import POLICY_ALGORITHMS, spoken_list


def validate(config: Config, where: Path | str = "config") -> None:
    """Raise ConfigError naming `where`, the key and what it allows, for the first setting that is out of bounds:
    first every closed set of values (as declared), then numeric bounds and the rules between keys."""
    _validate_choices(config, where)
    if config.sampling.per_prompt < 2:
        raise ConfigError(f"{where}: sampling.per_prompt must be at least 2 to form pairs")
    if config.labeling.judgments_per_pair < 1:
        raise ConfigError(f"{where}: labeling.judgments_per_pair must be at least 1")
    if config.policy.reference not in ("base", "previous", "sft") and not config.policy.reference.isdigit():
        raise ConfigError(f"{where}: policy.reference must be base, previous, sft or a policy version number")
    if config.policy.group_size < 2:
        raise ConfigError(f"{where}: policy.group_size must be at least 2")
    if config.sampling.first_batch_pairs < 0:
        raise ConfigError(f"{where}: sampling.first_batch_pairs must be 0 (off) or more")
    if config.sampling.max_pairs_per_prompt < 0:
        raise ConfigError(f"{where}: sampling.max_pairs_per_prompt must be 0 (no cap) or more")
    if not 0.0 <= config.labeling.control_rate <= 1.0:
        raise ConfigError(f"{where}: labeling.control_rate must be between 0 and 1")
    if config.labeling.max_prompt_chars < 1:
        raise ConfigError(f"{where}: labeling.max_prompt_chars must be at least 1")
    if config.reward.ensemble < 1:
        raise ConfigError(f"{where}: reward.ensemble must be at least 1")
    if config.reward.max_steps < 0:
        raise ConfigError(f"{where}: reward.max_steps must be at least 0 (0 = no cap)")
    if not config.reward.feature_depths or not all(isinstance(d, float) and 0 <= d <= 1
                                                   for d in config.reward.feature_depths):
        raise ConfigError(f"{where}: reward.feature_depths must be a non-empty list of fractions in [0, 1], got "
                          f"{config.reward.feature_depths!r}")
    if not 0 < config.labeling.session_hours <= 24 * 90:
        raise ConfigError(f"{where}: labeling.session_hours must be above 0 and at most 2160 (90 days)")
    if not 0.0 <= config.reward.min_annotator_accuracy <= 1.0:
        raise ConfigError(f"{where}: reward.min_annotator_accuracy must be between 0 and 1")
    _validate_policy_update(config.policy, where)
    _validate_annotators_and_gate(config, where)
    _validate_logging(config.logging, where)
    _validate_auth(config.auth, where)
    _validate_labeling_page(config.labeling, where)
    _validate_demonstrations(config, where)
    _validate_outside_data(config, where)
    _validate_reward_functions(config, where)
    _validate_judges(config, where)
    _validate_steps(config, where)
    _validate_recovery(config, where)


def _validate_choices(config: Config, where: Path | str) -> None:
    """Every key declared with allowed values (a Literal type or a table of kinds) holds one of them."""
    for section, name, allowed in declared_choices(Config):
        value = getattr(getattr(config, section), name) if section else getattr(config, name)
        if value not in allowed:
            key = f"{section}.{name}" if section else name
            raise ConfigError(f"{where}: {key} must be {spoken_list(allowed)}")


def _validate_reward_functions(config: Config, where: Path | str) -> None:
    """`[[reward.functions]]` entries (each refused with one line naming it), the combination and verifiable mode."""
    check_reward_functions(config.reward.functions, str(where))
    if not (isinstance(config.reward.model_weight, float) and abs(config.reward.model_weight) < float("inf")):
        raise ConfigError(f"{where}: reward.model_weight must be a finite number")
    if config.loop.mode != "verifiable":
        return
    if not config.reward.functions:
        raise ConfigError(f"{where}: loop.mode = \"verifiable\" scores with reward functions alone: add at least one "
                          "[[reward.functions]] entry, or set loop.mode = \"standard\"")
    algorithm = POLICY_ALGORITHMS.get(config.policy.algo)
    if algorithm is not None and not algorithm.uses_rollouts:
        raise ConfigError(f"{where}: loop.mode = \"verifiable\" rounds sample and score their own responses: set "
                          f"policy.algo to {spoken_list(POLICY_ALGORITHMS.names(lambda a: a.uses_rollouts))} "
                          f"(not {config.policy.algo})")


def _validate_outside_data(config: Config, where: Path | str) -> None:
    """Prior judgments from existing preference datasets (`rlhf preferences import`)."""
    weight = config.reward.prior_weight
    if not (isinstance(weight, int | float) and 0 <= weight < float("inf")):
        raise ConfigError(f"{where}: reward.prior_weight must be a number >= 0 (1 = as much as a human judgment, "
                          "0 = priors unused)")


def _validate_judges(config: Config, where: Path | str) -> None:
    """AI judges: their calls, routing pairs to people, and how much their labels count in training."""
    j = config.judges
    if j.requests_per_second <= 0 or j.timeout_seconds <= 0 or j.backoff_seconds < 0:
        raise ConfigError(f"{where}: judges.requests_per_second and judges.timeout_seconds must be above 0, "
                          "judges.backoff_seconds 0 or more")
    if j.retries < 0 or j.max_requests < 2 or j.max_tokens < 1 or j.pairs_per_run < 1 or j.batch_size < 1:
        raise ConfigError(f"{where}: judges.retries must be 0 or more, judges.max_requests at least 2 (one pair in "
                          "both orders), judges.max_tokens, pairs_per_run and batch_size at least 1")
    if not 0.0 <= j.uncertain_below <= 1.0 or not 0.0 <= config.labeling.judge_share <= 1.0:
        raise ConfigError(f"{where}: judges.uncertain_below and labeling.judge_share must be between 0 and 1")
    weight = config.reward.ai_weight
    if not (isinstance(weight, int | float) and 0 <= weight < float("inf")):
        raise ConfigError(f"{where}: reward.ai_weight must be a number >= 0 (1 = at most as much as a human "
                          "judgment, 0 = AI judgments unused)")


def _validate_demonstrations(config: Config, where: Path | str) -> None:
    """Stage 1: the labeling page's demonstration panel and supervised fine-tuning."""
    labeling, sft = config.labeling, config.sft
    if labeling.demonstration_every < 1:
        raise ConfigError(f"{where}: labeling.demonstration_every must be at least 1")
    if sft.learning_rate <= 0 or sft.epochs < 1 or sft.batch_size < 1 or sft.max_steps < 0:
        raise ConfigError(f"{where}: sft.learning_rate must be > 0, sft.epochs and sft.batch_size at least 1, "
                          "sft.max_steps 0 (no cap) or more")
    if sft.max_length < 4:
        raise ConfigError(f"{where}: sft.max_length must be at least 4 tokens")
    if not 0.0 <= sft.eval_fraction < 1.0:
        raise ConfigError(f"{where}: sft.eval_fraction must be at least 0 and below 1")


def _validate_labeling_page(labeling: LabelingConfig, where: Path | str) -> None:
    if not 0 <= labeling.undo_seconds <= 3600:
        raise ConfigError(f"{where}: labeling.undo_seconds must be between 0 (no undo) and 3600")


def _validate_annotators_and_gate(config: Config, where: Path | str) -> None:
    """reward.annotator_model, policy.kl_budget and loop.min_reward_confidence (issue 29)."""
    reward = config.reward
    if reward.annotator_model == "none" and reward.min_annotator_accuracy > 0:
        raise ConfigError(f"{where}: reward.min_annotator_accuracy is not used with reward.annotator_model = "
                          "\"none\"; set annotator_model = \"threshold\" or \"crowd_bt\", or "
                          "min_annotator_accuracy = 0")
    if reward.annotator_model == "crowd_bt" and reward.ties != "drop":
        raise ConfigError(f"{where}: reward.annotator_model = \"crowd_bt\" (the default) models decisive "
                          "judgments only; set reward.ties = \"drop\", or annotator_model = \"threshold\" to "
                          "model ties")
    policy = config.policy
    if policy.kl_budget < 0 or policy.kl_budget_rounds < 1:
        raise ConfigError(f"{where}: policy.kl_budget must be at least 0 (0 = none) and policy.kl_budget_rounds at "
                          "least 1")
    if policy.kl_budget > 0 and policy.reference == "previous":
        raise ConfigError(f"{where}: policy.kl_budget bounds the total drift to a fixed reference (base, sft or a "
                          "version number); with policy.reference = \"previous\" the anchor moves every round: bound "
                          "each round with policy.max_kl_per_token instead, or set kl_budget = 0")
    if not 0.0 <= reward.conservative_lambda < float("inf"):
        raise ConfigError(f"{where}: reward.conservative_lambda must be a number >= 0")
    if config.loop.probe_prompts < 0:
        raise ConfigError(f"{where}: loop.probe_prompts must be 0 (off) or more")
    if not 0.0 <= config.loop.min_reward_confidence < 1.0:
        raise ConfigError(f"{where}: loop.min_reward_confidence must be at least 0 (0 = no gate) and below 1")
    if config.loop.min_reward_confidence > 0 and reward.eval_fraction <= 0:
        raise ConfigError(f"{where}: loop.min_reward_confidence needs held-out judgments to measure the reward model "
                          "on: set reward.eval_fraction above 0, or loop.min_reward_confidence = 0 (no gate)")


def _validate_auth(auth: AuthConfig, where: Path | str) -> None:
    if not 1 <= auth.max_failures <= 1000:
        raise ConfigError(f"{where}: auth.max_failures must be between 1 and 1000")
    for key in ("window_seconds", "cooldown_seconds"):
        if not 1 <= getattr(auth, key) <= 7 * 86400:
            raise ConfigError(f"{where}: auth.{key} must be between 1 and 604800 (7 days)")
    if not 8 <= auth.min_password_length <= 1024:
        raise ConfigError(f"{where}: auth.min_password_length must be between 8 and 1024")


def _validate_policy_update(policy: PolicyConfig, where: Path | str) -> None:
    if policy.target_kl <= 0 or policy.kl_horizon < 1:
        raise ConfigError(f"{where}: policy.target_kl must be > 0 and policy.kl_horizon at least 1")
    if policy.dpo_beta <= 0 or policy.dpo_learning_rate <= 0:
        raise ConfigError(f"{where}: policy.dpo_beta and policy.dpo_learning_rate must be > 0")
    if not 0.0 <= policy.dpo_label_smoothing < 0.5:
        raise ConfigError(f"{where}: policy.dpo_label_smoothing must be at least 0 and below 0.5")
    if policy.dpo_epochs < 1 or policy.dpo_batch_size < 1 or policy.dpo_kl_every < 1:
        raise ConfigError(f"{where}: policy.dpo_epochs, dpo_batch_size and dpo_kl_every must be at least 1")
    if policy.dpo_past_rounds < 0 or policy.dpo_rm_pairs < 0:
        raise ConfigError(f"{where}: policy.dpo_past_rounds and policy.dpo_rm_pairs must be 0 or more")


def _validate_logging(logging: LoggingConfig, where: Path | str) -> None:
    if not logging.dir.strip():
        raise ConfigError(f"{where}: logging.dir must name a folder (relative to the workspace)")
    if logging.report_to == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(f"{where}: logging.report_to = \"tensorboard\" needs the tensorboard package: "
                          "pip install 'rlhf-loop[tensorboard]' (or set report_to = \"none\")")


def _validate_steps(config: Config, where: Path | str) -> None:
    """Step labels and the process reward model."""
    labeling, prm = config.labeling, config.prm
    if labeling.step_split == "separator" and not labeling.step_separator:
        raise ConfigError(f"{where}: labeling.step_split = \"separator\" needs a non-empty labeling.step_separator "
                          "(e.g. \"\\n\\n\" for paragraphs)")
    if not 1 <= labeling.max_steps <= 50:
        raise ConfigError(f"{where}: labeling.max_steps must be between 1 and 50")
    if labeling.step_labels_per_response < 1:
        raise ConfigError(f"{where}: labeling.step_labels_per_response must be at least 1")
    if prm.learning_rate <= 0 or prm.epochs < 1 or prm.batch_size < 1 or prm.max_length < 8:
        raise ConfigError(f"{where}: prm.learning_rate must be > 0, prm.epochs and prm.batch_size at least 1, "
                          "prm.max_length at least 8 tokens")
    if not 0.0 <= prm.eval_fraction < 1.0 or not 0.0 <= prm.verify_threshold <= 1.0:
        raise ConfigError(f"{where}: prm.eval_fraction must be at least 0 and below 1, prm.verify_threshold "
                          "between 0 and 1")
def _validate_recovery(config: Config, where: Path | str) -> None:
    recovery = config.recovery
    if recovery.job_attempts < 1 or recovery.connect_attempts < 1:
        raise ConfigError(f"{where}: recovery.job_attempts and recovery.connect_attempts must be at least 1")
    if recovery.retry_backoff_s < 0 or recovery.checkpoint_every < 0 or recovery.min_free_disk_mb < 0:
        raise ConfigError(f"{where}: recovery.retry_backoff_s, checkpoint_every and min_free_disk_mb must be 0 or more")

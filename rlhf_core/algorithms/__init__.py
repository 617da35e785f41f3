"""The pure math of RLHF: Bradley-Terry preferences and the KL-regularized optimum (`preference`), KL estimators
(`kl`), the adaptive KL coefficient (`kl_control`), masked statistics (`masked`), GAE, KL-shaped rewards and
group-normalised advantages (`advantages`), PPO/GRPO/Dr. GRPO losses and log-prob gathering (`policy_losses`),
log-probs through a vocabulary projection in chunks (`head_logprobs`), the DPO loss (`dpo`), the SFT loss on
answer tokens (`sft`), Pearson correlation (`correlation`), annotator agreement statistics (`agreement`),
CrowdBT's annotator reliabilities and position bias (`crowd_bt`), combining reward components (the reward model and
reward functions) into one score (`reward_combination`), and the evidence that the loop improves: the
conservative reward of an ensemble, cross-fitted accuracy, proxy gains, the over-optimization and promotion rules
(`evidence`).
Every function takes tensors (or plain Python values) and returns them: no model, no IO, and no import of any
other part of the project, so each is tested against numbers worked out by hand. The names are re-exported
here for convenience.
"""

from rlhf_core.algorithms.advantages import compute_gae, grpo_advantages, per_token_rewards
from rlhf_core.algorithms.agreement import cohens_kappa, fleiss_kappa, majority_agreement, position_bias, tie_rate
from rlhf_core.algorithms.correlation import pearson_correlation
from rlhf_core.algorithms.dpo import dpo_loss, sequence_logprobs
from rlhf_core.algorithms.head_logprobs import linear_kl, linear_logprobs
from rlhf_core.algorithms.kl import kl_from_logits, kl_k1, kl_k2, kl_k3, sequence_kl
from rlhf_core.algorithms.kl_control import adaptive_kl_beta
from rlhf_core.algorithms.masked import masked_mean, masked_var, masked_whiten
from rlhf_core.algorithms.policy_losses import (
    GRPO_LOSS_TYPES,
    entropy_from_logits,
    explained_variance,
    gather_logprobs,
    grpo_loss,
    ppo_policy_loss,
    ppo_value_loss,
)
from rlhf_core.algorithms.preference import (
    STRENGTH_MARGIN,
    bradley_terry_loss,
    bt_accuracy,
    bt_probability,
    fit_temperature,
    margins_from_strength,
    optimal_policy,
)
from rlhf_core.algorithms.reward_combination import COMBINE_MODES, combine_rewards, component_means
from rlhf_core.algorithms.sft import masked_nll_sum, perplexity, sft_loss

__all__ = [name for name in dir() if not name.startswith("_")]

"""Best-of-N scorers: what ranks N sampled answers to one prompt so the best is kept (`rlhf generate --best-of N
--by NAME`, the operator console's best-of-N panel, bench/best_of_n.py). One entry each; the CLI's `--by` choices and
help, the console's picker and the docs read this table.

An entry's `score(context, conversations, completions, columns) -> list[float | None]` scores each completion of
the conversation beside it (`rlhf_core.service.best_of_n.ScoringContext` holds the model stack and the workspace);
None means "does not apply" and ranks last. `needs` says in words what must exist first, for the refusal.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlhf_core.registry.base import Registry


@dataclass(frozen=True)
class CandidateScorer:
    name: str
    help: str
    score: str  # "module:function" (see the module docstring)
    needs: str  # what must exist, in words: "a reward model", ...


BEST_OF_N_SCORERS: Registry[CandidateScorer] = Registry("best-of-N scorer", [
    CandidateScorer("rm", "the reward model's score (its members combined as reward.conservative)",
                    "rlhf_core.service.best_of_n:score_by_reward_model", "a reward model (`rlhf train-rm`)"),
    CandidateScorer("prm", "the process reward model: the minimum or the product of its step scores "
                           "(prm.aggregate)", "rlhf_core.service.best_of_n:score_by_prm",
                    "a process reward model (`rlhf train-prm`)"),
    CandidateScorer("functions", "the reward functions: their weighted sum (a candidate none applies to ranks "
                                 "last)", "rlhf_core.service.best_of_n:score_by_functions",
                    "reward functions (`[[reward.functions]]` in rlhf.toml, or `--function module:function` with TRL's "
                    "signature)"),
])

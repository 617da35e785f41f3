"""AI judges: annotators of kind `ai` whose judgments go into the same table as people's, and whose reliability
CrowdBT learns with everybody else's. What a judge reads and answers (`prompting`, the default constitution in
`rubric.md`), its settings and their checks (`settings`), the judge kinds of `rlhf_core.registry.JUDGE_KINDS`
(`openai_judge`: any OpenAI-compatible endpoint; `local_judges`: a local causal LM, `hf`, and a reward model,
`reward-model`), one pair judged in both orders (`verdicts`), a run that stores its judgments in one transaction
(`run`), the routing of pairs to people by the judge's uncertainty (`routing`), and each judge's figures: kappa with
people, control accuracy, left bias (`figures`). It may import `models` and `data` besides the base layers.
"""

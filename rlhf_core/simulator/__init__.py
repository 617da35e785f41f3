"""The simulator: scripted stand-ins for people, for `rlhf simulate`, `rlhf demo` and the benchmarks. Gold
preferences (`gold`) and crowd kinds (`crowd`), whose tables are `rlhf_core.registry.GOLDS` and `CROWD_KINDS`;
simulated annotators judging through the same storage path as people (`simulate`); a simulated AI judge behind a
real OpenAI-compatible server on loopback (`judge_endpoint`); the gold's verdict on a policy version against the
base (`evaluation`); the whole loop end to end (`demo`); and the verifiable prompt set with its reward functions, a
gold that checks answers and greedy accuracy (`verifiable`). Nothing in the product
loop depends on it.
Simulated step labels: the arithmetic step gold and worked chains (`steps`).
"""

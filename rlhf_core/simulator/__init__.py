"""The simulator: scripted stand-ins for people, for `rlhf simulate`, `rlhf demo` and the benchmarks. Gold
preferences (`gold`) and crowd kinds (`crowd`), whose tables are `rlhf_core.registry.GOLDS` and `CROWD_KINDS`;
simulated annotators judging through the same storage path as people (`simulate`); the gold's verdict on a
policy version against the base (`evaluation`); and the whole loop end to end (`demo`). Nothing in the product
loop depends on it.
Simulated step labels: the arithmetic step gold and worked chains (`steps`).
"""

"""Core training math and orchestration for the online RLHF loop."""

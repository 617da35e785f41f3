from rlhf_core.cli import main

main()

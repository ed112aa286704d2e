"""`python -m sync_core …`: the operator's command line."""

from sync_core.cli.main import main

main()

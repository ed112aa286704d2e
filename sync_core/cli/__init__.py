"""The operator's command line (Typer): the same service functions the HTTP routes call, no rules of its own."""

"""Push, pull and replay orchestration over the ports."""

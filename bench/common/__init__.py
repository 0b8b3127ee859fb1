"""What more than one bench uses and is not a process launcher (those are in tests/harness)."""

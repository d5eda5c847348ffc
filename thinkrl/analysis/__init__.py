"""Training dynamics (response length, reflection words, mode mix) and the run report."""

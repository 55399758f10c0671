"""DiSA experiments: the conditional-variance measurement, the FD/cost table and its plots."""

"""One-off GPU experiments (UNet variants, autotuning, low-bit micro-benchmarks) quoted in docs/benchmarks.md."""

"""Cultural accumulation benchmark (issue 22)."""

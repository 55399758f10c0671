"""``fewstep bench mixdq``: the cost tables' arithmetic and the profiler's kernel categories."""

from __future__ import annotations


def test_cost_tables_compare_against_the_faster_fp16():
    from fewstep.bench.mixdq.bench import _cost_table, shapes_markdown
    from fewstep.bench.mixdq.cost import _category

    rows = [{"arch": "sd15", "variant": v, "batch": 1, "weight_mb": w, "peak_mb": w, "eager_ms": 1.0, "graph_ms": g}
            for v, w, g in [("fp16", 100.0, 10.0), ("fp16 fast", 100.0, 8.0), ("W8A8", 50.0, 4.0)]]
    table = _cost_table(rows)
    assert "| sd15 | W8A8 | 1 | 50.0 | 2.00 |" in table and table.rstrip().endswith("| 2.00 |")   # 8 / 4
    assert "| 0.80 |" in table                                      # plain fp16 against the fast one
    shape = {"kind": "linear", "rows": 64, "n": 8, "k": 8, "layers": 2, "fp16_ms": 0.02, "ms": 0.01,
             "speedup_vs_fp16": 2.0, "plan": "fused:64x64x64w4s3"}
    assert "| 2.00 | fused:64x64x64w4s3 |" in shapes_markdown({"sd15 W8A8": [shape]})
    assert _category("_lowbit_gemm_kernel") == "lowbit GEMM (Triton)"
    assert _category("flash_fwd_kernel") == "attention"
    assert _category("void at::native::elementwise_kernel") == "elementwise / other"

"""ATOP stage C on the procedural objects: joint type, axis, origin and range fitted by differentiable rendering
from random initialisation, across objects, seeds (size, colours, yaw) and view counts (one command).

    fewstep bench atop                       # python -m fewstep.bench.atop.table; writes bench/atop/results/

Each case renders motion evidence from the object's true joint (V views × T frames), fits both joint types
from screened random restarts and keeps the lower loss. Columns: chosen type, axis angle to the truth
(degrees), origin error (distance from the true origin to the fitted axis line / object diagonal; revolute),
range error (upper limit: degrees, or length / diagonal), final losses of both types, CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from fewstep.nodes.atop.evidence import EvidenceConfig, render_evidence
from fewstep.nodes.atop.fit import FitConfig, fit_articulation, joint_errors
from fewstep.nodes.atop.objects import OBJECTS, make_object, object_size

log = logging.getLogger("fewstep.atop.table")
RESULTS = Path(__file__).resolve().parent / "results"


def run_case(kind: str, seed: int, views: int, args: argparse.Namespace) -> dict[str, Any]:
    """One object, one seed, one view count: evidence, fit, errors."""
    mesh = make_object(kind, seed)
    truth = mesh.joints[0]
    evidence = render_evidence(mesh, EvidenceConfig(views=views, frames=args.frames, size=args.size))
    config = FitConfig(restarts=args.restarts, candidates=args.candidates, steps=args.steps, seed=seed)
    start = time.process_time()
    result = fit_articulation(mesh, truth.child, evidence, config)
    seconds = time.process_time() - start
    errors = joint_errors(truth, result.best, object_size(mesh))
    return {"object": kind, "seed": seed, "views": views, "cpu_seconds": seconds, **errors,
            "loss_revolute": result.by_kind["revolute"].loss, "loss_prismatic": result.by_kind["prismatic"].loss,
            "axis_fit": result.best.axis, "axis_true": truth.axis, "origin_fit": result.best.origin,
            "origin_true": truth.origin, "limits_fit": result.best.limits, "limits_true": truth.limits}


def summary(cases: list[dict[str, Any]]) -> dict[str, float]:
    """Type accuracy, mean and worst axis / origin errors over the cases."""
    axis = [c["axis_error_deg"] for c in cases]
    origin = [c["origin_error"] for c in cases if "origin_error" in c]
    return {"cases": len(cases), "type_accuracy": sum(bool(c["kind_correct"]) for c in cases) / len(cases),
            "axis_error_deg_mean": sum(axis) / len(axis), "axis_error_deg_max": max(axis),
            "origin_error_mean": sum(origin) / max(1, len(origin)), "origin_error_max": max(origin, default=float("nan"))}


def markdown(table: dict[str, Any]) -> str:
    """The README table: one line per case, then the summary line."""
    lines = ["| object | seed | views | type (true → fit) | axis error ° | origin error (/diag) | range error | "
             "loss rev. | loss pris. | CPU s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for c in table["cases"]:
        origin = f"{c['origin_error']:.4f}" if "origin_error" in c else "—"
        rng = f"{c['range_error_deg']:.2f}°" if "range_error_deg" in c else (
            f"{c['range_error']:.4f} /diag" if "range_error" in c else "—")
        lines.append(f"| {c['object']} | {c['seed']} | {c['views']} | {c['kind_true']} → {c['kind_fit']} | "
                     f"{c['axis_error_deg']:.2f} | {origin} | {rng} | {c['loss_revolute']:.4f} | "
                     f"{c['loss_prismatic']:.4f} | {c['cpu_seconds']:.0f} |")
    s = table["summary"]
    lines.append(f"\n{s['cases']} cases: joint type correct in {100 * s['type_accuracy']:.0f}%; axis error mean "
                 f"{s['axis_error_deg_mean']:.2f}°, worst {s['axis_error_deg_max']:.2f}°; origin error (revolute) mean "
                 f"{100 * s['origin_error_mean']:.2f}%, worst {100 * s['origin_error_max']:.2f}% of the object diagonal.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fewstep bench atop", description=__doc__.split("\n")[0])
    p.add_argument("--objects", nargs="+", default=sorted(OBJECTS), choices=sorted(OBJECTS), help="default: all three")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="object seeds (default 0 1 2)")
    p.add_argument("--views", nargs="+", type=int, default=[3], help="view counts to try (default 3)")
    p.add_argument("--frames", type=int, default=4, help="evidence frames per view (default 4)")
    p.add_argument("--size", type=int, default=48, help="evidence image side (default 48)")
    p.add_argument("--steps", type=int, default=100, help="optimisation steps per joint type (default 100)")
    p.add_argument("--restarts", type=int, default=4, help="restarts per joint type (default 4)")
    p.add_argument("--candidates", type=int, default=128, help="random joints screened for the restarts (default 128)")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for atop.json / atop.md (default bench/atop/results)")
    p.add_argument("--name", default="atop", help="file stem of the results (default atop)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)   # thousands of small ops: one thread is faster on a shared 2-core machine
    cases = []
    for kind in args.objects:
        for seed in args.seeds:
            for views in args.views:
                cases.append(run_case(kind, seed, views, args))
                c = cases[-1]
                log.info("%s seed %d views %d: %s -> %s, axis %.2f deg, origin %s, %.0f s", kind, seed, views,
                         c["kind_true"], c["kind_fit"], c["axis_error_deg"], c.get("origin_error", "-"), c["cpu_seconds"])
    table = {"command": "fewstep bench atop " + " ".join(argv or []), "date": datetime.now(timezone.utc).isoformat(),
             "machine": f"{platform.machine()} CPU ({platform.processor() or 'unknown'}), torch {torch.__version__}, 1 thread",
             "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
             "cases": cases}
    table["summary"] = summary(cases)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(table, indent=1) + "\n")
    (args.out / f"{args.name}.md").write_text(markdown(table) + "\n")
    print(markdown(table))  # noqa: T201 - the command's output is the table
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

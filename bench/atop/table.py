"""ATOP stage C on the procedural objects: joint type, axis, origin and range fitted by differentiable rendering
from random initialisation, across objects, seeds (size, colours, yaw) and view counts (one command).

    fewstep bench atop                       # python -m fewstep.bench.atop.table; writes bench/atop/results/
    fewstep bench atop --sds                 # photometric vs SDS vs both (personalised video model), 6 cases

With ``--sds`` (or ``--guidance ...``) the built-in video DiT is first personalised per category (LoRA, 800
steps on the evidence clips of object seeds 100-103 at 64 px, caption "[V] lid opening" etc.; stage A), then
every case is fitted once per guidance: photometric only, SDS only (the evidence's clips unread, only its
cameras) and both (photometric + 0.1 × SDS).

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
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from fewstep.nodes.atop.evidence import EvidenceConfig, render_evidence
from fewstep.nodes.atop.fit import FitConfig, fit_articulation, fitted_mesh, joint_errors
from fewstep.nodes.atop.motion import CAPTIONS, MotionPrior, PersonaliseConfig, category_clips, personalise
from fewstep.nodes.atop.objects import OBJECTS, make_object, object_size
from fewstep.nodes.atop.report import render_fit

log = logging.getLogger("fewstep.atop.table")
RESULTS = Path(__file__).resolve().parent / "results"


def run_case(kind: str, seed: int, views: int, args: argparse.Namespace, guidance: str = "photometric",
             prior: MotionPrior | None = None) -> dict[str, Any]:
    """One object, one seed, one view count, one guidance: evidence, fit, errors."""
    mesh = make_object(kind, seed)
    truth = mesh.joints[0]
    evidence = render_evidence(mesh, EvidenceConfig(views=views, frames=args.frames, size=args.size))
    config = FitConfig(restarts=args.restarts, candidates=args.candidates, steps=args.steps, seed=seed,
                       guidance=guidance, sds_weight=args.sds_weight)
    start = time.process_time()
    result = fit_articulation(mesh, truth.child, evidence, config, prior=prior)
    seconds = time.process_time() - start
    errors = joint_errors(truth, result.best, object_size(mesh))
    if prior is not None:   # does the prior itself prefer the true motion? (denoising error, fixed draws)
        fitted = render_fit(fitted_mesh(mesh, truth.child, result.best), evidence).reshape(evidence.frames.shape)
        errors["prior_error_truth"] = float(prior.denoising_score(evidence.frames).mean())
        errors["prior_error_fit"] = float(prior.denoising_score(fitted).mean())
    return {"object": kind, "seed": seed, "views": views, "guidance": guidance, "cpu_seconds": seconds, **errors,
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
    """The README table: one line per case, then the summary line (per guidance when several ran)."""
    if "by_guidance" in table:
        return guidance_markdown(table)
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


def guidance_markdown(table: dict[str, Any]) -> str:
    """Per case and guidance: type, axis / origin error, final losses; then one summary line per guidance."""
    lines = ["| object | seed | guidance | type (true → fit) | axis error ° | origin error (/diag) | loss rev. | "
             "loss pris. | prior error truth / fit | CPU s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for c in table["cases"]:
        origin = f"{c['origin_error']:.4f}" if "origin_error" in c else "—"
        lines.append(f"| {c['object']} | {c['seed']} | {c['guidance']} | {c['kind_true']} → {c['kind_fit']} | "
                     f"{c['axis_error_deg']:.2f} | {origin} | {c['loss_revolute']:.4f} | {c['loss_prismatic']:.4f} | "
                     f"{c.get('prior_error_truth', float('nan')):.4f} / {c.get('prior_error_fit', float('nan')):.4f} | "
                     f"{c['cpu_seconds']:.0f} |")
    lines += ["", "| guidance | cases | type correct | axis error ° (mean / worst) | origin error % diag (mean / worst) |",
              "|---|---|---|---|---|"]
    for guidance, s in table["by_guidance"].items():
        lines.append(f"| {guidance} | {s['cases']} | {round(s['type_accuracy'] * s['cases'])} | "
                     f"{s['axis_error_deg_mean']:.2f} / {s['axis_error_deg_max']:.2f} | "
                     f"{100 * s['origin_error_mean']:.2f} / {100 * s['origin_error_max']:.2f} |")
    for kind, info in table.get("personalisation", {}).items():
        lines.append(f"\nPersonalised prior for {kind} (\"{info['caption']}\"): {info['steps_done']} LoRA steps on "
                     f"{info['clips']} clips, final flow-matching loss {info['final_loss']:.3f} "
                     f"(step 1: {info['first_loss']:.3f}), {info['cpu_seconds']:.0f} CPU s.")
    return "\n".join(lines)


def personalised_priors(kinds: list[str], args: argparse.Namespace) -> tuple[dict[str, MotionPrior], dict[str, Any]]:
    """Stage A per category: the built-in video DiT + LoRA trained on the category's motion clips."""
    from fewstep.nodes.zoo.video.model import load_video_model

    model = load_video_model()
    priors, info = {}, {}
    config = PersonaliseConfig(views=3, frames=args.frames, steps=args.personalise_steps)
    for kind in kinds:
        prior, losses = personalise(model, category_clips(kind, config), CAPTIONS[kind], config)
        priors[kind] = prior
        info[kind] = {**(prior.info or {}), "first_loss": losses[0]}
        log.info("personalised %s: loss %.3f -> %.3f", kind, losses[0], info[kind]["final_loss"])
    return priors, info


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
    p.add_argument("--sds", action="store_true", help="photometric vs SDS vs both on 6 cases (seeds 0 1, 2 restarts "
                   "from 48 candidates, 60 steps); results atop_sds.*")
    p.add_argument("--guidance", nargs="+", choices=["photometric", "sds", "both"], default=None,
                   help="guidances to compare (default photometric; --sds: all three)")
    p.add_argument("--sds-weight", type=float, default=0.1, help="weight of the SDS term under 'both' (default 0.1)")
    p.add_argument("--personalise-steps", type=int, default=800, help="LoRA steps of stage A per category (default 800)")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    if args.sds:
        args.guidance = args.guidance or ["photometric", "sds", "both"]
        if args.seeds == [0, 1, 2]:
            args.seeds = [0, 1]
        if args.name == "atop":
            args.name = "atop_sds"
        if "--steps" not in argv:
            args.steps, args.restarts, args.candidates = 60, 2, 48
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)   # thousands of small ops: one thread is faster on a shared 2-core machine
    guidances = args.guidance or ["photometric"]
    priors, personalisation = ({}, {}) if guidances == ["photometric"] else personalised_priors(args.objects, args)
    cases = []
    for kind in args.objects:
        for seed in args.seeds:
            for views in args.views:
                for guidance in guidances:
                    cases.append(run_case(kind, seed, views, args, guidance, priors.get(kind)))
                    c = cases[-1]
                    log.info("%s seed %d views %d %s: %s -> %s, axis %.2f deg, origin %s, %.0f s", kind, seed, views,
                             guidance, c["kind_true"], c["kind_fit"], c["axis_error_deg"], c.get("origin_error", "-"),
                             c["cpu_seconds"])
    table = {"command": "fewstep bench atop " + " ".join(argv or []), "date": datetime.now(timezone.utc).isoformat(),
             "machine": f"{platform.machine()} CPU ({platform.processor() or 'unknown'}), torch {torch.__version__}, 1 thread",
             "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
             "cases": cases}
    table["summary"] = summary(cases)
    if args.guidance:
        table["by_guidance"] = {g: summary([c for c in cases if c["guidance"] == g]) for g in guidances}
        table["personalisation"] = personalisation
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(table, indent=1) + "\n")
    (args.out / f"{args.name}.md").write_text(markdown(table) + "\n")
    print(markdown(table))  # noqa: T201 - the command's output is the table
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

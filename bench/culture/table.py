"""Cultural accumulation in RL (Cook et al., NeurIPS 2024), reproduced at small scale (one command).

    fewstep bench culture                        # demo size on the CPU (minutes), into bench/culture/results/demo
    fewstep bench culture --preset full --device cuda --out DIR      # the GPU driver runs jobs in parallel
    fewstep bench culture --core s5              # the same with S5 agents, into bench/culture/results/demo_s5
    fewstep bench culture --paper                # GRU and S5 tables beside the paper's results (paper.py)

Trains the jobs of ``jobs.py`` (skipping any whose outputs exist in ``--out``), then evaluates and writes
``table.json``, ``table.md`` and the plots ``in_context.png``, ``sweep.png``, ``tsp.png``, ``in_weights.png``:

* in-context Memory Sequence: final-trial score per generation, against single-lifetime RL² trained on K-trial
  (``rl2``) and G·K-trial (``rl2long``) episodes evaluated at the same overall trial (equal experience), and
  the best noisy oracle's score;
* oracle-accuracy sweep: the last generation's final-trial score per oracle strength (paper: inverted U);
* TSP: final-trial tour length per generation (paper: 20.6 → 13.1 over 7 generations);
* in-weights: best score per generation against one agent trained 5× one generation's steps;
* in-context Goal Sequence (``goal`` jobs): final-trial score per generation (the previous generation acts as
  a body in the grid) against RL² on K- and G·K-trial episodes and the noisy oracle body's own score
  (``goal_sequence.png``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):          # run as a file (the GPU machine has no install): python bench/culture/table.py
    sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parent)]
    import jobs as J  # noqa: N812
    import paper
else:
    from fewstep.bench.culture import jobs as J  # noqa: N812
    from fewstep.bench.culture import paper

import torch

from fewstep.nodes.culture.agent import CORES
from fewstep.nodes.culture.plot import Series, line_plot, viridis
from fewstep.nodes.culture.runs import run_in_context, trial_curve
from fewstep.nodes.culture.summary import in_context_summary

log = logging.getLogger("fewstep.culture.table")
RESULTS = Path(__file__).resolve().parent / "results"
PAPER = {"tsp_tour": "Gen 0 20.6 -> Gen 4 17.4 -> Gen 7 13.1 (route length, paper Fig. 4)",
         "in_context": "accumulating agents beat RL2 trained on 1-generation and all-generations episodes and the "
                       "noisy oracles (Fig. 3)",
         "sweep": "accumulation degrades when oracles are too accurate or too random (inverted U, Fig. 3 right)",
         "in_weights": "after one generation, beats single-lifetime training of 5 generations' steps (Fig. 5)"}


def generations_eval(preset: J.Preset, out: Path, device: str, learner: str = "ic",
                     baselines: tuple[str, str] = ("rl2", "rl2long"), plot: str = "in_context.png"
                     ) -> dict[str, object]:
    """In-context generations of the ``learner`` policy against the RL² ``baselines`` (K-trial, G·K-trial
    training) at the same overall trial, and the best noisy oracle (Goal Sequence: the oracle body's score)."""
    ic = J.load_policy(out, learner, device)
    k, g = ic.env.num_trials, preset.generations
    gens = run_in_context(ic, g, preset.tasks, preset.population, seed=1)
    oracle = trial_curve(ic, k, max(preset.tasks, 256), seed=2, follow_oracle=True)
    curves = {short: trial_curve(J.load_policy(out, name, device), g * k, preset.tasks, seed=3)
              for short, name in zip(("rl2", "rl2long"), baselines, strict=True)}
    metrics, image = in_context_summary(gens, k, oracle, curves["rl2long"], ic.env.name)
    image.save(out / plot)
    finals = [x.trial_means()[-1] for x in gens]
    at = [(i + 1) * k - 1 for i in range(g)]
    return {"env": ic.env.name, "trial_means": [x.trial_means() for x in gens], "final_trial": finals,
            "rl2": curves["rl2"], "rl2long": curves["rl2long"], "oracle_trial_score": sum(oracle) / len(oracle),
            "rl2_at_same_trial": [curves["rl2"][i] for i in at], "rl2long_at_same_trial": [curves["rl2long"][i] for i in at],
            "metrics": metrics}


def in_context_eval(preset: J.Preset, out: Path, device: str) -> dict[str, object]:
    """Memory Sequence generations (``ic`` against ``rl2`` / ``rl2long``)."""
    return generations_eval(preset, out, device)


def goal_eval(preset: J.Preset, out: Path, device: str) -> dict[str, object]:
    """Goal Sequence generations: the previous generation is a body in the grid (``goal`` against
    ``goal_rl2`` / ``goal_rl2long``), generation 0 beside the noisy oracle body."""
    return generations_eval(preset, out, device, "goal", ("goal_rl2", "goal_rl2long"), "goal_sequence.png")


def sweep_eval(preset: J.Preset, out: Path, device: str) -> list[dict[str, object]]:
    rows = []
    for s in preset.sweep:
        name = "ic" if s == preset.memseq.oracle_strength else f"sweep_{s:g}"
        if not (out / f"policy_{name}.safetensors").exists():
            log.warning("sweep point %s missing (no %s)", s, name)
            continue
        pol = J.load_policy(out, name, device)
        gens = run_in_context(pol, preset.generations, preset.tasks, preset.population, seed=1)
        oracle = trial_curve(pol, preset.memseq.num_trials, max(preset.tasks, 256), seed=2, follow_oracle=True)
        rows.append({"strength": s, "max_accuracy": 1 - 1 / (1 + s), "gen0_final": gens[0].trial_means()[-1],
                     "last_final": gens[-1].trial_means()[-1], "best_final": max(x.trial_means()[-1] for x in gens),
                     "oracle_trial_score": sum(oracle) / len(oracle)})
    if rows:
        xs = [float(i) for i in range(len(rows))]
        plot = line_plot([Series(xs, [r["last_final"] for r in rows], viridis(0.9), "last gen"),
                          Series(xs, [r["gen0_final"] for r in rows], viridis(0.0), "gen 0"),
                          Series(xs, [r["oracle_trial_score"] for r in rows], (0, 0, 0), "oracle", dashed=True)],
                         title="Oracle-accuracy sweep (x: strength index " + ", ".join(f"{r['strength']:g}" for r in rows) + ")",
                         xlabel="oracle strength", ylabel="final-trial score")
        plot.save(out / "sweep.png")
    return rows


def tsp_eval(preset: J.Preset, out: Path, device: str) -> dict[str, object]:
    pol = J.load_policy(out, "tsp", device)
    gens = run_in_context(pol, preset.generations, preset.tasks, preset.population, seed=1)
    oracle = trial_curve(pol, preset.tsp.num_trials, max(preset.tasks, 256), seed=2, follow_oracle=True)
    metrics, image = in_context_summary(gens, preset.tsp.num_trials, oracle, None, "tsp")
    image.save(out / "tsp_trials.png")
    tours = [x.final_tour() for x in gens]
    complete = [float(x.tours[..., -1].isfinite().float().mean()) for x in gens]
    xs = [float(i) for i in range(len(tours))]
    line_plot([Series(xs, tours, viridis(0.3), "final-trial tour")], title="TSP: tour length per generation",
              xlabel="generation", ylabel="tour length").save(out / "tsp.png")
    return {"final_tour": [J.finite(t) for t in tours], "complete_fraction": complete,
            "optimal_tour": optimal_tours(pol, preset.tasks, device),
            "trial_means": [x.trial_means() for x in gens], "metrics": metrics}


def optimal_tours(pol: object, tasks: int, device: str) -> float:
    """Mean optimal tour over the fixed tasks, by brute force (N ≤ 8 cities)."""
    import itertools

    pos = pol.env.tasks(tasks, "cpu")                                              # [B, N, 2]
    n = pos.shape[1]
    perms = torch.tensor([(0, *p, 0) for p in itertools.permutations(range(1, n))])   # [(N-1)!, N+1]
    legs = (pos[:, perms[:, 1:]] - pos[:, perms[:, :-1]]).norm(dim=-1).sum(-1)     # [B, (N-1)!]
    return float(legs.min(1).values.mean())


def in_weights_plot(out: Path) -> dict[str, object]:
    data = json.loads((out / "in_weights.json").read_text())
    best = data["generation_best"]
    xs = [float(i) for i in range(len(best))]
    lines = [Series(xs, best, viridis(0.6), "from scratch")]
    if data.get("resets_best"):
        lines.append(Series(xs, data["resets_best"], viridis(0.1), "head resets"))
    line_plot(lines, title="In-weights accumulation",
              xlabel="generation", ylabel="final score", hlines=[(data["single_best"], f"single {data['baseline_factor']}x")]
              ).save(out / "in_weights.png")
    return data


def _f(x: object) -> str:
    return "—" if x is None else f"{x:.2f}" if isinstance(x, float) else str(x)


def _generations_table(title: str, ic: dict[str, object], oracle_words: str) -> list[str]:
    lines = [title, "", "| generation | final-trial score | RL2 (K-trial training) | RL2 (G·K-trial training) |",
             "|---|---|---|---|"]
    for g, s in enumerate(ic["final_trial"]):
        lines.append(f"| {g} | {_f(s)} | {_f(ic['rl2_at_same_trial'][g])} | {_f(ic['rl2long_at_same_trial'][g])} |")
    return [*lines, "", f"{oracle_words}: {_f(ic['oracle_trial_score'])} per trial.", ""]


def markdown(result: dict[str, object]) -> str:
    """The table of ``result`` (what ``table.md`` holds and the README / docs quote)."""
    factor = result.get("steps_factor", 1)
    lines = [f"Preset `{result['preset']}`{f' with {factor}x the PPO steps' if factor != 1 else ''}, "
             f"{result.get('core', 'gru').upper()} agents, on {result['device']}; commands and settings in table.json.",
             ""]
    ic = result.get("in_context")
    if ic:
        lines += _generations_table("**In-context Memory Sequence** (final-trial score = digits right in the last "
                                    "trial; RL2 at the same overall trial, i.e. the same experience):", ic,
                                    "Best noisy oracle followed blindly")
        lines += [f"Paper: {PAPER['in_context']}.", ""]
    goal = result.get("goal_sequence")
    if goal:
        lines += _generations_table("**In-context Goal Sequence** (final-trial score = goals entered in order in "
                                    "the last trial; generation 0 beside the noisy oracle body, generation g+1 "
                                    "beside generation g's best agent as a body in the grid):", goal,
                                    "Noisy oracle body's own score")
    sw = result.get("sweep")
    if sw:
        lines += ["**Oracle-accuracy sweep** (oracle accuracy p ≤ 1 − 1/(1+s)):", "",
                  "| strength s | max p | oracle score | gen 0 final | last gen final | best gen final |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['strength']:g} | {r['max_accuracy']:.2f} | {_f(r['oracle_trial_score'])} | {_f(r['gen0_final'])} "
                  f"| {_f(r['last_final'])} | {_f(r['best_final'])} |" for r in sw]
        lines += ["", f"Paper: {PAPER['sweep']}.", ""]
    tsp = result.get("tsp")
    if tsp:
        lines += ["**TSP** (final-trial tour length of completed tours, per generation; optimum by brute force "
                  f"{_f(tsp['optimal_tour'])}):", "", "| generation | tour length | complete |", "|---|---|---|"]
        lines += [f"| {g} | {_f(t)} | {c:.0%} |" for g, (t, c) in enumerate(zip(tsp["final_tour"], tsp["complete_fraction"],
                                                                             strict=True))]
        lines += ["", f"Paper: {PAPER['tsp_tour']} (their units and city count differ; compare the trend).", ""]
    iw = result.get("in_weights")
    if iw:
        lines += ["**In-weights Memory Sequence** (best member's score on the fixed sequence, others hidden):", "",
                  "| generation | best score (from scratch) | best score (head resets) | steps |", "|---|---|---|---|"]
        resets = iw.get("resets_best") or [None] * len(iw["generation_best"])
        lines += [f"| {g} | {_f(s)} | {_f(r)} | {iw['steps_per_generation']} |"
                  for g, (s, r) in enumerate(zip(iw["generation_best"], resets, strict=True))]
        lines += [f"| single agent, {iw['baseline_factor']}× one generation | {_f(iw['single_best'])} | | {iw['single_steps']} |",
                  "", f"Paper: {PAPER['in_weights']}.", ""]
    return "\n".join(lines)


def evaluate(preset_name: str, out: Path, device: str, core: str = "gru", steps_factor: int = 1) -> dict[str, object]:
    preset = J.PRESETS[preset_name]
    result: dict[str, object] = {"preset": preset_name, "device": torch.cuda.get_device_name() if device == "cuda"
                                 else "CPU", "core": core, "steps_factor": steps_factor, "trainings": {}}
    for path in sorted(out.glob("train_*.json")):
        meta = json.loads(path.read_text())
        result["trainings"][path.stem[6:]] = {k: meta[k] for k in ("seconds", "ppo", "episode_trials", "device")}
    if (out / "policy_ic.safetensors").exists() and (out / "policy_rl2long.safetensors").exists():
        result["in_context"] = in_context_eval(preset, out, device)
    result["sweep"] = sweep_eval(preset, out, device)
    if (out / "policy_tsp.safetensors").exists():
        result["tsp"] = tsp_eval(preset, out, device)
    if (out / "in_weights.json").exists():
        result["in_weights"] = in_weights_plot(out)
    if all((out / f"policy_{name}.safetensors").exists() for name in J.GOAL_JOBS):
        result["goal_sequence"] = goal_eval(preset, out, device)
    (out / "table.json").write_text(json.dumps(result, indent=1, default=J.finite))
    (out / "table.md").write_text(markdown(result))
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fewstep bench culture", description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=sorted(J.PRESETS), default="demo")
    p.add_argument("--out", type=Path, default=None, help="results folder (default bench/culture/results/<preset>)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--jobs", nargs="*", default=None, help="train only these jobs (default: all missing ones)")
    p.add_argument("--no-eval", action="store_true", help="train only (the GPU driver evaluates once at the end)")
    p.add_argument("--seed", type=int, default=0, help="training seed (tasks and evaluation draws stay fixed)")
    p.add_argument("--list-jobs", action="store_true", help="print the preset's job names and exit")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: measured fastest on a busy 2-core box)")
    p.add_argument("--core", choices=CORES, default="gru", help="the agents' recurrent core (the paper: s5)")
    p.add_argument("--steps-factor", type=int, default=1, help="train every job with this many times the preset's "
                   "PPO steps (results folder <preset>[_s5]_x<F>)")
    p.add_argument("--paper", action="store_true", help="train nothing: write <preset>_paper/paper.md and paper.png, "
                   "the GRU and S5 tables beside the paper's reported results")
    p.add_argument("--results", type=Path, default=RESULTS, help="where --paper looks for <preset>[_s5]/table.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.paper:
        sys.stdout.write(paper.write(args.results, args.preset))
        return 0
    torch.set_num_threads(args.threads)
    suffix = ("_s5" if args.core == "s5" else "") + (f"_x{args.steps_factor}" if args.steps_factor != 1 else "") \
        + (f"_seed{args.seed}" if args.seed else "")
    out = args.out or RESULTS / (args.preset + suffix)
    preset = J.scaled(J.PRESETS[args.preset], args.steps_factor)
    if args.list_jobs:
        sys.stdout.write(" ".join(J.all_jobs(preset)) + "\n")
        return 0
    for job in args.jobs if args.jobs is not None else J.all_jobs(preset):
        done = out / ("in_weights.json" if job == "in_weights" else f"policy_{job}.safetensors")
        if done.exists():
            continue
        log.info("training %s", job)
        if job == "in_weights":
            J.in_weights_job(preset, out, args.device, args.seed, args.core)
        else:
            J.train_job(preset, job, out, args.device, args.seed, args.core)
    if not args.no_eval:
        evaluate(args.preset, out, args.device, args.core, args.steps_factor)
        sys.stdout.write((out / "table.md").read_text() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Comparison nodes: sweep several MODELs (each with its sampler and schedule) over prompts and draw the
results as one labelled image grid beside a METRICS table. The library is ``fewstep.nodes.core.compare``.

    loaders ─► Compare: Add Model ─► Compare: Add Model ─► … ─► Compare: Sample Sweep ─► Compare: Image Grid
               (name, MODEL, SAMPLER, SIGMAS, cfg)                 (prompts, seed, metrics)   (labels, table)

Method packs may not import each other, so these live in core and take the packs' MODEL/SAMPLER/SIGMAS
links: the graph wires each pack's loader and scheduler into them.
"""

from __future__ import annotations

from typing import Any

from fewstep.app.api import (
    Combo,
    Float,
    Int,
    Link,
    Node,
    NodeOutput,
    Output,
    Schema,
    String,
    current_context,
)
from fewstep.nodes.core.train.seeds import fixed_seed

CATEGORY = "fewstep/compare"
SWEEP = "SWEEP"
"""Link type: a tuple of ``fewstep.nodes.core.compare.Contender`` (name, MODEL, SAMPLER, SIGMAS, cfg, metrics),
the rows of a comparison in the order they were added."""
COLUMN_MODES = ("prompts", "steps × prompts")   # == compare.COLUMN_MODES (kept here so listing imports no torch)


class CompareAddModel(Node):
    """Adds a model (with the sampler, schedule and CFG it is meant to run with) to a comparison sweep."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(
            node_id="CompareAddModel", display_name="Compare: Add Model", category=CATEGORY,
            description="One row of a comparison: the MODEL sampled with its SAMPLER on its SIGMAS. A SIGMAS list "
                        "(a scheduler fed by 'Compare: Step Counts') adds one row per step count. Chain the SWEEP "
                        "outputs to compare several models.",
            inputs=[String("name", "model", tooltip="row label; the step count is added to it"),
                    Link("model", "MODEL"), Link("sampler", "SAMPLER"), Link("sigmas", "SIGMAS"),
                    Float("cfg", 1.0, min=0.0, max=100.0, step=0.1, round=0.01,
                          tooltip="classifier-free guidance with the sweep's negative prompt; 1 = none (one "
                                  "model call per step: distilled students)"),
                    Link("sweep", SWEEP, optional=True, tooltip="the rows added so far"),
                    Link("metrics", "METRICS", optional=True,
                         tooltip="numbers to show in this row's table (e.g. a quantizer's weight memory)")],
            outputs=[Output("SWEEP", SWEEP)], is_input_list=True)

    @classmethod
    def execute(cls, name: list[str], model: list[Any], sampler: list[Any], sigmas: list[Any], cfg: list[float],
                sweep: list[tuple[Any, ...]] | None = None, metrics: list[dict[str, Any]] | None = None) -> NodeOutput:
        from fewstep.nodes.core.compare import contenders

        before = tuple(c for chain in (sweep or []) for c in chain)
        return NodeOutput(before + tuple(contenders(name[0], model, sampler, sigmas, cfg[0], metrics or ())))


class CompareStepCounts(Node):
    """A list of step counts: wired into a scheduler's ``steps``, it runs the scheduler once per count."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="CompareStepCounts", display_name="Compare: Step Counts", category=CATEGORY,
                      description="Step counts as a list (e.g. 1, 2, 4, 8): a scheduler fed by it outputs one "
                                  "SIGMAS per count, and 'Compare: Add Model' makes one row of each.",
                      inputs=[String("steps", "1, 2, 4, 8", tooltip="comma-separated positive integers")],
                      outputs=[Output("steps", "INT", is_list=True)])

    @classmethod
    def execute(cls, steps: str) -> NodeOutput:
        return NodeOutput(parse_step_counts(steps))

    @classmethod
    def validate_inputs(cls, steps: str | None) -> bool | str:
        if steps is None:
            return True
        try:
            parse_step_counts(steps)
        except ValueError as exc:
            return str(exc)
        return True


def parse_step_counts(text: str) -> list[int]:
    """``"1, 2, 4, 8"`` -> [1, 2, 4, 8]; each a positive integer."""
    items = [item.strip() for item in text.replace(";", ",").split(",") if item.strip()]
    if not items or not all(item.isdigit() and int(item) > 0 for item in items):
        raise ValueError(f"steps must be comma-separated positive integers like '1, 2, 4, 8', got {text!r}")
    return [int(item) for item in items]


class CompareSweep(Node):
    """Samples every model of a SWEEP on the same prompts and noise; times and scores each row."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(
            node_id="CompareSweep", display_name="Compare: Sample Sweep", category=CATEGORY,
            description="Samples each row of the SWEEP on every prompt (one per line, the grid's columns) with one "
                        "noise seed. METRICS per row: sampling seconds per image (this machine, batch = prompts), "
                        "FD-EffNet against procedural renders (noisy below ~100 images per row) and, for prompts "
                        "of the built-in scene grammar, the probe's attribute accuracy and the fraction of images "
                        "whose scene it reads exactly.",
            inputs=[Link("sweep", SWEEP), Link("clip", "CLIP"), Link("vae", "VAE"),
                    Link("latent_image", "LATENT", tooltip="batch 1 (repeated per prompt) or one per prompt"),
                    String("prompts", "a large red circle above a large green cross", multiline=True,
                           tooltip="one prompt per line: the grid's columns"),
                    String("negative_prompt", "", tooltip="for rows with cfg != 1"),
                    fixed_seed("seed", 0, tooltip="noise seed, the same for every row"),
                    Combo("columns", list(COLUMN_MODES), default="prompts",
                          tooltip="prompts: one row per model and step count; steps × prompts: one row per model "
                                  "(each model needs the same step counts)"),
                    Int("fd_reference", 64, min=0, max=10000,
                        tooltip="procedural renders FD-EffNet compares against; 0 = skip FD")],
            outputs=[Output("images", "IMAGE"), Output("row_labels", "STRING"), Output("column_labels", "STRING"),
                     Output("METRICS", "METRICS")])

    @classmethod
    def execute(cls, sweep: tuple[Any, ...], clip: Any, vae: Any, latent_image: dict, prompts: str,
                negative_prompt: str, seed: int, columns: str, fd_reference: int) -> NodeOutput:
        from fewstep.nodes.core.compare import layout, regroup_metrics, run_sweep, sweep_metrics

        texts = _lines(prompts)
        if not sweep:
            raise ValueError("CompareSweep: the SWEEP is empty; connect 'Compare: Add Model'")
        grid = layout(sweep, texts, columns)
        context = current_context()
        progress = context.progress if context is not None else None
        images, seconds = run_sweep(sweep, clip, vae, texts, negative_prompt, latent_image, seed, progress)
        metrics = sweep_metrics(sweep, images, seconds, texts, fd_reference)
        metrics = regroup_metrics(metrics, sweep, grid)
        return NodeOutput(images, "\n".join(grid.rows), "\n".join(grid.columns), metrics, ui={"metrics": [metrics]})


def _lines(text: str) -> list[str]:
    lines = _labels(text)
    if not lines:
        raise ValueError("give at least one prompt (one per line)")
    return lines


class CompareImageGrid(Node):
    """Draws images as a labelled grid (row labels left, column labels on top, METRICS per row on the right)."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(
            node_id="CompareImageGrid", display_name="Compare: Image Grid", category=CATEGORY,
            description="One labelled IMAGE from a batch (or a list of batches) of images in row-major order. Labels "
                        "are one per line; empty ones are numbered. METRICS keyed '<row> | <metric>' are drawn as a "
                        "table beside their rows. Text is Pillow's default font.",
            inputs=[Link("images", "IMAGE"),
                    String("row_labels", "", multiline=True, tooltip="one per line, top to bottom"),
                    String("column_labels", "", multiline=True, tooltip="one per line, left to right"),
                    Link("metrics", "METRICS", optional=True),
                    Int("tile_px", 128, min=16, max=1024, step=8, tooltip="each image is drawn this size"),
                    Int("font_px", 13, min=6, max=64, tooltip="label text height")],
            outputs=[Output("IMAGE", "IMAGE")], is_input_list=True)

    @classmethod
    def execute(cls, images: list[Any], row_labels: list[str], column_labels: list[str], tile_px: list[int],
                font_px: list[int], metrics: list[dict[str, Any]] | None = None) -> NodeOutput:
        import torch

        from fewstep.nodes.core.compare import GridStyle, draw_grid, grid_shape, metric_table

        batch = torch.cat([image.float().cpu() for image in images])
        rows, cols = grid_shape(len(batch), _labels(row_labels[0]), _labels(column_labels[0]))
        merged = {k: v for m in (metrics or []) for k, v in m.items()}
        _, names, cells = metric_table(merged)
        style = GridStyle(tile=tile_px[0], font_px=font_px[0], label_width=max(150, 10 * font_px[0]),
                          value_width=max(84, 6 * font_px[0]))
        return NodeOutput(draw_grid(batch, rows, cols, (names, cells) if names else None, style))


def _labels(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


NODES: tuple[type[Node], ...] = (CompareAddModel, CompareStepCounts, CompareSweep, CompareImageGrid)

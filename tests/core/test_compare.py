"""Comparison nodes and library: contenders from lists, grid layout and drawing, the sweep (same noise for
every row, CFG only where asked), and the per-row metrics (probe reads, weight memory, attached numbers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fewstep.nodes.core import compare as C
from fewstep.nodes.core.denoiser import Denoiser
from fewstep.nodes.core.nodes_compare import (
    CompareAddModel,
    CompareImageGrid,
    CompareStepCounts,
    parse_step_counts,
)
from fewstep.nodes.core.samplers import get_sampler
from fewstep.nodes.core.schedules import sgm_uniform
from fewstep.nodes.core.train.vp import DiscreteVPSchedule, linear_beta_alphas_cumprod

# ------------------------------------------------------------------------------------------ toy models


class PromptMean(torch.nn.Module):
    """x0-prediction that ignores x: every latent pixel = the mean of the prompt's token states (so the image
    shows which prompt a row was sampled with), plus a weight to count parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(250_000), requires_grad=False)   # 1 MB of float32

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        level = cond["context"].mean(dim=(1, 2)).reshape(-1, 1, 1, 1)          # [B, 1, 1, 1]
        return level.expand_as(x) * self.scale[0]


class ToyClip:
    """encode(text) -> CONDITIONING [[states [1, 3, 4], {}]]; states = a number derived from the text."""

    def encode(self, text: str) -> list[list]:
        return [[torch.full((1, 3, 4), (len(text) % 7) / 7.0), {}]]


class ToyVae:
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return latent[:, :3].clamp(0, 1).permute(0, 2, 3, 1)                   # [B, h, w, 3]


def _model() -> Denoiser:
    schedule = DiscreteVPSchedule.from_alphas_cumprod(linear_beta_alphas_cumprod())
    return Denoiser(PromptMean(), "x0", schedule)


def _contender(name: str, model: Denoiser, steps: int = 2, cfg: float = 1.0) -> C.Contender:
    return C.Contender(name, model, get_sampler("euler"), sgm_uniform(model.schedule, steps), cfg)


# ------------------------------------------------------------------------------------------ contenders, layout


def test_a_sigmas_list_makes_one_contender_per_step_count_with_the_model_repeated() -> None:
    model = _model()
    sigmas = [sgm_uniform(model.schedule, n) for n in (1, 2, 4)]
    rows = C.contenders("teacher", [model], [get_sampler("euler")], sigmas, 5.0)
    assert [c.label for c in rows] == ["teacher · 1 step", "teacher · 2 steps", "teacher · 4 steps"]
    assert all(c.model is model and c.cfg == 5.0 for c in rows)


def test_contender_names_must_be_usable_as_metric_rows() -> None:
    model = _model()
    with pytest.raises(ValueError, match="must not contain"):
        C.contenders("a | b", [model], [get_sampler("euler")], [sgm_uniform(model.schedule, 2)], 1.0)


def test_layout_prompts_across_and_steps_across() -> None:
    model = _model()
    sweep = [_contender("A", model, 1), _contender("A", model, 2), _contender("B", model, 1),
             _contender("B", model, 2)]
    by_prompt = C.layout(sweep, ["p1", "p2"], "prompts")
    assert by_prompt.rows == ["A · 1 step", "A · 2 steps", "B · 1 step", "B · 2 steps"]
    assert by_prompt.columns == ["p1", "p2"]
    by_steps = C.layout(sweep, ["p1"], "steps × prompts")
    assert by_steps.rows == ["A", "B"] and by_steps.columns == ["1 step", "2 steps"]


def test_layout_refuses_ambiguous_rows() -> None:
    model = _model()
    with pytest.raises(ValueError, match="share the label"):
        C.layout([_contender("A", model), _contender("A", model)], ["p"], "prompts")
    with pytest.raises(ValueError, match="same step counts"):
        C.layout([_contender("A", model, 1), _contender("B", model, 2)], ["p"], "steps × prompts")


def test_metrics_regrouped_onto_rows_of_the_steps_layout() -> None:
    model = _model()
    sweep = [_contender("A", model, 1), _contender("A", model, 2)]
    grid = C.layout(sweep, ["p"], "steps × prompts")
    regrouped = C.regroup_metrics({"A · 1 step | s/image": 0.1, "A · 2 steps | s/image": 0.2, "n": 1}, sweep, grid)
    assert regrouped == {"A | s/image · 1 step": 0.1, "A | s/image · 2 steps": 0.2, "n": 1}
    rows, names, cells = C.metric_table(regrouped)
    assert rows == ["A"] and names == ["s/image · 1 step", "s/image · 2 steps"]
    assert cells[("A", "s/image · 2 steps")] == 0.2


def test_step_counts_parse_and_refuse() -> None:
    assert parse_step_counts("1, 2,4 ;8") == [1, 2, 4, 8]
    assert CompareStepCounts.execute("2, 4").values == ([2, 4],)
    for bad in ("", "1, two", "0, 4", "-1"):
        with pytest.raises(ValueError, match="positive integers"):
            parse_step_counts(bad)
    assert "positive integers" in CompareStepCounts.validate_inputs("4, x")


# ------------------------------------------------------------------------------------------ sweep


def test_sweep_gives_every_row_the_same_noise_and_each_column_its_prompt() -> None:
    model = _model()
    sweep = [_contender("A", model), _contender("B", model)]
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    images, seconds = C.run_sweep(sweep, ToyClip(), ToyVae(), ["ab", "abcd"], "", latent, seed=3)
    assert images.shape == (4, 8, 8, 3) and len(seconds) == 2 and min(seconds) >= 0
    torch.testing.assert_close(images[0:2], images[2:4], rtol=0, atol=0)         # same model, same noise
    assert not torch.allclose(images[0], images[1])                              # the columns' prompts differ


def test_sweep_uses_cfg_only_for_rows_that_ask_for_it() -> None:
    model = _model()
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    plain, _ = C.run_sweep([_contender("A", model)], ToyClip(), ToyVae(), ["abc"], "", latent, seed=0)
    guided, _ = C.run_sweep([_contender("A", model, cfg=3.0)], ToyClip(), ToyVae(), ["abc"], "", latent, seed=0)
    # x0 = u + 3 (c - u) with c = 3/7 (prompt "abc") and u = 0 (the empty negative prompt): 9/7, clamped to 1
    assert float(plain.mean()) == pytest.approx(3 / 7, abs=1e-5)
    assert float(guided.mean()) == pytest.approx(1.0, abs=1e-5)


def test_latent_batch_must_be_one_or_one_per_prompt() -> None:
    assert C.repeat_latent({"samples": torch.zeros(1, 4, 2, 2)}, 3)["samples"].shape[0] == 3
    with pytest.raises(ValueError, match="one per prompt"):
        C.repeat_latent({"samples": torch.zeros(2, 4, 2, 2)}, 3)


def test_add_model_chains_rows_and_attaches_metrics() -> None:
    model = _model()
    sigmas = sgm_uniform(model.schedule, 2)
    first = CompareAddModel.execute(["fp"], [model], [get_sampler("euler")], [sigmas], [1.0]).values[0]
    both = CompareAddModel.execute(["W8A8"], [model], [get_sampler("euler")], [sigmas], [1.0], sweep=[first],
                                   metrics=[{"mean_weight_bits": 8.0}]).values[0]
    assert [c.label for c in both] == ["fp · 2 steps", "W8A8 · 2 steps"]
    assert both[1].metrics == {"mean_weight_bits": 8.0} and both[0].metrics == {}


def test_sweep_node_lays_out_steps_across_and_keys_metrics_by_row() -> None:
    from fewstep.nodes.core.nodes_compare import CompareSweep

    model = _model()
    sweep = C.contenders("A", [model], [get_sampler("euler")], [sgm_uniform(model.schedule, n) for n in (1, 2)], 1.0)
    sweep += C.contenders("B", [model], [get_sampler("euler")], [sgm_uniform(model.schedule, n) for n in (1, 2)], 1.0)
    out = CompareSweep.execute(tuple(sweep), ToyClip(), ToyVae(), {"samples": torch.zeros(1, 4, 8, 8)},
                               "ab\n\nabcd\n", "", 0, "steps × prompts", 0)
    images, rows, columns, metrics = out.values
    assert images.shape == (8, 8, 8, 3)                                      # 2 models x 2 step counts x 2 prompts
    assert rows == "A\nB"
    assert columns.splitlines() == ["1 step · ab", "1 step · abcd", "2 steps · ab", "2 steps · abcd"]
    assert {"A | s/image · 1 step", "B | s/image · 2 steps"} <= set(metrics)
    assert out.ui == {"metrics": [metrics]}
    with pytest.raises(ValueError, match="SWEEP is empty"):
        CompareSweep.execute((), ToyClip(), ToyVae(), {"samples": torch.zeros(1, 4, 8, 8)}, "ab", "", 0, "prompts", 0)


# ------------------------------------------------------------------------------------------ metrics


def _scenes(n: int) -> tuple[torch.Tensor, list[str]]:
    """The first n held-out procedural scenes: renders [n, 64, 64, 3] and captions."""
    from fewstep.nodes.core.metrics import reference_images

    return reference_images(n, seed=0)


def test_probe_reads_true_renders_and_not_an_empty_canvas() -> None:
    renders, captions = _scenes(3)
    scenes = C.parsed_scenes(captions)
    assert C.probe_reads(renders, scenes) == [True, True, True]
    empty = torch.full((3, 64, 64, 3), 36 / 255.0)            # the renders' background, no objects
    assert C.probe_reads(empty, scenes) == [False, False, False]
    assert C.parsed_scenes(["a cat"]) is None


def test_sweep_metrics_per_row_with_attached_numbers() -> None:
    renders, captions = _scenes(2)
    model = _model()
    sweep = [_contender("true", model), _contender("blank", model)]
    sweep[1].metrics["mean_weight_bits"] = 4.0
    images = torch.cat([renders, torch.full((2, 64, 64, 3), 36 / 255.0)])
    metrics = C.sweep_metrics(sweep, images, [0.5, 0.25], captions, fd_reference=0)
    assert metrics["true · 2 steps | probe reads prompt"] == 1.0
    assert metrics["blank · 2 steps | probe reads prompt"] == 0.0
    assert metrics["true · 2 steps | attribute acc."] > metrics["blank · 2 steps | attribute acc."]
    assert metrics["blank · 2 steps | s/image"] == 0.25
    assert metrics["true · 2 steps | weights MB"] == pytest.approx(1.0)
    assert metrics["blank · 2 steps | mean_weight_bits"] == 4.0
    assert not any("FD-EffNet" in key for key in metrics)                     # fd_reference = 0 skips FD


@pytest.mark.parametrize(("n", "m"), [(4, 64), (7, 5), (30, 40)])
def test_few_sample_frechet_distance_equals_the_matrix_square_root_form(n: int, m: int) -> None:
    from fewstep.nodes.core.metrics import frechet_distance, frechet_distance_few

    rng = np.random.default_rng(n * m)
    a, b = rng.normal(size=(n, 24)), 0.5 + 2.0 * rng.normal(size=(m, 24))
    # both sides hold rank-deficient covariances when n or m < 24, where sqrtm is only accurate to ~1e-6
    assert frechet_distance_few(a, b) == pytest.approx(frechet_distance(a, b), rel=1e-6)
    assert frechet_distance_few(a, a) == pytest.approx(0.0, abs=1e-9)


# ------------------------------------------------------------------------------------------ drawing


def test_grid_places_each_image_in_its_cell_and_draws_labels_and_table() -> None:
    colours = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 0]])
    images = colours[:, None, None, :].expand(4, 8, 8, 3)
    style = C.GridStyle(tile=32, gap=4, pad=8, font_px=12, label_width=60, value_width=50)
    table = (["s/image"], {("row B", "s/image"): 0.125})
    grid = C.draw_grid(images, ["row A", "row B"], ["left", "right"], table, style)[0]   # [H, W, 3]
    left = style.pad + style.label_width + style.gap
    head = grid.shape[0] - style.pad - 2 * (style.tile + style.gap)
    assert grid.shape[1] == left + 2 * (32 + 4) + (50 + 4) + style.pad
    for index, colour in enumerate(colours):
        r, c = divmod(index, 2)
        y, x = head + r * (32 + 4) + 16, left + c * (32 + 4) + 16
        torch.testing.assert_close(grid[y, x], colour)
    background = torch.tensor(C.BACKGROUND, dtype=torch.float32) / 255

    def ink(y0: int, y1: int, x0: int, x1: int) -> int:
        return int((grid[y0:y1, x0:x1] - background).abs().sum(-1).gt(0.3).sum())

    def inked(y0: int, y1: int, x0: int, x1: int) -> bool:
        return ink(y0, y1, x0, x1) > 0

    assert inked(head, head + 32, style.pad, left - style.gap)                        # row label "row A"
    assert inked(0, head, left, left + 32)                                            # column label "left"
    table_x = left + 2 * (32 + 4)
    value_b = ink(head + 36, head + 68, table_x, table_x + 50)                        # row B: "0.125"
    assert 0 < ink(head, head + 32, table_x, table_x + 50) < value_b / 2              # row A: a dash


def test_labels_wrap_within_their_column_even_one_long_word() -> None:
    face = C.font(13)
    text = "a large red cross, a small purple square and weight_bytes_quantized_in_one_word"
    lines = C.wrap(text, face, 84)
    assert len(lines) > 3 and all(face.getlength(line) <= 84 for line in lines)
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")           # nothing lost or reordered


def test_grid_refuses_more_images_than_cells_and_numbers_missing_labels() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        C.draw_grid(torch.zeros(5, 4, 4, 3), ["a", "b"], ["x", "y"])
    assert C.grid_shape(6, [], ["x", "y", "z"]) == (["1", "2"], ["x", "y", "z"])
    assert C.grid_shape(3, [], []) == (["1"], ["1", "2", "3"])


def test_grid_node_takes_a_list_of_batches_and_metrics() -> None:
    batches = [torch.zeros(2, 8, 8, 3), torch.ones(2, 8, 8, 3)]
    out = CompareImageGrid.execute(batches, ["first\nsecond"], [""], [16], [10],
                                   metrics=[{"first | s/image": 0.1}]).values[0]
    assert out.shape[0] == 1 and out.shape[-1] == 3
    without = CompareImageGrid.execute(batches, ["first\nsecond"], [""], [16], [10]).values[0]
    assert out.shape[2] > without.shape[2]                                   # the table adds a column

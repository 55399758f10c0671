"""Graph-level CPU runs through the engine on tiny random AR/MAR models (stub loader nodes, seconds):
DDPairDataset → DDTrain → DDSampler (1 and 2 steps, teacher-involved), resumed re-runs, and MAR + DiSA."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from fewstep.app.api import Int, Link, Node, NodeOutput, Output, Paths, Schema

L, K, D, C = 16, 12, 4, 8


class _StubMiniLM:
    """A deterministic stand-in for MiniLM: pooled [n, C] from a hash of each prompt."""

    device = torch.device("cpu")

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = torch.stack([torch.randn(C, generator=torch.Generator().manual_seed(sum(map(ord, p))))
                              for p in prompts])
        return pooled[:, None], pooled


class TinyAR(Node):
    """A random tiny AR (or MAR) model with a 16x16 tokenizer (16 tokens) as AR_MODEL + CLIP."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="TinyAR", category="test", inputs=[Int("mar", 0, min=0, max=1)],
                      outputs=[Output("AR_MODEL", "AR_MODEL"), Output("CLIP", "CLIP")])

    @classmethod
    def execute(cls, mar: int) -> NodeOutput:
        from fewstep.nodes.core.ar.bundle import ARModelBundle
        from fewstep.nodes.core.text import TextEncoder
        from fewstep.nodes.zoo.ar.models import ARConfig, ARTransformer, MARConfig, MARModel
        from fewstep.nodes.zoo.ar.tokenizer import VQConfig, VQTokenizer

        torch.manual_seed(0)
        tok = VQTokenizer(VQConfig(image_size=16, patch=4, dim=D, codebook_size=K))
        if mar:
            model = MARModel(MARConfig(token_dim=D, seq_len=L, dim=32, n_layers=1, n_heads=2, cond_dim=C,
                                       head_width=32, head_blocks=1))
        else:
            model = ARTransformer(ARConfig(vocab_size=K, seq_len=L, dim=32, n_layers=1, n_heads=2, cond_dim=C))
        bundle = ARModelBundle("mar" if mar else "ar", model.eval().requires_grad_(False), tok, "tiny")
        return NodeOutput(bundle, TextEncoder("builtin", [_StubMiniLM()]))


class ImageStats(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="ImageStats", category="test", is_output_node=True, inputs=[Link("image", "IMAGE")],
                      outputs=[])

    @classmethod
    def execute(cls, image: torch.Tensor) -> NodeOutput:
        return NodeOutput(ui={"shape": list(image.shape), "sum": [float(image.sum())]})


def _executor(tmp_path: Path):
    from fewstep.app.cache import CacheSet
    from fewstep.app.executor import Executor
    from fewstep.app.registry import load_registry

    registry = load_registry()
    registry.register_pack("dd_test_stubs", [TinyAR, ImageStats], source="test")
    paths = Paths(model_roots=(tmp_path / "models",), output_dir=tmp_path / "out", temp_dir=tmp_path / "temp",
                  input_dir=tmp_path / "in", user_dir=tmp_path / "user")
    return Executor(registry, CacheSet(), paths)


def _dd_graph(steps: int = 1, teacher: bool = False) -> dict[str, Any]:
    graph: dict[str, Any] = {
        "1": {"class_type": "TinyAR", "inputs": {"mar": 0}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a small red circle at the top"}},
        "3": {"class_type": "DDPairDataset", "inputs": {
            "ar_model": ["1", 0], "clip": ["1", 1], "prompt_source": "procedural", "prompts": "", "prompt_count": 4,
            "pair_count": 24, "cfg": 2.0, "flow_steps": 8, "seed": 0, "name": "tiny-pairs"}},
        "4": {"class_type": "DDTrain", "inputs": {
            "ar_model": ["1", 0], "pairs": ["3", 0], "steps": 4, "batch_size": 8, "learning_rate": 1e-3,
            "step_set": "0,6", "cont_weight": 0.1, "patch_weight": 0.5, "ema_decay": 0.0, "seed": 0,
            "run_name": "dd-test", "checkpoint_every": 2}},
        "5": {"class_type": "DDSampler", "inputs": {
            "dd_model": ["4", 0], "positive": ["2", 0], "batch_size": 2, "seed": 3, "steps": steps,
            "head": "logits", "dd_prefix": 2}},
        "6": {"class_type": "ImageStats", "inputs": {"image": ["5", 0]}},
    }
    if teacher:
        graph["5"]["inputs"]["teacher"] = ["1", 0]
    return graph


@pytest.mark.parametrize(("steps", "teacher"), [(1, False), (2, False), (1, True)])
def test_dd_pairs_train_sample_graph_runs(tmp_path: Path, steps: int, teacher: bool) -> None:
    events: list = []
    result = _executor(tmp_path).execute(_dd_graph(steps, teacher), prompt_id="a",
                                         emit=lambda kind, data: events.append((kind, data)))
    assert result.status == "success", result.error
    assert result.outputs["6"]["shape"] == [2, 16, 16, 3]
    assert len(result.outputs["4"]["loss"]) == 4
    trainer = [d for kind, d in events if kind == "progress" and d["node"] == "4"]
    assert [d["value"] for d in trainer] == [1, 2, 3, 4] and all(d["loss"] > 0 for d in trainer)
    pairs = list((tmp_path / "models" / "checkpoints" / "dd_pairs").iterdir())
    assert len(pairs) == 1 and (pairs[0] / "manifest.json").is_file()
    assert len(list(pairs[0].glob("shard_*.safetensors"))) == 1         # 24 pairs, one shard of 24


def test_pairs_record_the_teacher_checkpoint_and_cfg_and_refuse_another(tmp_path: Path) -> None:
    import copy
    import json

    from fewstep.nodes.dd.graph import train_generator
    from fewstep.nodes.dd.pairs import PairStore, teacher_tag
    from fewstep.nodes.dd.train import DDTrainConfig

    result = _executor(tmp_path).execute(_dd_graph(), prompt_id="a")
    assert result.status == "success", result.error
    folder = next((tmp_path / "models" / "checkpoints" / "dd_pairs").iterdir())
    manifest = json.loads((folder / "manifest.json").read_text())
    bundle = TinyAR.execute(0).values[0]
    assert manifest["cfg"] == 2.0 and manifest["teacher"] == teacher_tag("tiny", bundle.model)
    later = copy.deepcopy(bundle)                              # the same model name, trained one step further
    with torch.no_grad():
        later.model.output.weight.add_(1e-3)
    with pytest.raises(ValueError, match="not by this one"):
        train_generator(later, PairStore(folder), DDTrainConfig(steps=1, batch_size=2, t_list=(0, 6)),
                        run_name="dd-other", checkpoint_every=0)


def test_teacher_involved_sampling_refuses_another_teacher_checkpoint() -> None:
    import copy

    from fewstep.nodes.dd.flow import flow_space
    from fewstep.nodes.dd.generator import DDGenerator
    from fewstep.nodes.dd.graph import DDBundle, sample
    from fewstep.nodes.dd.pairs import teacher_tag

    bundle = TinyAR.execute(0).values[0]
    gen = DDGenerator.from_teacher(bundle.model, flow_space(bundle.tokenizer.codebook)).eval()
    dd = DDBundle(gen, bundle.tokenizer, (0, 6), "dd", 2.0, teacher_tag("tiny", bundle.model))
    cond = torch.randn(2, C)
    out = sample(dd, cond, steps=1, seed=0, head="logits", teacher=bundle, dd_prefix=2)
    assert out.tokens.shape == (2, L)
    later = copy.deepcopy(bundle)
    with torch.no_grad():
        later.model.output.weight.add_(1e-3)
    with pytest.raises(ValueError, match="was distilled from the teacher"):
        sample(dd, cond, steps=1, seed=0, head="logits", teacher=later, dd_prefix=2)


def test_dd_rerun_resumes_pairs_and_training(tmp_path: Path) -> None:
    first = _executor(tmp_path).execute(_dd_graph(), prompt_id="a")
    shard = next((tmp_path / "models" / "checkpoints" / "dd_pairs").iterdir()) / "shard_00000.safetensors"
    stamp = shard.stat().st_mtime_ns
    events: list = []
    again = _executor(tmp_path).execute(_dd_graph(), prompt_id="b", emit=lambda kind, data: events.append((kind, data)))
    assert again.status == "success", again.error
    assert shard.stat().st_mtime_ns == stamp                              # the shard was not rewritten
    assert [d for kind, d in events if kind == "progress" and d["node"] == "4"] == []   # step 4 of 4 found
    assert again.outputs["6"]["sum"] == pytest.approx(first.outputs["6"]["sum"])


def test_mar_with_disa_schedule_graph_runs(tmp_path: Path) -> None:
    graph = {
        "1": {"class_type": "TinyAR", "inputs": {"mar": 1}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "two small blue squares"}},
        "3": {"class_type": "DiSAHeadSteps", "inputs": {"strategy": "linear", "upper_steps": 6, "lower_steps": 2}},
        "4": {"class_type": "MARSampler", "inputs": {
            "ar_model": ["1", 0], "positive": ["2", 0], "batch_size": 2, "seed": 0, "iterations": 4,
            "head_steps": 50, "temperature": 1.0, "cfg": 2.0, "head_step_schedule": ["3", 0]}},
        "5": {"class_type": "ImageStats", "inputs": {"image": ["4", 0]}},
    }
    events: list = []
    result = _executor(tmp_path).execute(graph, prompt_id="m", emit=lambda kind, data: events.append((kind, data)))
    assert result.status == "success", result.error
    assert result.outputs["5"]["shape"] == [2, 16, 16, 3]


def test_bad_step_set_and_wrong_model_kind_are_clear_errors(tmp_path: Path) -> None:
    graph = _dd_graph()
    graph["4"]["inputs"]["step_set"] = "zero"
    result = _executor(tmp_path).execute(graph, prompt_id="e")
    assert result.status == "error" and "step set" in str(result.error)
    graph = _dd_graph()
    graph["1"]["inputs"]["mar"] = 1
    result = _executor(tmp_path).execute(graph, prompt_id="f")
    assert result.status == "error" and "MAR model" in str(result.error)


def _shipped_graph_result(tmp_path: Path, name: str) -> Any:
    import json

    graph = json.loads((Path(__file__).resolve().parents[2] / "graphs" / f"{name}.json").read_text())
    return _executor(tmp_path).execute(graph, prompt_id=name)


@pytest.mark.slow  # the shipped models end to end (about a minute on 2 busy cores); the stub graphs above are fast
@pytest.mark.parametrize("name", ["dd_generate", "disa_mar"])
def test_shipped_example_graphs_run_on_the_cpu(tmp_path: Path, name: str) -> None:
    from fewstep.nodes.zoo.ar import builtin

    needed = {"dd_generate": {"ar", "vq"}, "disa_mar": {"mar", "vq"}}[name]
    if not needed <= set(builtin.available()):
        pytest.skip(f"the built-in {sorted(needed)} weights are not shipped in this checkout")
    result = _shipped_graph_result(tmp_path, name)
    assert result.status == "success", result.error
    assert len(list((tmp_path / "out").glob("*.png"))) == 4

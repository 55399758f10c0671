"""Both PSO trainers through the engine's executor on tiny random models (CPU, seconds).

A stub pack supplies a tiny random UNet as the student MODEL (core's Denoiser + UNetFn on a discrete VP schedule),
a hashing text encoder as CLIP, an invertible toy VAE, a brightness reward and target images. The graphs train,
checkpoint into the models folder, report the loss per step, and return a MODEL whose weights moved while the
input student stays untouched.
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from fewstep.app.api import Link, Node, NodeOutput, Output, Paths, Schema
from fewstep.app.cache import CacheSet
from fewstep.app.executor import Executor
from fewstep.app.registry import Registry

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("peft")


def _tiny_student():
    from fewstep.nodes.core.denoiser import Denoiser, DiscreteVPSchedule
    from fewstep.nodes.core.loaders import UNetFn

    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=24, attention_head_dim=8, norm_num_groups=8).eval().requires_grad_(False)
    return Denoiser(UNetFn(unet), "eps", DiscreteVPSchedule.from_config(), extras={"name": "tiny", "patches": []})


class HashCLIP:
    """encode(text) -> CONDITIONING [[states [1, 4, 24], {}]], a fixed random function of the text."""

    def encode(self, text: str):
        seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
        return [[torch.randn(1, 4, 24, generator=torch.Generator().manual_seed(seed)), {}]]


class ToyVAE:
    """latent [B, 4, 8, 8] <-> IMAGE [B, 8, 8, 3]: sigmoid / logit of the first three channels."""

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(latent[:, :3].float()).permute(0, 2, 3, 1)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        x = torch.logit(images[..., :3].clamp(0.05, 0.95)).permute(0, 3, 1, 2)
        return torch.cat([x, torch.zeros_like(x[:, :1])], 1)


class StubSetup(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="StubPSOSetup", category="test",
                      outputs=[Output("MODEL", "MODEL"), Output("CLIP", "CLIP"), Output("VAE", "VAE"),
                               Output("REWARD_MODEL", "REWARD_MODEL"), Output("IMAGE", "IMAGE")])

    @classmethod
    def execute(cls) -> NodeOutput:
        images = torch.rand(3, 8, 8, 3, generator=torch.Generator().manual_seed(5))
        return NodeOutput(_tiny_student(), HashCLIP(), ToyVAE(), lambda im, prompts: im.mean((1, 2, 3)), images)


class StubCompare(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="StubPSOCompare", category="test", is_output_node=True,
                      inputs=[Link("base", "MODEL"), Link("tuned", "MODEL")], outputs=[])

    @classmethod
    def execute(cls, base, tuned) -> NodeOutput:
        a, b = base.model_fn.unet.state_dict(), tuned.model_fn.unet.state_dict()
        moved = max(float((a[k] - b[k]).abs().max()) for k in a)
        fresh = _tiny_student().model_fn.unet.state_dict()
        intact = all(torch.equal(a[k], fresh[k]) for k in fresh)
        return NodeOutput(ui={"moved": [moved], "same_keys": [sorted(a) == sorted(b)], "base_intact": [intact]})


def _prompt(method: str) -> dict:
    common = {"model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2], "steps": 3, "batch_size": 2,
              "learning_rate": 1e-2, "sample_steps": 2, "lora_rank": 2, "method": method, "seed": 0,
              "checkpoint_every": 2}
    return {
        "1": {"class_type": "StubPSOSetup", "inputs": {}},
        "2": {"class_type": "PSOOnline", "inputs": common | {
            "reward_model": ["1", 3], "prompt_source": "list", "prompts": "a\nb\nc", "prompt_count": 3,
            "beta": 50.0, "clip_epsilon": 0.1, "run_name": "on"}},
        "3": {"class_type": "PSOOffline", "inputs": common | {
            "images": ["1", 4], "prompt": "a concept", "objective": "hinge", "beta": 5.0, "prior_weight": 0.5,
            "num_negatives": 3, "run_name": "off"}},
        "4": {"class_type": "StubPSOCompare", "inputs": {"base": ["1", 0], "tuned": ["2", 0]}},
        "5": {"class_type": "StubPSOCompare", "inputs": {"base": ["1", 0], "tuned": ["3", 0]}},
    }


@pytest.mark.parametrize("method", ["pso", "naive"])
def test_pso_trainers_run_through_the_engine_on_a_tiny_model(tmp_path, method):
    from fewstep.nodes.pso import entrypoint

    registry = Registry()
    registry.register_pack("pso", entrypoint())
    registry.register_pack("stub", [StubSetup, StubCompare])
    paths = Paths(model_roots=(tmp_path / "models",), output_dir=tmp_path / "out")
    events: list = []
    result = Executor(registry, CacheSet("lru:16"), paths).execute(
        _prompt(method), prompt_id="p", emit=lambda kind, data: events.append((kind, data)))
    assert result.status == "success", result.error
    for node, run in (("2", "on"), ("3", "off")):
        assert [d["value"] for k, d in events if k == "progress" and d["node"] == node] == [1, 2, 3]
        assert len(result.outputs[node]["loss"]) == 3
        folder = next((tmp_path / "models" / "checkpoints" / "pso").glob(f"{run}-*"))
        assert sorted(p.name for p in folder.glob("*.safetensors")) == ["step_00000002.safetensors",
                                                                          "step_00000003.safetensors"]
    for node in ("4", "5"):
        assert result.outputs[node]["same_keys"] == [True]          # a plain UNet again (adapters merged)
        assert result.outputs[node]["base_intact"] == [True]        # the input student was not trained
        assert result.outputs[node]["moved"][0] > 1e-4               # lr 1e-2 for 3 steps moves the weights


def test_offline_pso_rejects_images_of_the_wrong_size(tmp_path):
    from fewstep.nodes.pso.nodes import PSOOffline

    with pytest.raises(ValueError, match="resize the images"):
        PSOOffline.execute(model=_tiny_student(), clip=HashCLIP(), vae=ToyVAE(), images=torch.rand(2, 16, 16, 3),
                           prompt="x", steps=1, batch_size=1, learning_rate=1e-3, sample_steps=2, lora_rank=2,
                           method="pso", seed=0, run_name="bad", checkpoint_every=0, objective="hinge", beta=5.0,
                           prior_weight=0.5, num_negatives=2)

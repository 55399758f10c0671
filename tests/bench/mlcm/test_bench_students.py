"""The students' training driver writes the shipped-student format: LoRA (+ overrides) on the built-in teacher
round-trips to a plain UNet through the runtime loader."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")


def test_student_file_round_trips_to_the_merged_unet(tmp_path):
    from fewstep.bench.mlcm.students import export, save_student
    from fewstep.nodes.core.train.adapter import LORA_TARGETS, UNetAdapter
    from fewstep.nodes.core.train.builtin import load_student, teacher_unet
    from fewstep.nodes.core.train.distill import preset
    from fewstep.nodes.core.train.loop import add_lora, merged_state_dict
    from fewstep.nodes.mlcm.students import LORA_RANK

    torch.manual_seed(0)
    net = UNetAdapter(add_lora(teacher_unet("cpu"), LORA_RANK, LORA_TARGETS))
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01).copy_(p.half().float())      # fp16-exact, as the file stores it
            if "lora_A" in name:
                p.copy_(p.half().float())
    lora, overrides = export(net, preset("mlcm"))
    meta = {"lora_rank": LORA_RANK, "lora_targets": list(LORA_TARGETS)}
    save_student(tmp_path / "s.safetensors", lora, overrides, meta)
    loaded = load_student(tmp_path / "s.safetensors")
    want = merged_state_dict(net.unet)
    got = loaded.state_dict()
    assert set(got) == set(want)
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=1e-5, rtol=1e-4)
    teacher = teacher_unet("cpu").state_dict()
    assert not torch.allclose(got["down_blocks.0.resnets.0.conv1.weight"], teacher["down_blocks.0.resnets.0.conv1.weight"])


@pytest.mark.parametrize("name", ["lcm", "slam"])
def test_driver_trains_each_recipe_one_step(name: str) -> None:
    """The GPU driver's per-student step (each recipe builds its own loss: MLCM's or SLAM's) runs on CPU."""
    from fewstep.bench.mlcm.students import distillation_setup, train_one

    torch.manual_seed(0)
    teacher, pool = distillation_setup(None, "cpu", prompts=4)
    net, stats = train_one(name, teacher, pool, {}, "cpu", None, steps=1, batch_size=2)
    assert stats["steps"] == 1 and torch.isfinite(torch.tensor(stats["loss_first"]))
    assert isinstance(net, torch.nn.Module)

"""PSO adapters on a student UNet: the exported fp16 LoRA file, merged back into the base, reproduces the trained
network; the reference view is the base itself."""

from __future__ import annotations

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("peft")


def test_saved_adapter_merges_back_into_the_trained_network(tmp_path):
    from safetensors.torch import load_file

    from fewstep.nodes.core.train.vp import DiscreteVPSchedule, linear_beta_alphas_cumprod
    from fewstep.nodes.pso.students import lora_policy, merge_lora, read_meta, save_lora

    torch.manual_seed(0)
    base = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=24, attention_head_dim=8, norm_num_groups=8).eval().requires_grad_(False)
    schedule = DiscreteVPSchedule.from_alphas_cumprod(linear_beta_alphas_cumprod(1000, 0.00085, 0.012, scaled=True))
    policy, reference = lora_policy(base, schedule, rank=4)
    x, t, cond = torch.randn(2, 4, 8, 8), torch.tensor([999, 499]), torch.randn(2, 5, 24)
    with torch.no_grad():
        before = base(x, t, encoder_hidden_states=cond).sample
        torch.testing.assert_close(policy.net(x, t, cond), before)             # B = 0: policy = base at step 0
        for name, p in policy.net.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
        trained = policy.net(x, t, cond)
        torch.testing.assert_close(reference.net(x, t, cond), before)          # reference = adapters off = base
    assert (trained - before).abs().max() > 1e-2

    path = tmp_path / "adapter.safetensors"
    save_lora(path, policy.net, {"base": "tiny", "lora_rank": 4})
    assert read_meta(path) == {"base": "tiny", "lora_rank": 4}
    assert all(v.dtype == torch.float16 and "lora_" in k for k, v in load_file(str(path)).items())
    merged = merge_lora(base, load_file(str(path)), rank=4)
    assert not any("lora_" in k for k in merged.state_dict())
    with torch.no_grad():
        # fp16 storage of the adapters: ~1e-3 relative error on the LoRA delta
        torch.testing.assert_close(merged(x, t, encoder_hidden_states=cond).sample, trained, atol=2e-3, rtol=1e-3)


def test_shipped_adapter_merges_its_lora_delta_into_the_mlcm_student():
    """The shipped file = B·A deltas (peft scale α/r = 1) on the shipped MLCM student, merged layer by layer."""
    from safetensors.torch import load_file

    from fewstep.nodes.core.train.builtin import load_student
    from fewstep.nodes.mlcm.students import weights_dir as mlcm_weights
    from fewstep.nodes.pso.students import (
        file_sha256,
        load_pso_unet,
        read_meta,
        shipped_adapters,
        weights_dir,
    )

    if "fewstep-pso-online.safetensors" not in shipped_adapters():
        pytest.skip("the PSO adapter is not shipped in this checkout")
    path = weights_dir() / "fewstep-pso-online.safetensors"
    meta = read_meta(path)
    assert meta["base"] == "fewstep-mlcm-student.safetensors" and meta["lora_rank"] == 16
    # the adapter was trained on exactly this version of the student (fails when the student is retrained in place:
    # then rerun nodes.pso.gpu_run)
    assert meta["base_sha256"] == file_sha256(mlcm_weights() / meta["base"])
    base = load_student(mlcm_weights() / meta["base"]).state_dict()
    merged = load_pso_unet(path).state_dict()
    lora = load_file(str(path))
    key = next(k for k in lora if "attn1.to_q.lora_A" in k)             # peft: <layer>.lora_A.<adapter>.weight
    prefix = key.split(".lora_A")[0]
    delta = lora[key.replace("lora_A", "lora_B")].float() @ lora[key].float()
    assert delta.abs().max() > 0                                           # the adapter was trained
    torch.testing.assert_close(merged[prefix + ".weight"] - base[prefix + ".weight"], delta, atol=1e-5, rtol=1e-4)

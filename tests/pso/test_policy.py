"""The student as a Gaussian policy: log-densities, transition log-probs of a recorded walk, the adapters-off
reference."""

from __future__ import annotations

import math

import pytest
import torch

from fewstep.nodes.pso.policy import Trajectory, gaussian_log_prob, rollout, transition_log_probs


def test_gaussian_log_prob_is_the_per_dimension_mean_of_the_normal_density():
    gen = torch.Generator().manual_seed(0)
    x, mean = torch.randn(3, 4, 5, generator=gen), torch.randn(3, 4, 5, generator=gen)
    std = torch.tensor([0.3, 1.0, 2.5])
    expected = torch.distributions.Normal(mean, std[:, None, None]).log_prob(x).flatten(1).mean(1)
    torch.testing.assert_close(gaussian_log_prob(x, mean, std), expected)


def test_transition_log_probs_of_a_walk_are_those_of_its_own_fresh_noise(toy):
    """Each recorded transition is x' = α' x̂0 + σ' z: its log-prob must be mean(-z²/2) - log σ' - ½ log 2π, with z
    the noise the walk drew (replayed from the same generator)."""
    _, student, _, _ = toy
    ts = [999, 749, 499, 124]
    cond = torch.eye(2)[[0, 1, 0]]
    noise = torch.randn(3, 2, generator=torch.Generator().manual_seed(1))
    traj = rollout(student, noise, ts, cond, torch.Generator().manual_seed(2))
    replay = torch.Generator().manual_seed(2)
    zs = [torch.randn(3, 2, generator=replay) for _ in ts[1:]]           # the walk's draws, in order
    sigma = student.schedule.sigma_t(torch.tensor(ts[1:]))
    expected = torch.stack([(-z**2 / 2).mean(1) - s.log() - 0.5 * math.log(2 * math.pi)
                            for z, s in zip(zs, sigma, strict=True)], 1)  # [B, 3]
    torch.testing.assert_close(transition_log_probs(student, traj, cond), expected, rtol=1e-4, atol=1e-4)
    assert traj.states.shape == (4, 3, 2) and traj.num_transitions == 3
    torch.testing.assert_close(traj.states[0], noise)


def test_a_one_step_walk_has_no_policy_to_train(toy):
    _, student, _, _ = toy
    traj = Trajectory(torch.zeros(1, 2, 2), torch.zeros(2, 2), [999])
    with pytest.raises(ValueError, match="needs >= 2 steps"):
        transition_log_probs(student, traj, torch.eye(2))


def test_reference_is_the_network_with_its_lora_adapters_off():
    pytest.importorskip("peft")
    from fewstep.nodes.core.train.loop import add_lora
    from fewstep.nodes.pso.policy import AdaptersOff, adapters_disabled

    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.SiLU(), torch.nn.Linear(8, 4))
    x = torch.randn(5, 4)
    with torch.no_grad():
        expected = base(x)                                                 # the network before LoRA
    net = add_lora(base, 2, ["0", "2"])
    ref = AdaptersOff(net)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "lora_B" in name:
                p.normal_()                                                # adapters now change the output
    out_ref = ref(x)
    torch.testing.assert_close(out_ref, expected)
    assert not torch.allclose(net(x), out_ref)
    with adapters_disabled(net):
        torch.testing.assert_close(net(x), out_ref)
    assert not out_ref.requires_grad
    assert all(p.requires_grad for n, p in net.named_parameters() if "lora_" in n)   # trainable set restored
    assert list(ref.parameters()) == []                                  # no second copy for the optimizer

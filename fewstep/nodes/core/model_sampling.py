"""Re-parameterising a loaded model: prediction type, zero-terminal-SNR and LCM's distilled timestep grid,
and the continuous EDM schedule (ComfyUI's ModelSamplingDiscrete / ModelSamplingContinuousEDM).

Each returns a new :class:`~fewstep.nodes.core.denoiser.Denoiser` sharing the network; the samplers see
only ``D(x, sigma)`` and ``schedule`` (style principle 3).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fewstep.nodes.core.denoiser import (
    ContinuousVSchedule,
    CosmosRFlowSchedule,
    Denoiser,
    DiscreteVPSchedule,
    EDMSchedule,
)

SAMPLING_PREDICTION = {"eps": "eps", "v_prediction": "v", "lcm": "eps", "x0": "x0"}
LCM_ORIGINAL_STEPS = 50          # LCM's skipping-step grid: every 20th of 1000 timesteps (Luo et al. 2023, Sec. 4.3)


@dataclass(frozen=True, eq=False)
class DistilledVPSchedule(DiscreteVPSchedule):
    """A DDPM schedule restricted to every k-th timestep t = k - 1, 2k - 1, ..., N - 1 (LCM's skipping-step
    grid with k = N / 50). ``sigmas`` holds the kept entries; timesteps stay in the full network's units:
    ``timestep(sigma)`` = k * (nearest kept index) + k - 1 (rounded to the grid, as ComfyUI's
    ModelSamplingDiscreteDistilled), ``sigma_at(t)`` interpolates the kept table at (t - k + 1) / k."""

    skip: int = 20

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float32)
        log_sigmas = self.sigmas.to(sigma.device).double().log()
        dists = (sigma.double().clamp_min(1e-10).log().reshape(-1, 1) - log_sigmas.reshape(1, -1)).abs()
        index = dists.argmin(dim=1)
        return (index * self.skip + self.skip - 1).float().reshape(sigma.shape)

    def sigma_at(self, t: torch.Tensor | float) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        return super().sigma_at((t - (self.skip - 1)) / self.skip)


def zero_terminal_snr(sigmas: torch.Tensor) -> torch.Tensor:
    """Rescale a VP table to zero terminal SNR (Lin et al. 2024, Alg. 1): sqrt(abar) is shifted and scaled
    so that its last entry is 0 and its first unchanged; the last abar is then set to 4.8973e-7 (as
    ComfyUI) so that the top sigma stays finite (~1429)."""
    abar = 1.0 / (1.0 + sigmas.double() ** 2)
    s = abar.sqrt()
    s0, s_t = s[0].clone(), s[-1].clone()
    s = (s - s_t) * s0 / (s0 - s_t)
    abar = s**2
    abar[-1] = 4.8973e-07
    return ((1 - abar) / abar).sqrt().float()


def base_vp_table(model: Denoiser) -> torch.Tensor:
    """The model's full N-step sigma table (undoing an earlier distilled grid)."""
    schedule = model.schedule
    if isinstance(schedule, DistilledVPSchedule):
        return model.extras["full_sigmas"]
    if isinstance(schedule, DiscreteVPSchedule):
        return schedule.sigmas
    raise ValueError(f"ModelSamplingDiscrete needs a discrete (DDPM) model, got {type(schedule).__name__}")


def model_sampling_discrete(model: Denoiser, sampling: str, zsnr: bool) -> Denoiser:
    """ComfyUI's ModelSamplingDiscrete: eps / v_prediction / x0 prediction, or LCM (eps prediction, LCM's
    consistency boundary condition and 50-step grid), optionally zero-terminal-SNR."""
    if sampling not in SAMPLING_PREDICTION:
        raise ValueError(f"sampling must be one of {sorted(SAMPLING_PREDICTION)}, got {sampling!r}")
    full = base_vp_table(model)
    table = zero_terminal_snr(full) if zsnr else full
    extras = {**model.extras, "full_sigmas": full}
    if sampling == "lcm":
        skip = table.shape[0] // LCM_ORIGINAL_STEPS
        schedule: DiscreteVPSchedule = DistilledVPSchedule(table[skip - 1::skip].clone(), skip=skip)
        return model.clone(prediction="eps", schedule=schedule, boundary="lcm", extras=extras)
    return model.clone(prediction=SAMPLING_PREDICTION[sampling], schedule=DiscreteVPSchedule(table), boundary=None,
                       extras=extras)


# ComfyUI's ModelSamplingContinuousEDM modes: (our prediction type, sigma_data, schedule class).
EDM_SAMPLING: dict[str, tuple[str, float, type[EDMSchedule]]] = {
    "v_prediction": ("v", 1.0, EDMSchedule),
    "edm": ("edm", 0.5, EDMSchedule),
    "eps": ("eps", 1.0, EDMSchedule),
    "cosmos_rflow": ("flow", 1.0, CosmosRFlowSchedule),
}


def model_sampling_edm(model: Denoiser, sampling: str, sigma_max: float, sigma_min: float) -> Denoiser:
    """ComfyUI's ModelSamplingContinuousEDM: a continuous schedule on [sigma_min, sigma_max] in EDM space
    (x = x0 + sigma eps) with the log-sigma timestep c_noise = ln(sigma) / 4 (Karras et al. 2022, Table 1):
    - ``eps`` / ``v_prediction``: c_in = 1 / sqrt(sigma^2 + 1), eps or v output (sigma_data = 1, as ComfyUI);
    - ``edm``: EDM's own preconditioning with sigma_data = 0.5, D = c_skip x + c_out F (eq. 7);
    - ``cosmos_rflow``: a rectified-flow net in EDM space, timestep sigma / (1 + sigma)
      (:class:`~fewstep.nodes.core.denoiser.CosmosRFlowSchedule`).
    ``edm_playground_v2.5`` (EDM plus Playground v2.5's per-channel latent normalisation) is refused: our
    LATENT is already in the checkpoint VAE's scaled space and the sampler applies no second latent format."""
    if sampling == "edm_playground_v2.5":
        raise ValueError("ModelSamplingContinuousEDM: edm_playground_v2.5 needs Playground v2.5's latent format "
                         "(per-channel mean / std), which fewstep does not apply; use 'edm' for the EDM "
                         "parameterisation alone")
    if sampling not in EDM_SAMPLING:
        raise ValueError(f"ModelSamplingContinuousEDM: sampling must be one of {sorted(EDM_SAMPLING)}, got {sampling!r}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"ModelSamplingContinuousEDM: need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    prediction, sigma_data, schedule_class = EDM_SAMPLING[sampling]
    schedule = schedule_class(sigma_min=sigma_min, sigma_max=sigma_max, sigma_data=sigma_data)
    return model.clone(prediction=prediction, schedule=schedule, boundary=None)


def model_sampling_continuous_v(model: Denoiser, sigma_max: float, sigma_min: float) -> Denoiser:
    """ComfyUI's ModelSamplingContinuousV (its only mode, v_prediction): EDM space with c_in = 1 / sqrt(sigma^2 + 1),
    a v-prediction net (sigma_data 1) and the arctangent timestep of
    :class:`~fewstep.nodes.core.denoiser.ContinuousVSchedule`."""
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"ModelSamplingContinuousV: need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    schedule = ContinuousVSchedule(sigma_min=sigma_min, sigma_max=sigma_max, sigma_data=1.0)
    return model.clone(prediction="v", schedule=schedule, boundary=None)

"""Combo choices that node schemas need without importing torch (kept equal to the dicts by a test)."""

SAMPLER_NAMES = ("euler", "euler_ancestral", "heun", "dpmpp_2m", "dpmpp_sde", "ddpm", "lcm", "ddim", "tcd")
SCHEDULER_NAMES = ("simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal")
MAX_RESOLUTION = 16384
UPSCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")

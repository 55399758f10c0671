"""The GPU fast path of the few-step sampling loop: the denoiser call as a replayed CUDA graph.

At one to eight steps and batch 1 the loop is bound by kernel launches and Python, not arithmetic
(design.md, Performance: the SD1.5-size UNet is 44.5 ms eager and 9.7 ms as a graph replay on an
H100). The fast path therefore captures the *whole* guider call ``G(x, sigma) -> x0`` (CFG batching,
``c_in`` scaling, the sigma -> timestep lookup, the network with its timestep embedding, the eps/v/flow
-> x0 conversion and the LCM boundary condition) once per fixed shape, and replays it at every step.
The sampler itself is untouched: it only sees a guider-like object with ``__call__`` and ``schedule``.

Before its first capture a network is prepared once (:func:`prepare_module`): channels-last weights and
activations, GroupNorm(+SiLU) on the fused Triton kernel, a lean SDPA attention processor and the lean
block forwards of ``nodes.core.unet_lean`` (biases and the time embedding folded into the norms and the
residual adds, fused GEGLU and add + LayerNorm). One SD1.5 UNet call at 512^2 on an H200: graph replay
9.53 ms NCHW, 5.22 ms prepared (batch 8: 27.2 -> 17.9 ms, 45% of the card's bf16 matmul rate); SDXL at
1024^2, batch 8: 143.1 -> 113.4 ms, 60% (docs/benchmarks.md, 2026-11-30).

Per step, outside the graph: one device-to-device copy of x, one of the sigma scalar, the replay and a
clone of the output (samplers such as DPM++ 2M keep x0 across steps; the graph's output buffer is
overwritten by the next replay). No host-device synchronisation happens inside the loop: sigmas come
from the sampler as CPU scalars and are looked up in a per-cache table of device scalars that was
uploaded asynchronously (pinned memory) before the loop; conditioning tensors are copied into the
graph's static buffers before the loop and skipped when the same tensor (e.g. a cached text encoding)
comes again.

Weights: a graph reads the parameters at their addresses, so in-place changes (LoRA patches added and
removed around the sampler call by ``loaders.lora.applied``) are seen by later replays; parameters
replaced or moved (the model cache offloading a model and loading it back) are detected by the
addresses of the first and last parameter, and the module's graphs are dropped and captured again.

Lifetime: captured graphs live in a :class:`GraphCache` attached to the network module (or, when none
is found, to the denoiser's ``extras``), so the model cache that holds the model holds its graphs, and
a second job with the same shapes pays no capture. Keys: (network id, latent shape, dtype, guider type
and scale, conditioning shapes/dtypes, schedule table, prediction, boundary).

On the CPU nothing changes: :func:`sample` calls the sampler exactly as the eager path does.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import time
import types
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from fewstep.nodes.core.denoiser import Denoiser, DiscreteVPSchedule

log = logging.getLogger(__name__)

GRAPH_CACHE_ATTR = "_fewstep_graph_cache"
COND_ATTRS = ("positive", "negative")  # the conditioning a guider holds (nodes.core.guidance)


# ---------------------------------------------------------------------------------------------------
# pytrees of conditioning: tensors in dicts / lists / tuples
# ---------------------------------------------------------------------------------------------------

def _leaves(tree: Any) -> list[torch.Tensor]:
    """The tensors of a conditioning tree, in a fixed order (dict keys sorted)."""
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, dict):
        return [leaf for key in sorted(tree, key=str) for leaf in _leaves(tree[key])]
    if isinstance(tree, (list, tuple)):
        return [leaf for item in tree for leaf in _leaves(item)]
    return []


def _rebuild(tree: Any, leaves: Iterator[torch.Tensor]) -> Any:
    """``tree`` with its tensors replaced, in :func:`_leaves` order, by ``leaves``."""
    if isinstance(tree, torch.Tensor):
        return next(leaves)
    if isinstance(tree, dict):
        new = {key: _rebuild(tree[key], leaves) for key in sorted(tree, key=str)}
        return {key: new[key] for key in tree}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_rebuild(item, leaves) for item in tree)
    return tree


def _signature(tree: Any) -> Any:
    """Hashable structure of a conditioning tree: tensor shapes/dtypes, other values as they are."""
    if isinstance(tree, torch.Tensor):
        return ("T", tuple(tree.shape), str(tree.dtype))
    if isinstance(tree, dict):
        return ("D", tuple((str(k), _signature(tree[k])) for k in sorted(tree, key=str)))
    if isinstance(tree, (list, tuple)):
        return ("L", tuple(_signature(v) for v in tree))
    try:
        hash(tree)
        return ("V", tree)
    except TypeError:
        return ("O", id(tree))


# ---------------------------------------------------------------------------------------------------
# the cache of captured graphs
# ---------------------------------------------------------------------------------------------------

@dataclass
class CacheStats:
    captures: int = 0
    capture_s: float = 0.0
    hits: int = 0
    replays: int = 0
    fallbacks: int = 0
    last_fallback: str = ""


class GraphCache:
    """Captured denoiser graphs of one network, LRU-bounded; held by the module (see :func:`cache_for`).

    All graphs of one cache share a CUDA memory pool: they replay one at a time on one stream, and
    every output is copied out right after its replay, so one graph's intermediates may reuse another's.
    """

    def __init__(self, max_entries: int = 8) -> None:
        self.max_entries = max_entries
        self.entries: OrderedDict[Any, Any] = OrderedDict()
        self.stats = CacheStats()
        self.sigmas: dict[tuple[str, float], torch.Tensor] = {}   # (device, value) -> 0-dim fp32 on device
        self.weights: Any = None     # where the network's weights were when the graphs were captured
        self._pool: Any = None

    def pool(self) -> Any:
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        return self._pool

    def check_weights(self, stamp: Any) -> None:
        """Drop every graph when the weights moved (the model cache offloaded and reloaded the model,
        a dtype or layout change): graphs read parameters at the addresses they were captured with."""
        if stamp != self.weights:
            self.entries.clear()
            self.weights = stamp

    def get(self, key: Any) -> Any:
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
        return entry

    def put(self, key: Any, entry: Any) -> None:
        self.entries[key] = entry
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)

    def clear(self) -> None:
        """Drop every graph (and the memory pool once nothing else refers to it)."""
        self.entries.clear()
        self.sigmas.clear()
        self._pool = None

    def device_sigmas(self, values: list[float], device: torch.device) -> None:
        """Upload sigma scalars not yet on ``device`` in one asynchronous copy from pinned memory."""
        new = sorted({float(v) for v in values} - {v for d, v in self.sigmas if d == str(device)})
        if not new:
            return
        if len(self.sigmas) + len(new) > 4096:   # a bound; schedules repeat, so this rarely triggers
            self.sigmas.clear()
        host = torch.tensor(new, dtype=torch.float32)
        if device.type == "cuda":
            # pinned source + non_blocking: no host sync; PyTorch's host allocator keeps the pinned block
            # until the copy has run (it records an event on the stream)
            host = host.pin_memory()
        dev = host.to(device, non_blocking=True)
        for i, value in enumerate(new):
            self.sigmas[(str(device), value)] = dev[i]

    def sigma(self, value: float, device: torch.device) -> torch.Tensor:
        key = (str(device), float(value))
        if key not in self.sigmas:
            self.device_sigmas([value], device)
        return self.sigmas[key]

    def summary(self) -> dict[str, Any]:
        s = self.stats
        return {"graphs": len(self.entries), "captures": s.captures, "capture_s": round(s.capture_s, 3),
                "hits": s.hits, "replays": s.replays, "fallbacks": s.fallbacks, "last_fallback": s.last_fallback}


def find_module(denoiser: Denoiser) -> torch.nn.Module | None:
    """The network behind a denoiser: ``extras["module"]``/``["unet"]``, an nn.Module ``model_fn``, or the
    module a bound-method ``model_fn`` belongs to."""
    for name in ("module", "unet", "model"):
        found = denoiser.extras.get(name)
        if isinstance(found, torch.nn.Module):
            return found
    fn = denoiser.model_fn
    if isinstance(fn, torch.nn.Module):
        return fn
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, torch.nn.Module):
        return owner
    for name in ("unet", "module"):
        owner = getattr(fn, name, None)
        if isinstance(owner, torch.nn.Module):
            return owner
    return None


def cache_for(denoiser: Denoiser) -> GraphCache:
    """The :class:`GraphCache` of the denoiser's network, created on first use and stored on the module
    (so it lives exactly as long as the model cache keeps the model)."""
    module = find_module(denoiser)
    holder = module.__dict__ if module is not None else denoiser.extras
    cache = holder.get(GRAPH_CACHE_ATTR)
    if not isinstance(cache, GraphCache):
        cache = GraphCache()
        holder[GRAPH_CACHE_ATTR] = cache
    return cache


def weights_stamp(module: torch.nn.Module | None) -> Any:
    """(device, address of the first and last parameter): changes when the weights are moved or replaced."""
    params = list(module.parameters()) if module is not None else []
    if not params:
        return None
    return (str(params[0].device), params[0].data_ptr(), params[-1].data_ptr())


class LeanSDPAProcessor:
    """diffusers' ``AttnProcessor2_0`` (PyTorch SDPA) for the plain case, without its no-op passes.

    Attention (Vaswani et al. 2017, Eq. 1) on 3-D token inputs [B, S, C] with no mask, spatial norm,
    cross-norm or q/k norms: q, k, v [B, S, heads, d] viewed as [B, heads, S, d] (no copy), SDPA, the
    output projection, then the residual and ``/ rescale_output_factor`` only when they do something
    (diffusers divides by 1.0 on every call: one full read + write of the output per attention, ~12 us
    per call at SDXL's 32^2 level, batch 8). Any other case runs ``AttnProcessor2_0`` unchanged.
    """

    def __init__(self) -> None:
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.general = AttnProcessor2_0()

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 *args: Any, **kwargs: Any) -> torch.Tensor:
        plain = (hidden_states.ndim == 3 and attention_mask is None and attn.spatial_norm is None
                 and attn.group_norm is None and not attn.norm_cross and attn.norm_q is None
                 and attn.norm_k is None and not args and not kwargs)
        if not plain:
            return self.general(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        b = hidden_states.shape[0]
        q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)     # [B, S, heads * d]
        d = k.shape[-1] // attn.heads
        q, k, v = (t.view(b, -1, attn.heads, d).transpose(1, 2) for t in (q, k, v))  # [B, heads, S, d]
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(b, -1, attn.heads * d).to(q.dtype)         # [B, S, heads * d]
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        if attn.rescale_output_factor != 1.0:
            out = out / attn.rescale_output_factor
        return out


def _tokens_to_nhwc(self: Any, hidden_states: torch.Tensor, residual: torch.Tensor, batch_size: int, height: int,
                    width: int, inner_dim: int) -> torch.Tensor:
    """diffusers' ``Transformer2DModel._get_output_for_continuous_inputs`` without its ``.contiguous()``:
    tokens [B, H*W, C] viewed as [B, C, H, W] already have channels-last strides, so the output stays
    NHWC like the residual instead of being copied to NCHW (and back by the next convolution; the add
    of an NCHW and an NHWC tensor is a strided pass too). Same values, one layout."""
    if not self.use_linear_projection:                    # 1x1 conv projection
        tokens = hidden_states.reshape(batch_size, height, width, inner_dim).permute(0, 3, 1, 2)
        return self.proj_out(tokens) + residual
    out = self.proj_out(hidden_states)                     # [B, H*W, C]
    return out.reshape(batch_size, height, width, inner_dim).permute(0, 3, 1, 2) + residual


def keep_channels_last(module: torch.nn.Module) -> int:
    """Bind :func:`_tokens_to_nhwc` on every continuous-input ``Transformer2DModel`` inside ``module``
    (a deepcopy rebinds it to the copy); returns how many. Only for a channels-last module."""
    try:
        from diffusers.models.transformers.transformer_2d import Transformer2DModel
    except ImportError:
        return 0
    count = 0
    for m in module.modules():
        if isinstance(m, Transformer2DModel) and m.is_input_continuous:
            m._get_output_for_continuous_inputs = types.MethodType(_tokens_to_nhwc, m)
            count += 1
    return count


def prepare_module(module: torch.nn.Module, *, channels_last: bool = True, fused_groupnorm: bool = True,
                   lean_blocks: bool = True) -> None:
    """One-time setup of a network for the fast path: eval mode, :class:`LeanSDPAProcessor` attention
    for diffusers models (in place of their default processors), NHWC conv weights and activations
    (:func:`keep_channels_last`), GroupNorm(+SiLU) on the fused Triton kernel (``vae_fast.fuse_groupnorms``)
    and, with it, the blocks' lean forwards (``unet_lean.lean_forwards``: time embedding folded into the
    norm, fused GEGLU, residual adds fused with the next LayerNorm); outputs unchanged off CUDA and under
    autograd. Runs before any capture of the module (a graph reads the weights' addresses, so their layout
    must not change afterwards); later calls do nothing."""
    if module.__dict__.get("_fewstep_prepared"):
        return
    module.eval()
    processors = getattr(module, "attn_processors", None)
    if isinstance(processors, dict) and processors:
        from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

        lean = LeanSDPAProcessor()                  # diffusers' defaults only; custom processors stay
        module.set_attn_processor({name: lean if type(p) in (AttnProcessor, AttnProcessor2_0) else p
                                   for name, p in processors.items()})
    if channels_last and any(isinstance(m, torch.nn.Conv2d) for m in module.modules()):
        module.to(memory_format=torch.channels_last)
        keep_channels_last(module)
    if fused_groupnorm:
        from fewstep.nodes.core.vae_fast import fuse_groupnorms

        fuse_groupnorms(module)
        if lean_blocks:
            from fewstep.nodes.core.unet_lean import lean_forwards

            lean_forwards(module)
    module.__dict__["_fewstep_prepared"] = True


# ---------------------------------------------------------------------------------------------------
# one captured call
# ---------------------------------------------------------------------------------------------------

@contextmanager
def _capture_mode() -> Iterator[None]:
    """Normal (not inference) tensors, no autograd, cuDNN autotuning during warm-up and capture."""
    with torch.inference_mode(False), torch.no_grad(), torch.backends.cudnn.flags(
            enabled=True, benchmark=True, deterministic=False, allow_tf32=True):
        yield


def _device_schedule(denoiser: Denoiser, device: torch.device) -> Denoiser:
    """A clone whose discrete sigma table is on the device: ``timestep(sigma)`` then runs as device ops
    (a host-to-device copy of the table is not allowed inside a capture)."""
    schedule = denoiser.schedule
    if isinstance(schedule, DiscreteVPSchedule) and schedule.sigmas.device != device:
        schedule = DiscreteVPSchedule(schedule.sigmas.to(device))
    return denoiser.clone(schedule=schedule)


@dataclass
class _Captured:
    """Static buffers + the CUDA graph of ``inner(x, sigma, cond)``."""

    graph: Any
    x: torch.Tensor
    sigma: torch.Tensor
    conds: list[torch.Tensor]
    out: torch.Tensor
    model_fn: Any
    sources: list[Any] = field(default_factory=list)   # last copied-in cond tensors and their versions
    # the captured closure: it owns device tensors made outside the graph's pool (the device copy of the
    # sigma table); if they were freed the replay would read whatever reuses that memory
    call: Any = None

    def load_conds(self, leaves: list[torch.Tensor]) -> None:
        """Copy new conditioning into the static buffers; the same tensor, unchanged, is not copied."""
        if len(self.sources) != len(leaves):
            self.sources = [None] * len(leaves)
        for i, (buf, src) in enumerate(zip(self.conds, leaves, strict=True)):
            seen, version = self.sources[i], _version(src)
            if seen is not None and seen[0] is src and version is not None and seen[1] == version:
                continue
            buf.copy_(src, non_blocking=True)
            self.sources[i] = (src, version)

    def run(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.x.copy_(x)
        self.sigma.copy_(sigma)
        self.graph.replay()
        return self.out.clone()


def _version(t: torch.Tensor) -> int | None:
    """The tensor's in-place version counter; None for inference tensors (they have none, so they are
    always copied)."""
    return None if t.is_inference() else t._version


def _static_copy(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    return t.detach().to(device).clone()


def _capture(inner: Callable[..., torch.Tensor], x: torch.Tensor, sigma: torch.Tensor, cond_tree: Any,
             leaves: list[torch.Tensor], cache: GraphCache, model_fn: Any, autocast: torch.dtype | None,
             warmup: int = 2, cuda_graph: bool = True) -> _Captured:
    """Warm ``inner`` up on a side stream (cuDNN autotuning, lazy init, Triton compiles), then capture one
    call; GroupNorms run on the fused kernels throughout (``kernels.groupnorm.for_graphs``)."""
    from fewstep.kernels.groupnorm import for_graphs

    device = x.device
    with _capture_mode(), for_graphs():
        sx, ssig = _static_copy(x, device), _static_copy(sigma, device).reshape(())
        sconds = [_static_copy(t, device) for t in leaves]
        cond = _rebuild(cond_tree, iter(sconds))
        def call() -> torch.Tensor:
            amp = torch.autocast(device.type, dtype=autocast, cache_enabled=False) if autocast else nullcontext()
            with amp:
                return inner(sx, ssig, cond)

        if not cuda_graph:
            out = call()
            graph: Any = _Replayer(call, out)
        else:
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(warmup):
                    call()
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=cache.pool()):
                out = call()
    return _Captured(graph, sx, ssig, sconds, out, model_fn, [(t, _version(t)) for t in leaves], call=call)


class _Replayer:
    """Stand-in for a CUDA graph (``cuda_graphs=False``): re-runs the call into the same output buffer.
    It exercises the static-buffer protocol anywhere, the CPU included (tests)."""

    def __init__(self, call: Callable[[], torch.Tensor], out: torch.Tensor) -> None:
        self.call, self.out = call, out

    def replay(self) -> None:
        with _capture_mode():
            self.out.copy_(self.call())


# ---------------------------------------------------------------------------------------------------
# the guider the sampler sees
# ---------------------------------------------------------------------------------------------------

def _split(guider: Any) -> tuple[Denoiser, dict[str, Any]] | None:
    """(denoiser, {attr: cond}) of a Denoiser or a nodes.core.guidance guider; None if unknown."""
    if isinstance(guider, Denoiser):
        return guider, {}
    inner = getattr(guider, "denoiser", None)
    if not isinstance(inner, Denoiser):
        return None
    return inner, {name: getattr(guider, name) for name in COND_ATTRS if hasattr(guider, name)}


def _schedule_key(denoiser: Denoiser) -> Any:
    schedule = denoiser.schedule
    if isinstance(schedule, DiscreteVPSchedule):
        digest = hashlib.blake2b(schedule.sigmas.detach().cpu().float().numpy().tobytes(), digest_size=8)
        return ("vp", digest.hexdigest())
    return (type(schedule).__name__, repr(schedule))


class GraphGuider:
    """A guider (or bare denoiser) whose calls at one latent shape replay a captured CUDA graph.

    Build it with :func:`accelerate`. ``schedule`` is the original one (samplers compute with it on the
    CPU); any call the graph cannot serve (another shape, a per-sample sigma) runs the original eagerly.
    """

    def __init__(self, original: Any, captured: _Captured, cache: GraphCache, cond: Any) -> None:
        self.original = original
        self.captured = captured
        self.cache = cache
        self.cond = cond

    @property
    def schedule(self) -> Any:
        return self.original.schedule

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float, cond: Any = None) -> torch.Tensor:
        c = self.captured
        if x.shape != c.x.shape or x.dtype != c.x.dtype or x.device != c.x.device:
            return self.original(x, sigma, cond if cond is not None else self.cond)
        if isinstance(sigma, torch.Tensor) and sigma.device.type != "cpu":
            if sigma.numel() != 1:
                return self.original(x, sigma, cond if cond is not None else self.cond)
            sig = sigma.reshape(())
        else:
            if isinstance(sigma, torch.Tensor) and sigma.numel() != 1:
                return self.original(x, sigma, cond if cond is not None else self.cond)
            sig = self.cache.sigma(float(sigma), x.device)   # CPU value: no device sync
        self.cache.stats.replays += 1
        return c.run(x, sig.to(torch.float32))

    def predict_with_uncond(self, x: torch.Tensor, sigma: torch.Tensor | float,
                            cond: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The CFG++ samplers' (guided, unconditional) pair: the captured graph returns only the guided x0,
        so this runs the original guider eagerly (``nodes.core.sampler_math.guided_and_uncond``)."""
        from fewstep.nodes.core.sampler_math import guided_and_uncond

        return guided_and_uncond(self.original, x, sigma, cond if cond is not None else self.cond)


def _rebuilt_guider(guider: Any, device: torch.device) -> Callable[[torch.Tensor, torch.Tensor, Any], Any]:
    """``inner(x, sigma, tree)``: the guider's own code with a device-schedule denoiser and the
    conditioning taken from ``tree`` (the static buffers)."""
    denoiser, _ = _split(guider)  # type: ignore[misc]
    fast_denoiser = _device_schedule(denoiser, device)

    def inner(x: torch.Tensor, sigma: torch.Tensor, tree: dict[str, Any]) -> torch.Tensor:
        if isinstance(guider, Denoiser):
            return fast_denoiser(x, sigma, tree["cond"])
        g = copy.copy(guider)
        g.denoiser = fast_denoiser
        for name, value in tree["attrs"].items():
            setattr(g, name, value)
        return g(x, sigma, tree["cond"])

    return inner


def _key(guider: Any, denoiser: Denoiser, x: torch.Tensor, tree: Any, autocast: torch.dtype | None) -> Any:
    knobs = tuple(sorted((k, v) for k, v in vars(guider).items()
                         if isinstance(v, (int, float, str, bool)) or v is None)) if not isinstance(
        guider, Denoiser) else ()
    return (id(denoiser.model_fn), type(guider).__name__, knobs, tuple(x.shape), str(x.dtype), str(x.device),
            _signature(tree), _schedule_key(denoiser), denoiser.prediction, denoiser.boundary, str(autocast))


@dataclass
class FastPathOptions:
    """Knobs of :func:`accelerate`.

    Args:
        channels_last: NHWC conv weights (set once per module, before its first capture).
        fused_groupnorm: GroupNorm(+SiLU) on the fused Triton kernel (set once per module, like the layout).
        autocast: run an fp32 network under autocast to this dtype (cache disabled, so the weight casts
            are part of the graph); None keeps the network's own dtype (loaders load fp16/bf16 on CUDA).
        warmup: eager calls before capture (cuDNN picks its algorithms then).
        cuda_graphs: False replaces the graph by re-running the call into the static buffers (same
            protocol, any device; used by the CPU tests of the buffer handling).
    """

    channels_last: bool = True
    fused_groupnorm: bool = True
    autocast: torch.dtype | None = None
    warmup: int = 2
    cuda_graphs: bool = True


def accelerate(guider: Any, x: torch.Tensor, *, cond: Any = None, sigmas: torch.Tensor | None = None,
               options: FastPathOptions | None = None) -> Any:
    """A graph-replaying stand-in for ``guider`` at ``x``'s shape, or ``guider`` itself when the fast path
    does not apply (CPU tensors, an unknown guider type, a failed capture — the reason is logged and
    counted in the cache's ``stats``).

    Args:
        guider: a :class:`Denoiser` or a ``nodes.core.guidance`` guider.
        x: the latent the sampler starts from [B, C, h, w] (its shape, dtype and device fix the graph).
        cond: the ``cond`` the sampler will pass (None for guiders, which hold their own).
        sigmas: the sampling schedule; uploaded to the device before the loop (one async copy).
    """
    options = options or FastPathOptions()
    if x.device.type != "cuda" and options.cuda_graphs:
        return guider
    split = _split(guider)
    if split is None:
        return guider
    denoiser, conds = split
    cache = cache_for(denoiser)
    module = find_module(denoiser)
    if module is not None and x.device.type == "cuda":
        prepare_module(module, channels_last=options.channels_last,      # before the stamp: it moves weights
                       fused_groupnorm=options.fused_groupnorm)
    cache.check_weights(weights_stamp(module))
    if sigmas is not None:
        cache.device_sigmas([float(s) for s in sigmas.detach().cpu().reshape(-1)], x.device)
    tree = {"attrs": conds, "cond": cond}
    leaves = _leaves(tree)
    if any(t.requires_grad for t in leaves):
        return guider
    key = (_key(guider, denoiser, x, tree, options.autocast), options.cuda_graphs)
    entry = cache.get(key)
    if entry is None:
        entry = _capture_entry(guider, denoiser, x, tree, leaves, cache, options)
        cache.put(key, entry)
    else:
        cache.stats.hits += 1
    if isinstance(entry, str):               # a capture that failed before: stay eager, don't retry
        return guider
    entry.load_conds(leaves)
    return GraphGuider(guider, entry, cache, cond)


def _capture_entry(guider: Any, denoiser: Denoiser, x: torch.Tensor, tree: Any, leaves: list[torch.Tensor],
                   cache: GraphCache, options: FastPathOptions) -> _Captured | str:
    sigma = torch.tensor(float(denoiser.schedule.sigma_max), device=x.device)
    t0 = time.perf_counter()
    try:
        entry: _Captured | str = _capture(_rebuilt_guider(guider, x.device), x, sigma, tree, leaves, cache,
                                          denoiser.model_fn, options.autocast, options.warmup,
                                          options.cuda_graphs)
    except Exception as exc:  # noqa: BLE001 - any capture failure falls back to the eager path
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
        entry = f"{type(exc).__name__}: {exc}"
        cache.stats.fallbacks += 1
        cache.stats.last_fallback = entry
        log.warning("fast path: capture failed, sampling eagerly (%s)", entry)
    cache.stats.captures += 1
    cache.stats.capture_s += time.perf_counter() - t0
    return entry


def model_device(guider: Any) -> torch.device | None:
    """The device of the network behind a guider or denoiser (None when it cannot be told)."""
    split = _split(guider)
    module = find_module(split[0]) if split is not None else None
    if module is None:
        return None
    param = next(module.parameters(), None)
    return None if param is None else param.device


def sample(sampler: Callable[..., torch.Tensor], guider: Any, x: torch.Tensor, sigmas: torch.Tensor, *,
           cond: Any = None, callback: Any = None, generator: torch.Generator | None = None,
           enabled: bool = True, options: FastPathOptions | None = None) -> torch.Tensor:
    """Run ``sampler(guider, x, sigmas, ...)`` — through the fast path when the network is on CUDA.

    This is the one call site the sampler nodes use. When the network is not on CUDA (or
    ``enabled=False``) it is exactly ``sampler(guider, x, sigmas, cond=cond, callback=callback,
    generator=generator)``. On CUDA the loop runs on the network's device: ``x`` moves there (the nodes
    keep latents on the CPU), a CPU ``generator`` is replaced by a CUDA one with the same seed (the
    samplers draw their step noise on x's device), and the result comes back on ``x``'s device.
    """
    device = model_device(guider) if enabled else None
    if device is None or device.type != "cuda":
        return sampler(guider, x, sigmas, cond=cond, callback=callback, generator=generator)
    xd = x.to(device)
    if generator is not None and generator.device.type != device.type:
        generator = torch.Generator(device).manual_seed(generator.initial_seed())
    fast = accelerate(guider, xd, cond=cond, sigmas=sigmas, options=options)
    out = sampler(fast, xd, sigmas, cond=cond, callback=callback, generator=generator)
    return out.to(x.device)


def graph_stats(guider_or_denoiser: Any) -> dict[str, Any]:
    """The cache summary (captures, capture seconds, hits, replays, fallbacks) of a guider's network."""
    split = _split(guider_or_denoiser.original if isinstance(guider_or_denoiser, GraphGuider)
                   else guider_or_denoiser)
    if split is None:
        return {}
    return cache_for(split[0]).summary()

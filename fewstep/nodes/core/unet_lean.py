"""Lean forwards for diffusers' UNet blocks: the same arithmetic with fewer passes over activations.

At batch 8 the SD1.5-size UNet spends a third of its kernel time in memory-bound passes between the
matmuls (H200 profile, docs/benchmarks.md: 7.2 of 21.6 ms). :func:`lean_forwards` rebinds, per module
instance (a ``types.MethodType``, like ``fastpath.keep_channels_last``), the forwards that add passes:

* ``ResnetBlock2D`` (default time-embedding norm, no resampling, norms already fused by
  ``vae_fast.fuse_groupnorms``): ``norm2(conv1(h) + temb)`` becomes one fused GroupNorm with
  ``pre = temb + conv1.bias`` and conv1 runs without bias (``kernels.groupnorm``); conv2 runs without bias
  and ``x + conv2(h) + conv2.bias`` is one in-place pass (``kernels.residual``) — cuDNN adds a
  convolution's bias in a separate broadcast pass, 1.25 ms of an SD1.5 call at batch 8; the division by
  ``output_scale_factor`` runs only when it is not 1 (diffusers divides by 1.0: one pass per block).
* 1x1 stride-1 ``Conv2d`` on channels-last input (Transformer2DModel's proj_in/proj_out, resnet
  shortcuts): a GEMM over the NHWC pixels (``F.linear``), whose bias cuBLAS adds in its epilogue.
* ``GEGLU``: the projection, then one ``kernels.geglu`` pass instead of gelu + mul on strided halves.
* ``BasicTransformerBlock`` (``layer_norm`` type, no positional embedding, GLIGEN or chunking): each
  residual add fused with the LayerNorm after it (``kernels.layernorm.add_layer_norm``), the first norm
  on the same kernel family, the last add in place into the feed-forward's output.

Every other configuration calls the class's own forward. On the CPU (and under autograd) the code runs
the same PyTorch ops as diffusers, so outputs are bit-identical there; on CUDA they agree within fp16
rounding (bias added after the convolution's accumulation instead of inside it).
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F

from fewstep.kernels import residual
from fewstep.kernels.geglu import geglu
from fewstep.kernels.groupnorm import FusedGroupNorm
from fewstep.kernels.layernorm import add_layer_norm, layer_norm


def _on_kernels(x: torch.Tensor) -> bool:
    """Whether the bias-folding CUDA path runs: a CUDA tensor and no autograd."""
    return x.is_cuda and not torch.is_grad_enabled()


def _resnet_forward(self: Any, input_tensor: torch.Tensor, temb: torch.Tensor | None, *args: Any,
                    **kwargs: Any) -> torch.Tensor:
    """ResnetBlock2D: out = (shortcut(x) + conv2(SiLU(GN2(conv1(SiLU(GN1(x))) + W_t SiLU(temb))))) / s."""
    if args or kwargs or self.upsample is not None or self.downsample is not None or self.training:
        return type(self).forward(self, input_tensor, temb, *args, **kwargs)
    if _on_kernels(input_tensor) and type(self.conv1) is torch.nn.Conv2d and type(self.conv2) is torch.nn.Conv2d:
        return _resnet_folded(self, input_tensor, temb)     # (not for quantized convs: MixDQ swaps them later)
    h = self.conv1(self.norm1(input_tensor))                  # norm1 carries the SiLU (FusedGroupNorm)
    pre = None
    if self.time_emb_proj is not None and temb is not None:
        pre = self.time_emb_proj(temb if self.skip_time_act else self.nonlinearity(temb))   # [N, C]
    h = self.conv2(self.dropout(self.norm2(h, pre=pre)))
    shortcut = self.conv_shortcut(input_tensor) if self.conv_shortcut is not None else input_tensor
    out = h.add_(shortcut) if not torch.is_grad_enabled() else h + shortcut
    return out if self.output_scale_factor == 1.0 else out / self.output_scale_factor


def _resnet_folded(self: Any, x: torch.Tensor, temb: torch.Tensor | None) -> torch.Tensor:
    """The CUDA path: both convolutions without bias; conv1's bias joins the time embedding in GN2's
    ``pre`` [N, C], conv2's is added with the shortcut in one pass."""
    h = self.conv1._conv_forward(self.norm1(x), self.conv1.weight, None)
    pre = self.conv1.bias
    if self.time_emb_proj is not None and temb is not None:
        t = self.time_emb_proj(temb if self.skip_time_act else self.nonlinearity(temb))     # [N, C]
        pre = t if pre is None else t + pre
    if pre is not None and pre.ndim == 1:
        pre = pre.expand(h.shape[0], -1)
    h = self.conv2._conv_forward(self.norm2(h, pre=pre), self.conv2.weight, None)
    shortcut = self.conv_shortcut(x) if self.conv_shortcut is not None else x
    if self.conv2.bias is None:
        out = h.add_(shortcut)
    elif residual.supported(h, shortcut):
        out = residual.add_bias_residual_(h, shortcut, self.conv2.bias)
    else:
        out = h.add_(shortcut).add_(self.conv2.bias.view(1, -1, 1, 1))
    return out if self.output_scale_factor == 1.0 else out / self.output_scale_factor


def _conv1x1_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 stride-1 convolution on channels-last x as a GEMM over its NHWC pixels (bias in cuBLAS's
    epilogue): y[n, h, w, :] = W x[n, h, w, :] + b, returned as an NHWC view [N, Cout, H, W]."""
    if x.ndim != 4 or not _on_kernels(x) or not x.is_contiguous(memory_format=torch.channels_last):
        return self._conv_forward(x, self.weight, self.bias)
    w = self.weight.reshape(self.out_channels, self.in_channels)
    return F.linear(x.permute(0, 2, 3, 1), w, self.bias).permute(0, 3, 1, 2)


def _geglu_forward(self: Any, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """GEGLU (Shazeer 2020): a * gelu(g) with [a | g] = proj(x)."""
    if args or kwargs:
        return type(self).forward(self, hidden_states, *args, **kwargs)
    return geglu(self.proj(hidden_states))


def _add_norm(a: torch.Tensor, r: torch.Tensor, norm: torch.nn.LayerNorm) -> tuple[torch.Tensor, torch.Tensor]:
    return add_layer_norm(a, r, norm.weight, norm.bias, norm.eps)


def _transformer_block_forward(self: Any, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                               encoder_hidden_states: torch.Tensor | None = None,
                               encoder_attention_mask: torch.Tensor | None = None, *args: Any,
                               **kwargs: Any) -> torch.Tensor:
    """BasicTransformerBlock, pre-norm: h += SelfAttn(LN1 h); h += CrossAttn(LN2 h, ctx); h += FF(LN3 h)."""
    plain = (not args and not any(v is not None and v != {} for v in kwargs.values())
             and hidden_states.ndim == 3 and not self.training)
    if not plain:
        return type(self).forward(self, hidden_states, attention_mask, encoder_hidden_states,
                                  encoder_attention_mask, *args, **kwargs)
    n1 = self.norm1
    attn = self.attn1(layer_norm(hidden_states, n1.weight, n1.bias, n1.eps), attention_mask=attention_mask,
                      encoder_hidden_states=encoder_hidden_states if self.only_cross_attention else None)
    if self.attn2 is not None:
        hidden_states, normed = _add_norm(attn, hidden_states, self.norm2)
        attn = self.attn2(normed, encoder_hidden_states=encoder_hidden_states,
                          attention_mask=encoder_attention_mask)
    hidden_states, normed = _add_norm(attn, hidden_states, self.norm3)
    ff = self.ff(normed)
    return ff.add_(hidden_states) if not torch.is_grad_enabled() else ff + hidden_states


def _is_plain_transformer_block(m: Any) -> bool:
    return (m.norm_type == "layer_norm" and m.pos_embed is None and m._chunk_size is None
            and not hasattr(m, "fuser") and all(isinstance(getattr(m, n, None), torch.nn.LayerNorm)
                                                 for n in ("norm1", "norm3"))
            and (m.attn2 is None or isinstance(m.norm2, torch.nn.LayerNorm)))


def lean_forwards(module: torch.nn.Module) -> dict[str, int]:
    """Rebind the lean forwards on every eligible block inside ``module``; returns counts per kind.
    Run after ``vae_fast.fuse_groupnorms`` (the ResnetBlock2D forward needs its fused norms)."""
    try:
        from diffusers.models.activations import GEGLU
        from diffusers.models.attention import BasicTransformerBlock
        from diffusers.models.resnet import ResnetBlock2D
    except ImportError:
        return {}
    counts = {"resnet": 0, "geglu": 0, "transformer": 0, "conv1x1": 0}
    for m in module.modules():
        if type(m) is torch.nn.Conv2d and m.kernel_size == (1, 1) and m.stride == (1, 1) and \
                m.padding in ((0, 0), "valid") and m.dilation == (1, 1) and m.groups == 1:
            m.forward = types.MethodType(_conv1x1_forward, m)
            counts["conv1x1"] += 1
        if type(m) is ResnetBlock2D and m.time_embedding_norm == "default" and \
                isinstance(m.norm1, FusedGroupNorm) and isinstance(m.norm2, FusedGroupNorm) and m.norm1.silu:
            m.forward = types.MethodType(_resnet_forward, m)
            counts["resnet"] += 1
        elif type(m) is GEGLU:
            m.forward = types.MethodType(_geglu_forward, m)
            counts["geglu"] += 1
        elif type(m) is BasicTransformerBlock and _is_plain_transformer_block(m):
            m.forward = types.MethodType(_transformer_block_forward, m)
            counts["transformer"] += 1
    return counts

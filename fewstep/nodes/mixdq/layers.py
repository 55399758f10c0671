"""Quantized layers (MixDQ, Zhao et al. 2024, arXiv 2405.17873) and how a network is rewritten with them.

A quantized layer stores integer weight codes (int8, or two int4 codes a byte), one float32 scale per
output channel, the bias in the original dtype, and one calibrated float32 activation scale (absent when
its activations stay 16-bit). ``forward`` calls ``kernels.lowbit``: Triton on CUDA, the PyTorch reference
numerics on CPU (simulated quantization). The BOS-aware wrapper (MixDQ Sec. 4.1) keeps the first text
token's key/value out of the activation quantizer.
"""

from __future__ import annotations

import torch
from torch import nn

from fewstep.kernels import lowbit
from fewstep.kernels import reference as ref

FP_BITS = 16                       # "bits" of a layer left in floating point
CONTENT_MARKERS = (".attn2.", ".ff.")   # cross-attention and feed-forward: content-related (MixDQ Sec. 4.2)
BOS_SUFFIXES = ("attn2.to_k", "attn2.to_v")


def is_content_layer(name: str) -> bool:
    """True for layers MixDQ scores by image similarity (cross-attention and FFN), False for the rest."""
    return any(marker in f".{name}." for marker in CONTENT_MARKERS)


def is_bos_layer(name: str) -> bool:
    """True for cross-attention key/value projections, whose input is the text embedding."""
    return name.endswith(BOS_SUFFIXES)


def quantizable_layers(module: nn.Module) -> dict[str, nn.Module]:
    """Every nn.Linear and plain nn.Conv2d (groups 1, dilation 1, zero padding) by qualified name."""
    found: dict[str, nn.Module] = {}
    for name, layer in module.named_modules():
        if isinstance(layer, nn.Linear):
            found[name] = layer
        elif (isinstance(layer, nn.Conv2d) and layer.groups == 1 and layer.dilation == (1, 1)
              and layer.padding_mode == "zeros" and not isinstance(layer.padding, str)):
            found[name] = layer
    return found


def _a_scale(absmax: float | None, a_bits: int, device: torch.device) -> torch.Tensor | None:
    if a_bits >= FP_BITS:
        return None
    if absmax is None:
        raise ValueError("an activation scale (calibrated absmax) is needed for activation bits < 16")
    return torch.tensor(max(absmax, 1e-8) / ref.qmax_of(a_bits), dtype=torch.float32, device=device)


class _QuantBase(nn.Module):
    """Shared storage of QuantLinear / QuantConv2d (buffers, so state_dict holds them) and the GPU
    execution plans: one :class:`kernels.lowbit.Plan` per input (rows, dtype), picked by timing the
    candidates on the first call when ``tune`` is on (never during CUDA-graph capture), else the default."""

    backend: str = "auto"
    tune: bool = False
    tune_cache: dict  # set by set_tuning: one dict shared by the layers of a network (shape -> plan, timings)

    def _init_storage(self, qweight: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None,
                      a_scale: torch.Tensor | None, w_bits: int, a_bits: int) -> None:
        self.w_bits, self.a_bits = int(w_bits), int(a_bits)
        self.register_buffer("qweight", qweight)
        self.register_buffer("w_scale", w_scale)
        self.register_buffer("bias", bias)
        self.register_buffer("a_scale", a_scale)
        self.plans: dict[tuple, lowbit.Plan] = {}
        self.timings: dict[tuple, dict[str, float]] = {}     # per tuned shape: plan label -> ms, "fp16" -> ms

    def extra_repr(self) -> str:
        return f"w_bits={self.w_bits}, a_bits={self.a_bits}"

    def _plan(self, x: torch.Tensor, rows: int, linear: bool) -> lowbit.Plan | None:
        """The plan of a call with ``rows`` GEMM rows (None = the launcher's default)."""
        on_kernels = x.is_cuda or (self.backend == "triton" and lowbit.triton_available(x.device))
        if not on_kernels or self.backend == "reference":
            return None
        key = (rows, x.dtype)
        capturing = x.is_cuda and torch.cuda.is_current_stream_capturing()
        if key not in self.plans and self.tune and not capturing:
            shape = (type(self).__name__, tuple(x.shape), x.stride(), tuple(self.qweight.shape),
                     self.qweight.dtype, self.bias is None, self.a_scale is None, getattr(self, "weight_shape", None),
                     getattr(self, "stride", None), getattr(self, "padding", None))
            if shape not in self.tune_cache:                   # identical layers (SDXL: 10 blocks a level) share
                a8 = self.a_scale is not None
                plans = lowbit.candidates(rows, self.w_scale.shape[0], self.qweight.shape[1], a8=a8,
                                          w4=self.qweight.dtype == torch.uint8, linear=linear)
                plan, timings = lowbit.tune(lambda p: self._run(x, p), plans)
                timings["fp16"] = lowbit.time_ms(self._fp16_call(x))
                self.tune_cache[shape] = (plan, timings)
            self.plans[key], self.timings[key] = self.tune_cache[shape]
        return self.plans.get(key)

    def _scales(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """float32 weight and activation scales (``module.half()`` casts the buffers to fp16; the kernels
        read float32, and ``.float()`` of a float32 tensor is the tensor itself, no launch)."""
        a = None if self.a_scale is None else self.a_scale.float()
        return self.w_scale.float(), a

    def _fp16_call(self, x: torch.Tensor):
        """A closure running the float layer this one replaces (dequantized weights in x's dtype): the
        cuBLAS / cuDNN baseline of the per-shape timings."""
        raise NotImplementedError

    def _run(self, x: torch.Tensor, plan: lowbit.Plan | None) -> torch.Tensor:
        raise NotImplementedError


class QuantLinear(_QuantBase):
    """Linear layer with W{2..8} A{2..8,16} storage; see the module docstring."""

    def __init__(self, in_features: int, out_features: int, w_bits: int, a_bits: int, *, bias: bool,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        cols = (in_features + 1) // 2 if w_bits <= 4 else in_features
        qdtype = torch.uint8 if w_bits <= 4 else torch.int8
        self._init_storage(torch.zeros(out_features, cols, dtype=qdtype, device=device),
                           torch.ones(out_features, dtype=torch.float32, device=device),
                           torch.zeros(out_features, dtype=dtype, device=device) if bias else None,
                           torch.ones((), dtype=torch.float32, device=device) if a_bits < FP_BITS else None,
                           w_bits, a_bits)

    @classmethod
    def from_float(cls, layer: nn.Linear, w_bits: int, a_bits: int, absmax: float | None) -> QuantLinear:
        """Quantize ``layer``'s weight per output channel; ``absmax`` is the calibrated input range."""
        w = layer.weight.detach()
        out = cls(layer.in_features, layer.out_features, w_bits, a_bits, bias=layer.bias is not None,
                  dtype=w.dtype, device=w.device)
        q, scale = ref.quantize_weight(w, w_bits)                        # [N, K] int8, [N]
        out.qweight = ref.pack_int4(q) if w_bits <= 4 else q
        out.w_scale = scale
        out.bias = None if layer.bias is None else layer.bias.detach().clone()
        out.a_scale = _a_scale(absmax, a_bits, w.device)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, self._plan(x, x.numel() // max(self.in_features, 1), linear=True))

    def _run(self, x: torch.Tensor, plan: lowbit.Plan | None) -> torch.Tensor:
        w_scale, a_scale = self._scales()
        return lowbit.lowbit_linear(x, self.qweight, w_scale, self.bias, a_scale, self.a_bits,
                                    self.in_features, backend=self.backend, plan=plan)

    def _fp16_call(self, x: torch.Tensor):
        codes = ref.weight_codes(self.qweight, self.w_bits, self.in_features)
        w = (codes.float() * self.w_scale[:, None]).to(x.dtype)
        return lambda: torch.nn.functional.linear(x, w, self.bias)

    def forward_fp_act(self, x: torch.Tensor) -> torch.Tensor:
        """The same layer with 16-bit activations (weight-only quantized)."""
        return lowbit.lowbit_linear(x, self.qweight, self._scales()[0], self.bias, None, FP_BITS,
                                    self.in_features, backend=self.backend)


class QuantConv2d(_QuantBase):
    """Conv2d (groups 1, dilation 1) with low-bit storage; codes in [N, KH*KW*C] order."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int],
                 stride: tuple[int, int], padding: tuple[int, int], w_bits: int, a_bits: int, *, bias: bool,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.weight_shape = (out_channels, in_channels, *kernel_size)
        self.stride, self.padding = tuple(stride), tuple(padding)
        taps = kernel_size[0] * kernel_size[1]
        cols = taps * ((in_channels + 1) // 2) if w_bits <= 4 else taps * in_channels
        qdtype = torch.uint8 if w_bits <= 4 else torch.int8
        self._init_storage(torch.zeros(out_channels, cols, dtype=qdtype, device=device),
                           torch.ones(out_channels, dtype=torch.float32, device=device),
                           torch.zeros(out_channels, dtype=dtype, device=device) if bias else None,
                           torch.ones((), dtype=torch.float32, device=device) if a_bits < FP_BITS else None,
                           w_bits, a_bits)

    @classmethod
    def from_float(cls, layer: nn.Conv2d, w_bits: int, a_bits: int, absmax: float | None) -> QuantConv2d:
        """Quantize ``layer``'s weight per output channel; ``absmax`` is the calibrated input range."""
        w = layer.weight.detach()
        out = cls(layer.in_channels, layer.out_channels, tuple(layer.kernel_size), tuple(layer.stride),
                  tuple(layer.padding), w_bits, a_bits, bias=layer.bias is not None, dtype=w.dtype,
                  device=w.device)
        q, scale = ref.quantize_weight(ref.conv_weight_to_rows(w), w_bits)  # [N, KH*KW*C], [N]
        taps = layer.kernel_size[0] * layer.kernel_size[1]
        out.qweight = ref.pack_conv_int4(q, taps) if w_bits <= 4 else q
        out.w_scale = scale
        out.bias = None if layer.bias is None else layer.bias.detach().clone()
        out.a_scale = _a_scale(absmax, a_bits, w.device)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, kh, kw = self.weight_shape
        rows = x.shape[0] * ((x.shape[2] + 2 * self.padding[0] - kh) // self.stride[0] + 1) * \
            ((x.shape[3] + 2 * self.padding[1] - kw) // self.stride[1] + 1)
        pointwise = (kh, kw, *self.stride, *self.padding) == (1, 1, 1, 1, 0, 0)
        return self._run(x, self._plan(x, rows, linear=pointwise))

    def _run(self, x: torch.Tensor, plan: lowbit.Plan | None) -> torch.Tensor:
        w_scale, a_scale = self._scales()
        return lowbit.lowbit_conv2d(x, self.qweight, w_scale, self.bias, a_scale, self.a_bits,
                                    self.weight_shape, self.stride, self.padding, backend=self.backend, plan=plan)

    def _fp16_call(self, x: torch.Tensor):
        n, c, kh, kw = self.weight_shape
        codes = ref.conv_weight_codes(self.qweight, n, kh * kw, c)
        w = (codes.float() * self.w_scale[:, None]).view(n, kh, kw, c).permute(0, 3, 1, 2).to(x.dtype)
        if x.is_contiguous(memory_format=torch.channels_last):
            w = w.contiguous(memory_format=torch.channels_last)
        else:
            w = w.contiguous()
        return lambda: torch.nn.functional.conv2d(x, w, self.bias, self.stride, self.padding)


class BOSAwareKV(nn.Module):
    """Cross-attention K or V projection whose first text token bypasses the activation quantizer.

    MixDQ Sec. 4.1: the BOS token's embedding is a large outlier, identical for every prompt of a causal
    text encoder (CLIP), so its projection is precomputed once in full precision (``bos_out`` [N]) and
    the other tokens are quantized with a range that excludes it. When the first token varies between
    prompts (a bidirectional encoder such as MiniLM) ``bos_out`` is None and the token runs through the
    layer with 16-bit activations instead.
    """

    def __init__(self, inner: QuantLinear, bos_out: torch.Tensor | None) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("bos_out", bos_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3:
            raise ValueError(f"BOSAwareKV expects text states [B, L, D], got {tuple(x.shape)}")
        rest = self.inner(x[:, 1:])                                       # [B, L-1, N]
        if self.bos_out is not None:
            head = self.bos_out.to(rest.dtype).expand(x.shape[0], 1, -1)  # [B, 1, N]
        else:
            head = self.inner.forward_fp_act(x[:, :1])                    # [B, 1, N]
        return torch.cat([head, rest], dim=1)


def set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at dotted ``name`` of ``root``."""
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def set_backend(module: nn.Module, backend: str) -> None:
    """Choose ``auto`` | ``triton`` | ``reference`` for every quantized layer inside ``module``."""
    for layer in module.modules():
        if isinstance(layer, _QuantBase):
            layer.backend = backend


def set_tuning(module: nn.Module, on: bool = True) -> None:
    """Time the candidate GPU plans of every quantized layer on its first call per input shape."""
    shared: dict = {}
    for layer in module.modules():
        if isinstance(layer, _QuantBase):
            layer.tune, layer.tune_cache = bool(on), shared


def plan_report(module: nn.Module) -> list[dict]:
    """Per quantized layer and tuned shape: the chosen plan, its ms, the fp16 layer's ms, every candidate."""
    rows = []
    for name, layer in module.named_modules():
        if not isinstance(layer, _QuantBase):
            continue
        for (m, dtype), plan in layer.plans.items():
            t = layer.timings.get((m, dtype), {})
            kind = "linear" if isinstance(layer, QuantLinear) else "conv{}x{}".format(*layer.weight_shape[2:])
            rows.append({"layer": name, "kind": kind, "rows": m, "n": int(layer.w_scale.shape[0]),
                         "k": int(layer.qweight.shape[1]) * (2 if layer.qweight.dtype == torch.uint8 else 1),
                         "w_bits": layer.w_bits, "a_bits": layer.a_bits, "plan": plan.label(),
                         "ms": t.get(plan.label()), "fp16_ms": t.get("fp16"), "candidates": t})
    return rows


def weight_bytes(module: nn.Module) -> int:
    """Bytes of all parameters and buffers (the model's weight memory)."""
    tensors = list(module.parameters()) + [b for b in module.buffers() if b is not None]
    return sum(t.numel() * t.element_size() for t in tensors)

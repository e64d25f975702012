"""transformers integration: quantized KV caches for ``model.generate`` (transformers >= 5.17).

    import lowbit.kv.hf as lkv
    lkv.use_lowbit_attention(model)          # registers and selects attn_implementation "lowbit"
    cache = lkv.KVarNCache(model.config, preset="kvarn-k4v2-g128")
    out = model.generate(**inputs, **{lkv.cache_argument(): cache})

Two paths, one codec (the same tiles, the same numbers up to float32 rounding):

* **memory-saving** (default): every full-attention layer is a :class:`QuantizedKVLayer`
  backed by one :class:`lowbit.kv.QuantizedKVCache`, which holds only packed codes, per-tile
  scales and the exact sink / recent tokens.  ``update`` hands the new tokens to the
  registered attention implementation ``"lowbit"`` (:func:`lowbit_attention`), which runs the
  fused kernel ``kv_attend`` on the cache itself (:mod:`lowbit.kv.attend`: the chunk's tokens
  exact and causal, the history from the codes) and then appends the chunk, quantizing the
  tiles it completes, once.  Nothing is dequantized and the history is not copied per step.
  The model must use ``attn_implementation="lowbit"`` (:func:`use_lowbit_attention`; layers
  that are not quantized fall back to SDPA); a cache used with another attention raises.
* **fake-quant** (``fake_quant=True``, for the research harness): :class:`FakeQuantKVLayer`
  keeps every completed tile dequantized in the model's dtype and returns the whole history
  (sink exact, tiles dequantized and un-rotated, recent exact) from ``update`` to the model's
  own attention.  It holds *more* memory than ``DynamicCache`` and copies the history per step;
  it exists so that research code can inspect or alter the reproduced keys/values.

``exact_within_call=True`` (default, both paths): the tokens of one ``update`` (e.g. the
prompt) see each other exactly in that call, as the official release's first prefill chunk and
the paper's block-wise pseudo-decode do, and only later calls see them quantized; ``False``
makes the call itself see the cache's reproduction.  Other layer types (sliding window,
chunked, ...) keep transformers' own unquantized layers.

CPU and CUDA tensors: a layer's storage lives where the model's first keys live -- numpy
arrays for CPU tensors (the Numba kernels), CuPy arrays on the tensor's device for CUDA tensors
(zero-copy through DLPack, the CUDA kernels on torch's current stream; kvarn, kivi, quarot,
rtn and fp8 decode attend with the fused CUDA ``kv_attend``, what it does not cover -- chunks
of L > 1 queries, codebook grids, TurboQuant -- attends on tiles dequantized on the device).  Nothing goes through the
host; results come back as torch tensors on the model's device and in its dtype.  The
memory-saving layer checks each step's query and new keys / values for NaN / Inf once, which on
a GPU waits for the device (one host synchronization per layer and step); caches built with
``check_finite=False`` skip these checks (NaN / Inf are then passed on, not detected; see
:class:`lowbit.kv.QuantizedKVCache`): a decode step then makes no host synchronization, for
every scheme, and for the schemes of the fused ``kv_attend`` (all but the codebook grids and
TurboQuant) can be captured in a ``torch.cuda.CUDAGraph`` with CuPy allocating from
torch's caching allocator (:func:`lowbit.arrays.cupy_uses_torch_memory`; docs/kv.md).  bfloat16 models keep their exact regions in float32 (exact for
bfloat16 values).  Importing this module imports torch and transformers and registers the
``"lowbit"`` attention implementation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from transformers.cache_utils import DYNAMIC_LAYER_TYPE_MAPPING, Cache, DynamicLayer

from lowbit.arrays import Origin, contiguous, is_cupy, stream_for, to_backend
from lowbit.kv.cache import QuantizedKVCache


def cache_argument() -> str:
    """The name of ``generate``'s cache argument: ``"cache"`` (transformers renamed
    ``past_key_values`` to it, deprecating the old name) or ``"past_key_values"``."""
    from transformers.generation import utils

    return "cache" if "cache" in getattr(utils, "ALL_CACHE_NAMES", ()) else "past_key_values"


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.contiguous().numpy()


def _to_array(t: torch.Tensor) -> Any:
    """A tensor as the cache takes it: numpy for a CPU tensor, CuPy (zero-copy, DLPack) on the
    tensor's device for a CUDA tensor; bfloat16 widened to float32 (exact) on its device."""
    if t.device.type == "cpu":
        return _to_numpy(t)
    if t.device.type != "cuda":
        raise TypeError(f"lowbit KV caches take CPU or CUDA tensors, got a tensor on {t.device}")
    t = t.detach()
    if t.dtype == torch.bfloat16:
        t = t.float()
    arr, _ = to_backend(t, "key/value states", allow_empty=True)
    return arr


def _to_index(t: torch.Tensor) -> Any:
    """Integer positions (int32): numpy for a CPU tensor, CuPy (DLPack) for a CUDA tensor."""
    if t.device.type == "cpu":
        return np.asarray(t, np.int32)
    arr, _ = to_backend(t.to(torch.int32), "start", dtypes=("int32",), allow_empty=True)
    return arr


def _to_torch(a: Any, dtype: torch.dtype) -> torch.Tensor:
    """A cache array (numpy or CuPy) as a torch tensor of ``dtype`` on the array's device."""
    if is_cupy(a):
        return torch.from_dlpack(contiguous(a)).to(dtype)  # zero-copy, then a cast on the device
    return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)


def _origin(t: torch.Tensor) -> Origin:
    device = "cpu" if t.device.type == "cpu" else f"cuda:{t.device.index or 0}"
    return Origin("torch", str(t.dtype).replace("torch.", ""), device)


@contextlib.contextmanager
def _on(layer: Any) -> Iterator[None]:
    """The layer's device and torch's current stream for the cache's CuPy work (no-op on CPU)."""
    origin = getattr(layer, "origin", None)
    if origin is None:
        yield
        return
    with stream_for(origin):
        yield


def _index_of(index: torch.Tensor | np.ndarray) -> np.ndarray:
    """A batch index on the host (a few integers; a CUDA index is copied explicitly)."""
    return np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index, dtype=np.int64)


class FakeQuantKVLayer(DynamicLayer):
    """Research harness: one layer's cache whose ``update`` returns the reproduced history.

    Quantized tile by tile (arguments: :class:`QuantizedKVCache`); completed tiles are kept
    dequantized in the model's dtype (see the module docstring: this path saves no memory).
    """

    is_croppable = True

    def __init__(self, scheme: str = "kvarn-k4v2-g128", *, sink: int = 128, recent: int = 0,
                 exact_within_call: bool = True, **cache_options: Any) -> None:
        super().__init__()
        self.scheme = scheme
        self.exact_within_call = bool(exact_within_call)
        self.cache_options = dict(cache_options, sink=sink, recent=recent)
        self.cache: QuantizedKVCache | None = None
        self.origin: Origin | None = None  # a CUDA layer's device (None: CPU)
        self._fixed_k: torch.Tensor | None = None  # sink + dequantized tiles, model dtype
        self._fixed_v: torch.Tensor | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        if key_states.device.type not in ("cpu", "cuda"):
            raise TypeError(f"lowbit KV caches take CPU or CUDA tensors, got {key_states.device}")
        self.dtype, self.device = key_states.dtype, key_states.device
        self.origin = _origin(key_states) if key_states.is_cuda else None
        self.cache = QuantizedKVCache(self.scheme, int(key_states.shape[-1]), **self.cache_options)
        b, h, _, d = key_states.shape
        self._fixed_k = key_states.new_empty((b, h, 0, d))
        self._fixed_v = value_states.new_empty((b, h, 0, d))
        self.keys, self.values = self._fixed_k, self._fixed_v
        self.is_initialized = True

    def _torch(self, a: Any) -> torch.Tensor:
        return _to_torch(a, self.dtype)

    def _refresh(self) -> None:
        """Extend the fixed part with new sink tokens / tiles; rebuild keys and values."""
        assert self.cache is not None and self._fixed_k is not None and self._fixed_v is not None
        sink_k, sink_v, rec_k, rec_v = self.cache.exact_tokens()
        have = self._fixed_k.shape[-2]
        s = sink_k.shape[2]
        fixed_end = self.cache.regions()["tiles"][1]
        if fixed_end > have:
            parts_k, parts_v = [self._fixed_k], [self._fixed_v]
            if have < s:
                parts_k.append(self._torch(sink_k[:, :, have:]))
                parts_v.append(self._torch(sink_v[:, :, have:]))
            first_tile = max(have - s, 0) // self.cache.group_size
            if self.cache.n_tiles > first_tile:
                tk, tv = self.cache.dequantized_tiles(first_tile)
                parts_k.append(self._torch(tk))
                parts_v.append(self._torch(tv))
            self._fixed_k = torch.cat(parts_k, dim=-2)
            self._fixed_v = torch.cat(parts_v, dim=-2)
        self.keys = torch.cat([self._fixed_k, self._torch(rec_k)], dim=-2)
        self.values = torch.cat([self._fixed_v, self._torch(rec_v)], dim=-2)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Append ``[batch, kv_heads, tokens, head_dim]`` states; return all keys and values."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        assert self.cache is not None
        before = (self.keys, self.values, self.cache.n_tiles)
        with _on(self):
            self.cache.append(_to_array(key_states), _to_array(value_states))
            self._refresh()
        assert self.keys is not None and self.values is not None
        if self.exact_within_call and self.cache.n_tiles > before[2]:
            # the new tokens completed tiles: this call still sees them exactly
            assert before[0] is not None and before[1] is not None
            return (torch.cat([before[0], key_states.to(self.dtype)], dim=-2),
                    torch.cat([before[1], value_states.to(self.dtype)], dim=-2))
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return 0 if self.cache is None else len(self.cache)

    def crop(self, tokens_to_remove: int) -> None:
        """Remove ``-tokens_to_remove`` newest tokens (they must still be exact, see ``drop_recent``)."""
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes a negative count of tokens to remove, got {tokens_to_remove}")
        if tokens_to_remove == 0 or self.cache is None:
            return
        with _on(self):
            self.cache.drop_recent(-tokens_to_remove)
            self._refresh()

    def _select(self, index: torch.Tensor | np.ndarray) -> None:
        if self.cache is None or self._fixed_k is None or self._fixed_v is None:
            return
        idx = _index_of(index)
        with _on(self):
            self.cache.select_batch(idx)
            t = torch.from_numpy(idx).to(self._fixed_k.device)
            self._fixed_k = self._fixed_k.index_select(0, t)
            self._fixed_v = self._fixed_v.index_select(0, t)
            self._refresh()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._select(beam_idx)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._select(indices)

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.cache is not None and self.cache.batch is not None:
            self._select(np.repeat(np.arange(self.cache.batch), repeats))

    def reset(self) -> None:
        super().reset()
        self.cache = None
        self.origin = None
        self._fixed_k = self._fixed_v = None

    def memory_bytes(self) -> dict[str, int]:
        """The layer's :meth:`QuantizedKVCache.memory_bytes` (zeros before the first update)."""
        if self.cache is None:
            return dict(_EMPTY_MEMORY)
        return self.cache.memory_bytes()


_EMPTY_MEMORY = {"sink": 0, "recent": 0, "codes": 0, "scales": 0, "total": 0}


class QuantizedKVLayer(DynamicLayer):
    """One attention layer's memory-saving cache (arguments: :class:`QuantizedKVCache`).

    Holds only the :class:`QuantizedKVCache` (codes, scales, exact sink / recent tokens);
    ``keys`` / ``values`` stay empty ``[B, Hk, 0, D]`` placeholders.  ``update`` keeps the new
    tokens pending and returns them tagged for :func:`lowbit_attention`, which attends and then
    appends them (:meth:`attend`).
    """

    is_croppable = True

    def __init__(self, scheme: str = "kvarn-k4v2-g128", *, sink: int = 128, recent: int = 0,
                 exact_within_call: bool = True, **cache_options: Any) -> None:
        super().__init__()
        self.scheme = scheme
        self.exact_within_call = bool(exact_within_call)
        self.cache_options = dict(cache_options, sink=sink, recent=recent)
        self.cache: QuantizedKVCache | None = None
        self.origin: Origin | None = None  # a CUDA layer's device (None: CPU)
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        if key_states.device.type not in ("cpu", "cuda"):
            raise TypeError(f"lowbit KV caches take CPU or CUDA tensors, got {key_states.device}")
        self.dtype, self.device = key_states.dtype, key_states.device
        self.origin = _origin(key_states) if key_states.is_cuda else None
        self.cache = QuantizedKVCache(self.scheme, int(key_states.shape[-1]), **self.cache_options)
        b, h, _, d = key_states.shape
        self.keys = key_states.new_empty((b, h, 0, d))
        self.values = value_states.new_empty((b, h, 0, d))
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep ``[batch, kv_heads, tokens, head_dim]`` states pending for :func:`lowbit_attention`.

        Returns the same tensors, tagged with this layer (``key._lowbit_layer``).

        Raises
        ------
        RuntimeError
            The previous update was never attended: the model's attention is not ``"lowbit"``.
        """
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if self._pending is not None:
            raise RuntimeError(_NOT_LOWBIT)
        self._pending = (key_states, value_states)
        key_states._lowbit_layer = self  # type: ignore[attr-defined]
        return key_states, value_states

    def attend(self, query: torch.Tensor, scale: float | None = None,
               start: torch.Tensor | None = None) -> torch.Tensor:
        """Attention of ``query [B, Hq, L, D]`` over the cache and the pending chunk, then append.

        ``start [B]``: first attended position per sequence (left padding).  Returns
        ``[B, Hq, L, D]`` in the query's dtype, on the query's device (a CUDA layer attends on
        the device: the fused CUDA kernel, or tiles dequantized there).
        """
        if self._pending is None or self.cache is None:
            raise RuntimeError("QuantizedKVLayer.attend needs a pending update (call update first)")
        pending, self._pending = self._pending, None
        cache = self.cache
        with _on(self):
            k_new, v_new = (_to_array(t) for t in pending)
            q = _to_array(query).astype(np.float32, copy=False)
            first = None if start is None else _to_index(start)
            if self.exact_within_call or cache.batch is None:
                if cache.batch is None:  # nothing cached yet: the chunk alone, exact and causal
                    cache.append(k_new[:, :, :0], v_new[:, :, :0])
                out = cache.attend(q, scale, new_k=k_new, new_v=v_new, start=first)
                cache._append(k_new, v_new, finite=False)  # attend checked the chunk
            else:
                cache.append(k_new, v_new)
                out = cache.attend(q, scale, start=first)
            return _to_torch(out, query.dtype)

    def append_pending(self) -> None:
        """Append the pending chunk without attending (its attention was computed elsewhere)."""
        if self._pending is None or self.cache is None:
            raise RuntimeError("QuantizedKVLayer.append_pending needs a pending update")
        pending, self._pending = self._pending, None
        with _on(self):
            self.cache.append(*(_to_array(t) for t in pending))

    def get_seq_length(self) -> int:
        pending = 0 if self._pending is None else int(self._pending[0].shape[-2])
        return (0 if self.cache is None else len(self.cache)) + pending

    def crop(self, tokens_to_remove: int) -> None:
        """Remove ``-tokens_to_remove`` newest tokens (they must still be exact, see ``drop_recent``)."""
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes a negative count of tokens to remove, got {tokens_to_remove}")
        if tokens_to_remove and self.cache is not None:
            with _on(self):
                self.cache.drop_recent(-tokens_to_remove)

    def _select(self, index: torch.Tensor | np.ndarray) -> None:
        if self.cache is None or self.keys is None or self.values is None:
            return
        idx = _index_of(index)
        with _on(self):
            self.cache.select_batch(idx)
        t = torch.from_numpy(idx).to(self.keys.device)
        self.keys = self.keys.index_select(0, t)
        self.values = self.values.index_select(0, t)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._select(beam_idx)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._select(indices)

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.cache is not None and self.cache.batch is not None:
            self._select(np.repeat(np.arange(self.cache.batch), repeats))

    def reset(self) -> None:
        super().reset()
        self.cache = None
        self.origin = None
        self._pending = None

    def memory_bytes(self) -> dict[str, int]:
        """The layer's :meth:`QuantizedKVCache.memory_bytes` (zeros before the first update)."""
        return dict(_EMPTY_MEMORY) if self.cache is None else self.cache.memory_bytes()


_NOT_LOWBIT = ("a memory-saving lowbit KV cache needs the model's attention implementation 'lowbit': "
               "call lowbit.kv.hf.use_lowbit_attention(model) (or build the cache with "
               "fake_quant=True for the research harness's fake-quant path)")


def _start_of(mask: torch.Tensor | None) -> torch.Tensor | None:
    """First attended position per sequence from a 4-D mask's last query row (left padding)."""
    if mask is None:
        return None
    row = mask[:, 0, -1, :]
    allowed = row if row.dtype == torch.bool else row == 0
    return allowed.to(torch.int32).argmax(dim=-1).to(torch.int32)


def lowbit_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                     value: torch.Tensor, attention_mask: torch.Tensor | None, dropout: float = 0.0,
                     scaling: float | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """The ``"lowbit"`` attention implementation (transformers' ``AttentionInterface``).

    For keys coming from a :class:`QuantizedKVLayer`, runs the fused kernel on the layer's cache
    (causal; left padding from ``attention_mask``); for any other layer, transformers' SDPA.
    Returns ``([B, L, Hq, D], None)``.
    """
    layer = getattr(key, "_lowbit_layer", None)
    if layer is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,  # type: ignore[no-any-return]
                                      scaling=scaling, **kwargs)
    if dropout:
        raise ValueError(f"lowbit attention is for inference: dropout must be 0, got {dropout!r}")
    if kwargs.get("softcap") is not None:
        raise ValueError("lowbit attention does not support softcap")
    if layer.get_seq_length() == key.shape[-2]:
        # nothing cached before this chunk (the prompt): plain causal attention over its exact
        # tokens is SDPA's job; the chunk is then appended (tiles quantized once)
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        out, _ = sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                        scaling=scaling, **kwargs)
        layer.append_pending()
        return out, None
    out = layer.attend(query, scaling, _start_of(attention_mask))
    return out.transpose(1, 2).contiguous(), None


def register_attention() -> str:
    """Register ``"lowbit"`` in transformers' attention and mask interfaces (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register("lowbit", lowbit_attention)
    AttentionMaskInterface.register("lowbit", sdpa_mask)
    return "lowbit"


def use_lowbit_attention(model: Any) -> Any:
    """Select the ``"lowbit"`` attention implementation for ``model`` (returns the model)."""
    model.set_attn_implementation(register_attention())
    return model


register_attention()


def _layer_types(config: Any) -> tuple[list[str], list[dict[str, Any]]]:
    cfg = config.get_text_config(decoder=True)
    try:
        from transformers.cache_utils import get_layer_types_and_kwargs

        types, kwargs = get_layer_types_and_kwargs(cfg)
        if len(kwargs) == len(types):
            return types, kwargs
        # transformers 5.17: a config built in code can have fewer per-layer configs than layers
    except (ImportError, AttributeError):  # transformers releases without per-layer configs
        pass
    types = getattr(cfg, "layer_types", None) or ["full_attention"] * cfg.num_hidden_layers
    return list(types), [{"sliding_window": getattr(cfg, "sliding_window", None)}
                         if t != "full_attention" else {} for t in types]


class LowbitKVCache(Cache):
    """A transformers ``Cache`` whose full-attention layers are :class:`QuantizedKVLayer`.

    Parameters
    ----------
    config : transformers.PretrainedConfig
        The model's config (``model.config``).
    scheme : str
        A preset (``"kvarn-k4v2-g128"``, ...) or a family (``"kvarn"``, ``"kivi"``,
        ``"quarot"``, ``"rtn"``, ``"fp8"``); see :class:`lowbit.kv.QuantizedKVCache`.
    sink, recent, **cache_options
        As for :class:`lowbit.kv.QuantizedKVCache` (``key_bits``, ``value_bits``, ``group_size``,
        ``iterations``, ``scale_dtype``, ``value_group_size``, ``check_finite``).
    exact_within_call : bool
        Tokens of one ``update`` see each other exactly in that call (default; see the
        module docstring).
    fake_quant : bool
        False (default): the memory-saving path (:class:`QuantizedKVLayer`, needs
        ``attn_implementation="lowbit"``); True: the research harness's fake-quant path
        (:class:`FakeQuantKVLayer`, the model's own attention over the reproduced history).
    """

    def __init__(self, config: Any, scheme: str = "kvarn-k4v2-g128", *, sink: int = 128,
                 recent: int = 0, exact_within_call: bool = True, fake_quant: bool = False,
                 **cache_options: Any) -> None:
        layer_types, layer_kwargs = _layer_types(config)
        cfg = config.get_text_config(decoder=True)
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        QuantizedKVCache(scheme, head_dim, sink=sink, recent=recent, **cache_options)  # validates now
        layers: list[Any] = []
        for kind, kwargs in zip(layer_types, layer_kwargs, strict=True):
            if kind == "full_attention":
                layer_type = FakeQuantKVLayer if fake_quant else QuantizedKVLayer
                layers.append(layer_type(scheme, sink=sink, recent=recent,
                                         exact_within_call=exact_within_call, **cache_options))
            else:
                layers.append(DYNAMIC_LAYER_TYPE_MAPPING[kind](**kwargs))
        super().__init__(layers=layers)
        self.scheme = scheme
        self.fake_quant = bool(fake_quant)
        self._text_config = cfg

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int,
               *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(self.layers[layer_idx], QuantizedKVLayer) \
                and getattr(self._text_config, "_attn_implementation", None) != "lowbit":
            raise RuntimeError(_NOT_LOWBIT)
        return super().update(key_states, value_states, layer_idx, *args, **kwargs)  # type: ignore[no-any-return]

    def memory_bytes(self) -> dict[str, int]:
        """Bytes held by the quantized layers, summed (see :meth:`QuantizedKVCache.memory_bytes`)."""
        total: dict[str, int] = {"sink": 0, "recent": 0, "codes": 0, "scales": 0, "total": 0}
        for layer in self.layers:
            if isinstance(layer, (QuantizedKVLayer, FakeQuantKVLayer)):
                for k, v in layer.memory_bytes().items():
                    total[k] += v
        return total


class KVarNCache(LowbitKVCache):
    """KVarN cache: ``KVarNCache(model.config, preset="kvarn-k4v2-g128", sink=128)``.

    ``preset`` is one of :data:`lowbit.kv.PRESETS`; ``iterations`` (8), ``scale_dtype``
    ("float16" or "float8_e4m3") and ``check_finite`` pass through.
    """

    def __init__(self, config: Any, preset: str = "kvarn-k4v2-g128", *, sink: int = 128,
                 recent: int = 0, iterations: int = 8, scale_dtype: str = "float16",
                 exact_within_call: bool = True, fake_quant: bool = False,
                 check_finite: bool = True) -> None:
        super().__init__(config, preset, sink=sink, recent=recent, iterations=iterations,
                         scale_dtype=scale_dtype, exact_within_call=exact_within_call,
                         fake_quant=fake_quant, check_finite=check_finite)


class KiviCache(LowbitKVCache):
    """KIVI baseline: keys per channel over ``group_size`` tokens, values per token in groups of 32."""

    def __init__(self, config: Any, bits: int = 2, *, key_bits: int | None = None,
                 value_bits: int | None = None, group_size: int = 128, value_group_size: int = 32,
                 sink: int = 128, recent: int = 0, exact_within_call: bool = True,
                 fake_quant: bool = False, check_finite: bool = True) -> None:
        super().__init__(config, "kivi", sink=sink, recent=recent, group_size=group_size,
                         exact_within_call=exact_within_call, fake_quant=fake_quant,
                         check_finite=check_finite,
                         key_bits=bits if key_bits is None else key_bits,
                         value_bits=bits if value_bits is None else value_bits,
                         value_group_size=value_group_size)


class QuaRotCache(LowbitKVCache):
    """QuaRot baseline: Hadamard rotation along head_dim, then per-token RTN."""

    def __init__(self, config: Any, bits: int = 2, *, key_bits: int | None = None,
                 value_bits: int | None = None, group_size: int = 128, sink: int = 128,
                 recent: int = 0, exact_within_call: bool = True, fake_quant: bool = False,
                 check_finite: bool = True) -> None:
        super().__init__(config, "quarot", sink=sink, recent=recent, group_size=group_size,
                         exact_within_call=exact_within_call, fake_quant=fake_quant,
                         check_finite=check_finite,
                         key_bits=bits if key_bits is None else key_bits,
                         value_bits=bits if value_bits is None else value_bits)


class RTNCache(LowbitKVCache):
    """Per-token RTN baseline (no rotation)."""

    def __init__(self, config: Any, bits: int = 2, *, key_bits: int | None = None,
                 value_bits: int | None = None, group_size: int = 128, sink: int = 128,
                 recent: int = 0, exact_within_call: bool = True, fake_quant: bool = False,
                 check_finite: bool = True) -> None:
        super().__init__(config, "rtn", sink=sink, recent=recent, group_size=group_size,
                         exact_within_call=exact_within_call, fake_quant=fake_quant,
                         check_finite=check_finite,
                         key_bits=bits if key_bits is None else key_bits,
                         value_bits=bits if value_bits is None else value_bits)


class FP8Cache(LowbitKVCache):
    """float8 e4m3 baseline with one absmax scale per head and tile."""

    def __init__(self, config: Any, *, group_size: int = 128, sink: int = 128, recent: int = 0,
                 exact_within_call: bool = True, fake_quant: bool = False,
                 check_finite: bool = True) -> None:
        super().__init__(config, "fp8", sink=sink, recent=recent, group_size=group_size,
                         exact_within_call=exact_within_call, fake_quant=fake_quant,
                         check_finite=check_finite)

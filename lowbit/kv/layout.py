"""The ``layout`` tuple of the ``kv_attend`` kernels: tile geometry and field formats.

Shared by the front (:mod:`lowbit.kv.attend`, which builds it from a codec) and both kernel
tables (lowbit/cpu/kv_attend.py, lowbit/cuda/kv_attend.py); data only.
"""

#: indices into ``layout``
GROUP, KEY_BITS, VALUE_BITS, KEY_ROWS, KEY_COL_GROUPS, VALUE_COL_GROUPS = 0, 1, 2, 3, 4, 5
FMT_KEY_A, FMT_KEY_Z, FMT_KEY_S, FMT_VALUE_A, FMT_VALUE_Z, FMT_VALUE_S = 6, 7, 8, 9, 10, 11
KEY_CODES, VALUE_CODES = 12, 13
LAYOUT_LENGTH = 14
#: ``layout[KEY_ROWS]``: key codes [D, G] (rows = channels) or [G, D] (rows = tokens);
#: value codes are always [G, D]
ROWS_CHANNELS, ROWS_TOKENS = 0, 1
#: field formats: float16 bits (uint16), float8 e4m3 codes (uint8), float32 values, absent
#: (A and S read as 1, Z as 0)
FMT_FLOAT16, FMT_FLOAT8_E4M3, FMT_FLOAT32, FMT_ABSENT = 0, 1, 2, 3
#: ``layout[KEY_CODES]``, ``layout[VALUE_CODES]``: what the codes' values are, i.e. which
#: ``lut`` the caller passes: the integers 0 .. 2^bits - 1, or the float8 e4m3 values (8-bit
#: codes; fp8).  The CPU kernel reads the ``lut``; the CUDA kernel decodes the codes itself.
CODES_INTEGER, CODES_E4M3 = 0, 1
#: columns of ``lengths [B, 4]`` (int32): first attended position, sink tokens, tiles, recent tokens
START, N_SINK, N_TILES, N_RECENT = 0, 1, 2, 3

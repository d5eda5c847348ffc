"""Row chunking for (N, T, V) logits, so a float32 copy of the full vocabulary tensor never exists at once."""

from __future__ import annotations

# 256 MiB of float32 per chunk: a Qwen-size vocabulary (152k) x 1k tokens is ~580 MiB per row, so this is
# one row there, while small test models get the whole batch in one chunk.
_CHUNK_BYTES = 1 << 28


def rows_per_chunk(num_rows: int, row_elems: int, chunk_size: int | None, budget: int = _CHUNK_BYTES) -> int:
    """Rows per chunk: ``chunk_size`` if given, else as many float32 rows as fit in ``budget`` bytes (default
    256 MiB; at least 1)."""
    if chunk_size is not None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        return chunk_size
    return max(1, min(num_rows, budget // max(4 * row_elems, 1)))

"""Rejection sampling (``thinkrl sample``): k completions per prompt from any model, graded by the rewards and
filtered into a dataset ``thinkrl sft`` trains on (DeepSeek-R1 §2.3.3)."""

from thinkrl.rejection.filters import (
    FILTERS,
    FilterConfig,
    filter_samples,
    has_code_block,
    repeated_ngram_ratio,
)
from thinkrl.rejection.runner import (
    RewardGrader,
    SampleError,
    SampleResult,
    add_sample_arguments,
    require_rows,
    run_sample_cli,
    sample_dataset,
)

__all__ = [
    "FILTERS",
    "FilterConfig",
    "RewardGrader",
    "SampleError",
    "SampleResult",
    "add_sample_arguments",
    "filter_samples",
    "has_code_block",
    "repeated_ngram_ratio",
    "require_rows",
    "run_sample_cli",
    "sample_dataset",
]

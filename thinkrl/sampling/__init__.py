"""``thinkrl sample``: sample, grade and filter (rejection sampling) into a dataset ``thinkrl sft`` trains on."""

from thinkrl.sampling.filters import (
    FILTERS,
    FilterConfig,
    filter_samples,
    has_code_block,
    repeated_ngram_ratio,
)
from thinkrl.sampling.sample import (
    RewardGrader,
    SampleResult,
    add_sample_arguments,
    run_sample_cli,
    sample_dataset,
)

__all__ = [
    "FILTERS",
    "FilterConfig",
    "RewardGrader",
    "SampleResult",
    "add_sample_arguments",
    "filter_samples",
    "has_code_block",
    "repeated_ngram_ratio",
    "run_sample_cli",
    "sample_dataset",
]

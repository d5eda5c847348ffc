"""Evaluation the DeepSeek-R1 way: k samples per problem at temperature 0.6 / top-p 0.95, pass@1 with its
standard error, unbiased pass@k, cons@k (majority vote over verifier-grouped answers), graded by the same
reward code as training.

    from thinkrl.eval import evaluate, load_benchmark
    rows = load_benchmark("math500")
    result = evaluate(model, tokenizer, rows, k=16, out_dir="runs/eval/my-model/math500")
    print(result.table())

- ``runner.py``: :func:`evaluate` (sample, grade, write, score; resumable);
- ``files.py``: the evaluation folder (samples.jsonl, eval_config.json, summary.json);
- ``periodic.py``: evaluation during training; ``cli.py``: ``thinkrl eval``;
- ``benchmarks.py``: benchmark loaders and the grader; ``metrics.py``: pass@k, cons@k, standard errors.
"""

from thinkrl.eval.benchmarks import BENCHMARKS, Grader, load_benchmark, normalize_rows, prepare_rows
from thinkrl.eval.cli import add_eval_arguments, add_sampling_arguments, run_eval_cli, sampling_from_args
from thinkrl.eval.files import CONFIG_FILE, SAMPLES_FILE, SUMMARY_FILE, EvalResumeError
from thinkrl.eval.metrics import (
    binomial_se,
    bootstrap_ci,
    flat_metrics,
    format_table,
    majority_vote,
    pass_at_1,
    pass_at_k,
    standard_error,
    summarize,
)
from thinkrl.eval.periodic import PeriodicEvaluator, eval_sampling, evaluate_during_training
from thinkrl.eval.runner import EvalResult, evaluate

__all__ = [
    "BENCHMARKS",
    "CONFIG_FILE",
    "SAMPLES_FILE",
    "SUMMARY_FILE",
    "EvalResult",
    "EvalResumeError",
    "Grader",
    "PeriodicEvaluator",
    "add_eval_arguments",
    "add_sampling_arguments",
    "binomial_se",
    "bootstrap_ci",
    "eval_sampling",
    "evaluate",
    "evaluate_during_training",
    "flat_metrics",
    "format_table",
    "load_benchmark",
    "majority_vote",
    "normalize_rows",
    "pass_at_1",
    "pass_at_k",
    "prepare_rows",
    "run_eval_cli",
    "sampling_from_args",
    "standard_error",
    "summarize",
]

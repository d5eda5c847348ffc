"""Evaluation the DeepSeek-R1 way: k samples per problem at temperature 0.6 / top-p 0.95, pass@1 with its
standard error, unbiased pass@k, cons@k (majority vote over verifier-grouped answers), graded by the same
reward code as training.

    from thinkrl.eval import evaluate, load_benchmark
    rows = load_benchmark("math500")
    result = evaluate(model, tokenizer, rows, k=16, out_dir="runs/eval/my-model/math500")
    print(result.table())
"""

from thinkrl.eval.benchmarks import BENCHMARKS, Grader, load_benchmark, normalize_rows, prepare_rows
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
from thinkrl.eval.runner import (
    EvalResult,
    EvalResumeError,
    PeriodicEvaluator,
    add_eval_arguments,
    evaluate,
    evaluate_during_training,
    run_eval_cli,
)

__all__ = [
    "BENCHMARKS",
    "EvalResult",
    "EvalResumeError",
    "Grader",
    "PeriodicEvaluator",
    "add_eval_arguments",
    "binomial_se",
    "bootstrap_ci",
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
    "standard_error",
    "summarize",
]

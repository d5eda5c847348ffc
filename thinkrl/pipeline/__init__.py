"""``thinkrl pipeline`` (multi-stage R1 runs: sft -> rl -> sample -> sft -> rl, resumable) and ``thinkrl distill``.

from thinkrl.pipeline import load_pipeline, run_pipeline
run_pipeline(load_pipeline("configs/pipelines/tiny-cpu.yaml"))
"""

from thinkrl.pipeline.config import (
    KINDS,
    OUTPUTS,
    EvalStageConfig,
    Pipeline,
    SampleStageConfig,
    Stage,
    build_pipeline,
    load_pipeline,
)
from thinkrl.pipeline.distill import add_distill_arguments, distill_pipeline, run_distill_cli
from thinkrl.pipeline.runner import (
    PipelineError,
    StageRecord,
    add_pipeline_arguments,
    format_summary,
    run_pipeline,
    run_pipeline_cli,
)
from thinkrl.pipeline.stages import export_model, run_stage

__all__ = [
    "KINDS",
    "OUTPUTS",
    "EvalStageConfig",
    "Pipeline",
    "PipelineError",
    "SampleStageConfig",
    "Stage",
    "StageRecord",
    "add_distill_arguments",
    "add_pipeline_arguments",
    "build_pipeline",
    "distill_pipeline",
    "export_model",
    "format_summary",
    "load_pipeline",
    "run_distill_cli",
    "run_pipeline",
    "run_pipeline_cli",
    "run_stage",
]

"""The ``thinkrl sft`` config tree: model, data, train, log; YAML + ``key=value`` overrides, like ``thinkrl train``.

    cfg = load_sft_config("configs/sft.yaml", ["data.train=runs/sample/sft.jsonl", "train.epochs=2"])

``model`` and ``log`` are the RL config's own sections (same fields, same meaning); parsing and merging is
OmegaConf's, validation reuses :func:`thinkrl.config.check` and :class:`~thinkrl.config.ConfigError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from thinkrl.config import (
    ConfigError,
    LogConfig,
    ModelConfig,
    check,
    check_model_dtype,
    check_train_fields,
    load_structured,
)

BATCHING = ("packed", "grouped", "padded")
DATA_FORMATS = ("auto", "prompt_response", "messages")


@dataclass
class SFTDataConfig:
    train: str = ""
    """Training rows: a .jsonl/.json/.parquet/.csv file, a folder, a ``datasets`` folder or a hub name (as
    ``data.train`` of ``thinkrl train``). ``thinkrl sample`` writes ``OUT/sft.jsonl`` in this form."""
    eval: str | None = None
    """Held-out rows in the same form; their mean response loss is logged every ``train.eval_every`` steps."""
    split: str = "train"
    """Split to read when ``train`` is a ``datasets`` folder or hub name."""
    format: str = "auto"
    """``prompt_response`` (a prompt column and a response column), ``messages`` (a chat-message list, loss on
    every assistant turn) or ``auto`` (``messages`` when that column exists, else ``prompt_response``)."""
    prompt_key: str = "prompt"
    """Column holding the prompt (or the bare question, with ``template`` r1/chat/plain)."""
    response_key: str = "response"
    """Column holding the target response; it is trained on, followed by the tokenizer's EOS."""
    messages_key: str = "messages"
    """Column holding ``[{"role": ..., "content": ...}, ...]`` for ``format=messages``."""
    template: str = "none"
    """How the prompt column becomes the prompt text: ``none`` (verbatim: it is already rendered, as in
    ``thinkrl sample`` output), ``r1`` (the R1-Zero template around a question: cold start), ``chat`` (the
    tokenizer's chat template: distillation into a chat model), ``plain``, or a string with ``{question}``."""
    system_prompt: str | None = None
    """System message for ``template=chat`` (messages rows carry their own)."""
    max_rows: int | None = None
    """Use only the first N rows."""


@dataclass
class SFTTrainConfig:
    epochs: int = 1
    """Passes over the training rows (reshuffled, and re-packed, every epoch)."""
    max_steps: int = 0
    """Stop after this many optimizer steps; 0 = run ``epochs`` full passes."""
    lr: float = 1e-5
    """AdamW learning rate (R1's SFT stages are not published; 1e-5 is common for 1-8B models, tiny ones need
    ~1e-3)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    """AdamW betas."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this; <= 0 disables."""
    warmup_steps: int = 0
    """Linear warm-up of the learning rate over this many optimizer steps."""
    lr_schedule: str = "cosine"
    """``constant`` or ``cosine`` (to 10% of lr) after warm-up."""
    max_seq_len: int = 2048
    """Most tokens of one sample (prompt + response + EOS) and of one packed row. Longer samples are dropped
    (counted in the log), never cut: a cut response would teach the model to stop mid-thought."""
    batching: str = "packed"
    """``packed``: several samples per row, positions restarting and attention blocked at sample borders (no
    padding compute); ``grouped``: one sample per row, rows of similar length batched together; ``padded``: one
    sample per row, random order."""
    micro_batch_size: int = 4
    """Rows per forward/backward (a packed row holds several samples). Memory knob only."""
    grad_accum_steps: int = 1
    """Micro-batches per optimizer step. The loss is the mean over every response token of the step, so the
    update does not depend on how the step is cut into micro-batches."""
    seed: int = 0
    """Seeds data order and initialisation; with it a run is reproducible."""
    output_dir: str = "runs/sft"
    """Run directory: config.yaml, metrics.jsonl, checkpoints/ (same layout as ``thinkrl train``)."""
    save_every: int = 0
    """Checkpoint every N optimizer steps (and at the end); 0 = only at the end."""
    keep_last: int = 2
    """Keep the last K checkpoints."""
    resume: bool = False
    """Continue from the latest checkpoint in output_dir (same data order, optimizer and RNG states)."""
    overwrite: bool = False
    """A fresh run into an output_dir that holds a run (``--overwrite``) first moves that run to
    ``OUTPUT_DIR.old-N``; without it such a run is refused. Nothing is ever deleted."""
    resume_force: bool = False
    """Resume from a checkpoint of another run or written with another config (e.g. a new lr after a
    divergence); the differences are printed. Off: such a resume is refused, naming them."""
    eval_every: int = 0
    """Log the mean response loss on ``data.eval`` every N steps (and at the end); 0 disables."""
    log_every: int = 1
    """Write a metrics record every N steps."""
    device: str = "auto"
    """``auto`` (cuda if present, else cpu), ``cpu`` or ``cuda``."""
    num_threads: int | None = None
    """torch intra-op threads on CPU; None keeps torch's default."""


@dataclass
class SFTConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: SFTDataConfig = field(default_factory=SFTDataConfig)
    train: SFTTrainConfig = field(default_factory=SFTTrainConfig)
    log: LogConfig = field(default_factory=LogConfig)


def load_sft_config(path: str | Path | None = None, overrides: list[str] | None = None) -> SFTConfig:
    """Defaults <- YAML file <- ``key=value`` overrides, then :func:`validate_sft`.

    >>> cfg = load_sft_config(None, ["data.train=x.jsonl", "train.batching=grouped"])
    >>> cfg.train.batching, cfg.train.max_seq_len
    ('grouped', 2048)
    """
    cfg = load_structured(SFTConfig, path, overrides)
    validate_sft(cfg)
    return cfg


def validate_sft(cfg: SFTConfig) -> None:
    """Reject bad values at start, with a message naming the field and the fix."""
    from thinkrl.data.templates import check_template

    d, t = cfg.data, cfg.train
    check(d.format in DATA_FORMATS, f"data.format={d.format!r}; valid: {', '.join(DATA_FORMATS)}")
    if d.template != "none":
        try:
            check_template(d.template)
        except ValueError as e:
            raise ConfigError(
                f"data.template: {e} (or `none` for prompts that are already rendered)"
            ) from None
    check(t.batching in BATCHING, f"train.batching={t.batching!r}; valid: {', '.join(BATCHING)}")
    check(t.epochs >= 1, f"train.epochs={t.epochs} must be >= 1")
    check_train_fields(t)
    check(t.max_steps >= 0, "train.max_steps must be >= 0 (0 = run train.epochs full passes)")
    check(t.max_seq_len >= 2, f"train.max_seq_len={t.max_seq_len} must be >= 2")
    check(t.grad_accum_steps >= 1, "train.grad_accum_steps must be >= 1")
    check(t.save_every >= 0 and t.eval_every >= 0, "train.save_every and train.eval_every must be >= 0")
    check(t.log_every >= 1, "train.log_every must be >= 1")
    check(
        getattr(cfg.model, "lora_r", 0) == 0,
        "model.lora_r > 0: thinkrl sft trains every weight and does not build LoRA adapters yet; set model.lora_r=0",
    )
    check_model_dtype(cfg.model)

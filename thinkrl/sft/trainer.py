"""Supervised fine-tuning: the cold start and the distillation step of the DeepSeek-R1 pipeline.

One optimizer step, top to bottom:

    grad_accum_steps micro-batches (packed rows) -> forward -> log p(response tokens) -> sum / tokens of the step
        -> backward -> clip -> AdamW -> metrics

    trainer = SFTTrainer(load_sft_config(None, ["model.path=demo", "data.train=runs/sample/sft.jsonl"]))
    trainer.train()

The loss is the mean negative log-likelihood over every response token of the optimizer step (prompt tokens
are masked out), so micro-batching and packing do not change the update. Checkpoints, resume and metrics are
``thinkrl train``'s own (:mod:`thinkrl.train.checkpoint`, :class:`~thinkrl.train.logging.MetricsLogger`): a
checkpoint folder loads with ``AutoModelForCausalLM.from_pretrained`` and can seed an RL run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from thinkrl.algorithms.logprobs import token_logprobs
from thinkrl.config import save_config
from thinkrl.core import disable_dropout, resolve_device, seed_everything
from thinkrl.sft.config import SFTConfig
from thinkrl.sft.data import SFTExample, build_examples, collate, load_sft_rows, plan_epoch, steps_in
from thinkrl.train.checkpoint import (
    latest_checkpoint,
    load_model_weights,
    load_trainer_state,
    save_checkpoint,
    set_rng_state,
)
from thinkrl.train.logging import MetricsLogger
from thinkrl.train.setup import load_policy, lr_lambda


def response_nll(
    logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed negative log-likelihood of the target tokens and their count (0-dim tensors).

    ``logits`` (B, T, V), ``input_ids`` (B, T), ``loss_mask`` (B, T) bool: True where token t is a target.
    Logits at t predict token t+1; positions whose next token is not a target contribute exactly 0.

    >>> nll, n = response_nll(torch.zeros(1, 3, 4), torch.tensor([[0, 1, 2]]), torch.tensor([[False, False, True]]))
    >>> round(nll.item(), 4), n.item()   # one target under a uniform 4-way prediction: ln 4
    (1.3863, 1.0)
    """
    logp = token_logprobs(logits[:, :-1], input_ids[:, 1:])  # (B, T-1): token t+1 given tokens <= t
    mask = loss_mask[:, 1:].to(logp.dtype)  # (B, T-1)
    return -(logp * mask).sum(), mask.sum()


class SFTTrainer:
    """SFT for any Hugging Face causal LM. Everything not passed in is built from ``cfg``.

    Args:
        cfg: the resolved config (:func:`thinkrl.sft.config.load_sft_config`).
        model, tokenizer: an already loaded model and its tokenizer (else loaded from ``cfg.model``).
        train_rows, eval_rows: raw rows (prompt/response or messages; else read from ``cfg.data``).
    """

    def __init__(
        self,
        cfg: SFTConfig,
        *,
        model: torch.nn.Module | None = None,
        tokenizer: Any = None,
        train_rows: list[dict[str, Any]] | None = None,
        eval_rows: list[dict[str, Any]] | None = None,
    ):
        self.cfg = cfg
        t, d = cfg.train, cfg.data
        seed_everything(t.seed)
        if t.num_threads:
            torch.set_num_threads(t.num_threads)
        self.device = resolve_device(t.device)
        if model is None:
            model, tokenizer = load_policy(cfg.model)
        if tokenizer is None:
            raise ValueError("SFTTrainer got a model but no tokenizer; pass tokenizer=...")
        self.model, self.tokenizer = model.to(self.device), tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if cfg.model.disable_dropout:
            disable_dropout(self.model)
        if cfg.model.gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        self.model.train()
        attn = getattr(self.model.config, "_attn_implementation", None) or cfg.model.attn_implementation or ""
        # flash attention finds sample borders from the restarting position ids; the others need the 4D mask
        self.mask_kind = "none" if "flash" in attn else "4d"

        if train_rows is None:
            train_rows = load_sft_rows(d.train, d.split, d.max_rows)
        self.examples, self.dropped = build_examples(train_rows, tokenizer, d, t.max_seq_len)
        self.lengths = [len(e) for e in self.examples]
        if eval_rows is None and d.eval:
            eval_rows = load_sft_rows(d.eval, "test")
        self.eval_examples = build_examples(eval_rows, tokenizer, d, t.max_seq_len)[0] if eval_rows else []

        self._plans: dict[int, list[list[list[int]]]] = {}
        epoch_steps = [steps_in(len(self._plan(e)), t.grad_accum_steps) for e in range(t.epochs)]
        self.total_steps = min(t.max_steps, sum(epoch_steps)) if t.max_steps else sum(epoch_steps)

        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=t.lr, betas=tuple(t.adam_betas), weight_decay=t.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(t.warmup_steps, self.total_steps, t.lr_schedule)
        )
        self.step, self.epoch, self.pos = 0, 0, 0  # pos: next micro-batch of the epoch's plan
        self.run_dir = Path(t.output_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if t.resume:
            self._resume()
        save_config(cfg, self.run_dir / "config.yaml")
        self.logger = MetricsLogger(self.run_dir, cfg.log, cfg, resume_step=self.step)  # type: ignore[arg-type]

    # ------------------------------------------------------------------------------------------- data
    def _plan(self, epoch: int) -> list[list[list[int]]]:
        if epoch not in self._plans:
            t = self.cfg.train
            self._plans[epoch] = plan_epoch(
                self.lengths, t.batching, t.micro_batch_size, t.max_seq_len, t.seed * 1_000_003 + epoch
            )
        return self._plans[epoch]

    def _next_micro_batches(self) -> list[list[list[int]]]:
        """The next optimizer step's micro-batches; a step never spans two epochs (the last one may be short)."""
        plan = self._plan(self.epoch)
        if self.pos >= len(plan):
            self.epoch, self.pos = self.epoch + 1, 0
            plan = self._plan(self.epoch)
        take = plan[self.pos : self.pos + self.cfg.train.grad_accum_steps]
        self.pos += len(take)
        return take

    def _tensors(self, examples: list[SFTExample], rows: list[list[int]]) -> dict[str, torch.Tensor]:
        dtype = next(self.model.parameters()).dtype
        batch = collate(examples, rows, self.pad_id, dtype=dtype, mask_kind=self.mask_kind)
        return {k: v.to(self.device) for k, v in batch.items()}

    # ------------------------------------------------------------------------------------------- step
    def forward_nll(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward one collated micro-batch; :func:`response_nll` of its logits."""
        kwargs = {k: batch[k] for k in ("input_ids", "position_ids", "attention_mask") if k in batch}
        return response_nll(self.model(**kwargs).logits, batch["input_ids"], batch["loss_mask"])

    def train_step(self) -> dict[str, float]:
        t = self.cfg.train
        start = time.perf_counter()
        micro_batches = self._next_micro_batches()
        # normaliser of the whole step, so accumulation over micro-batches equals one big batch
        num_tokens = sum(
            self.examples[i].loss_mask[1:].count(True) for mb in micro_batches for row in mb for i in row
        )
        num_tokens = max(num_tokens, 1)
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=self.device)
        seen = slots = samples = 0
        for mb in micro_batches:
            batch = self._tensors(self.examples, mb)
            nll, _ = self.forward_nll(batch)
            (nll / num_tokens).backward()
            loss_sum = loss_sum + nll.detach()
            seen += sum(len(self.examples[i]) for row in mb for i in row)
            slots += batch["input_ids"].numel()
            samples += sum(len(row) for row in mb)
        if t.max_grad_norm > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.max_grad_norm)
        else:
            grad_norm = torch.stack(
                [p.grad.norm() for p in self.model.parameters() if p.grad is not None]
            ).norm()
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        # one host sync per step
        loss, grad_norm = torch.stack([loss_sum / num_tokens, grad_norm.detach().float()]).tolist()
        elapsed = time.perf_counter() - start
        return {
            "train/loss": loss,
            "train/grad_norm": grad_norm,
            "lr": lr,
            "epoch": self.epoch + self.pos / max(len(self._plan(self.epoch)), 1),
            "samples": float(samples),
            "tokens/response": float(num_tokens),
            "tokens/fill": seen / max(slots, 1),  # share of the batch that is real tokens, not padding
            "throughput/tokens_per_s": seen / elapsed,
            "time/step": elapsed,
        }

    @torch.no_grad()
    def eval_loss(self, rows_per_batch: int | None = None) -> float:
        """Mean response NLL per token over the eval examples (one sample per row, length-sorted batches)."""
        if not self.eval_examples:
            return float("nan")
        size = rows_per_batch or self.cfg.train.micro_batch_size
        order = sorted(range(len(self.eval_examples)), key=lambda i: len(self.eval_examples[i]))
        was_training = self.model.training
        self.model.eval()
        total, count = torch.zeros(()), torch.zeros(())
        for s in range(0, len(order), size):
            nll, n = self.forward_nll(self._tensors(self.eval_examples, [[i] for i in order[s : s + size]]))
            total, count = total + nll.float().cpu(), count + n.float().cpu()
        self.model.train(was_training)
        return float(total / count.clamp(min=1))

    # ------------------------------------------------------------------------------------------- loop
    def train(self) -> list[dict[str, float]]:
        """Run to ``total_steps`` (from the resumed step), checkpointing as configured. Returns the metrics."""
        t = self.cfg.train
        history: list[dict[str, float]] = []
        progress = None
        if self.cfg.log.progress:
            from tqdm.auto import tqdm

            progress = tqdm(total=self.total_steps, initial=self.step, desc="sft", dynamic_ncols=True)
        if self.step == 0 and self.dropped:
            print(f"sft: dropped {self.dropped} samples longer than train.max_seq_len={t.max_seq_len}")
        while self.step < self.total_steps:
            metrics = self.train_step()
            last = self.step == self.total_steps
            if t.eval_every and self.eval_examples and (self.step % t.eval_every == 0 or last):
                metrics["eval/loss"] = self.eval_loss()
            if self.step == 1:
                metrics["data/dropped_too_long"] = float(self.dropped)
            if self.step % t.log_every == 0 or last:
                self.logger.log(self.step, metrics)
            history.append({"step": self.step, **metrics})
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{metrics['train/loss']:.4f}", epoch=f"{metrics['epoch']:.2f}")
            if (t.save_every and self.step % t.save_every == 0) or last:
                self.save()
        if progress is not None:
            progress.close()
        self.logger.close()
        return history

    # ----------------------------------------------------------------------------------- checkpoint/resume
    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "data_epoch": self.epoch,
            "data_pos": self.pos,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }

    def save(self) -> Path:
        return save_checkpoint(
            self.run_dir,
            self.step,
            self.model,
            self.tokenizer,
            self.state_dict(),
            keep_last=self.cfg.train.keep_last,
        )

    def _resume(self) -> None:
        path = latest_checkpoint(self.run_dir)
        if path is None:
            return  # nothing saved yet: a fresh start, which resume=true also allows
        load_model_weights(self.model, path)
        state = load_trainer_state(path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.epoch, self.pos = state["step"], state["data_epoch"], state["data_pos"]
        set_rng_state(state["rng"])


# ---------------------------------------------------------------------------------------------------- CLI
def add_sft_arguments(parser: Any) -> None:
    """``thinkrl sft [CONFIG.yaml] [key=value ...] [--resume]``: the same shape as ``thinkrl train``."""
    parser.add_argument("config", nargs="?", help="YAML config file; omit to start from the defaults")
    parser.add_argument(
        "overrides", nargs="*", help="key=value overrides, e.g. data.train=runs/sample/sft.jsonl"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from the latest checkpoint in train.output_dir"
    )


def run_sft_cli(args: Any) -> int:
    """Run ``thinkrl sft`` from parsed :func:`add_sft_arguments` args; prints the last loss and the run dir."""
    from thinkrl.sft.config import load_sft_config

    path, overrides = args.config, list(args.overrides)
    if path is not None and "=" in path:  # `thinkrl sft a=b` without a YAML file
        path, overrides = None, [path, *overrides]
    if args.resume:
        overrides.append("train.resume=true")
    trainer = SFTTrainer(load_sft_config(path, overrides))
    history = trainer.train()
    if history:
        print(f"final step {history[-1]['step']} train/loss={history[-1]['train/loss']:.4f}")
    print(f"run directory: {trainer.run_dir}")
    return 0

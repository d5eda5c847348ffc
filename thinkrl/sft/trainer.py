"""Supervised fine-tuning: the cold start and the distillation step of the DeepSeek-R1 pipeline.

One optimizer step, top to bottom:

    grad_accum_steps micro-batches (packed rows) -> forward -> log p(response tokens) -> sum / tokens of the step
        -> backward -> clip -> AdamW -> metrics

    trainer = SFTTrainer(load_sft_config(None, ["model.path=demo", "data.train=runs/sample/sft.jsonl"]))
    trainer.train()

The loss is the mean negative log-likelihood over every response token of the optimizer step (prompt tokens
are masked out), so micro-batching and packing do not change the update. The loop, checkpoints, resume, the
optimizer and the metrics are ``thinkrl train``'s own (:class:`~thinkrl.train.loop.TrainingLoop`,
:func:`~thinkrl.train.setup.build_optimizer`): a checkpoint folder loads with
``AutoModelForCausalLM.from_pretrained`` and can seed an RL run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from thinkrl.algorithms import token_logprobs
from thinkrl.core import check_positions, resolve_device, seed_everything
from thinkrl.sft.config import SFTConfig
from thinkrl.sft.data import SFTExample, build_examples, collate, load_sft_rows, plan_epoch, steps_in
from thinkrl.train.loop import TrainingLoop
from thinkrl.train.parallel import SingleProcess
from thinkrl.train.runs import add_run_flags, check_run_dir, run_flags
from thinkrl.train.setup import build_optimizer, build_scheduler, load_policy, prepare_policy


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


class SFTTrainer(TrainingLoop):
    """SFT for any Hugging Face causal LM. Everything not passed in is built from ``cfg``.

    Args:
        cfg: the resolved config (:func:`thinkrl.sft.config.load_sft_config`).
        model, tokenizer: an already loaded model and its tokenizer (else loaded from ``cfg.model``).
        train_rows, eval_rows: raw rows (prompt/response or messages; else read from ``cfg.data``).
    """

    progress_name = "sft"

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
        # on the device, dropout off, activation checkpointing as configured, a pad token (the EOS when none)
        self.model, self.tokenizer = prepare_policy(model, tokenizer, cfg.model, self.device), tokenizer
        self.pad_id = tokenizer.pad_token_id
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
        # packed samples restart their positions: the longest sample (held-out ones too) is what must fit
        longest = max(self.lengths + [len(e) for e in self.eval_examples], default=0)
        if longest:
            check_positions(self.model, longest, 0, "train.max_seq_len", item="sample")

        self._plans: dict[int, list[list[list[int]]]] = {}
        epoch_steps = [steps_in(len(self._plan(e)), t.grad_accum_steps) for e in range(t.epochs)]
        self._total_steps = min(t.max_steps, sum(epoch_steps)) if t.max_steps else sum(epoch_steps)

        self.optimizer = build_optimizer(list(self.model.parameters()), t)
        self.scheduler = build_scheduler(self.optimizer, t, self.total_steps)
        self.parallel = SingleProcess()
        self.log_every = t.log_every
        self.step, self.epoch, self.pos = 0, 0, 0  # pos: next micro-batch of the epoch's plan
        self.run_dir = Path(t.output_dir)
        self.start_run()

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
        grad_norm = self.parallel.clip_grad_norm(list(self.model.parameters()), t.max_grad_norm)
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

    # ------------------------------------------------------------------------------------ the loop's hooks
    @property
    def total_steps(self) -> int:
        return self._total_steps

    def before_loop(self) -> None:
        if self.step == 0 and self.dropped:
            print(
                f"sft: dropped {self.dropped} samples longer than train.max_seq_len={self.cfg.train.max_seq_len}"
            )

    def after_step(self, last: bool) -> dict[str, float]:
        t, out = self.cfg.train, {}
        if t.eval_every and self.eval_examples and (self.step % t.eval_every == 0 or last):
            out["eval/loss"] = self.eval_loss()
        if self.step == 1:
            out["data/dropped_too_long"] = float(self.dropped)
        return out

    def postfix(self, metrics: dict[str, float]) -> dict[str, str]:
        return {"loss": f"{metrics['train/loss']:.4f}", "epoch": f"{metrics['epoch']:.2f}"}

    def data_position(self) -> tuple[int, int]:
        return self.epoch, self.pos

    def seek_data(self, epoch: int, pos: int) -> None:
        self.epoch, self.pos = epoch, pos


# ---------------------------------------------------------------------------------------------------- CLI
def add_sft_arguments(parser: Any) -> None:
    """``thinkrl sft [CONFIG.yaml] [key=value ...] [--resume | --overwrite]``: the same shape as ``thinkrl train``."""
    parser.add_argument("config", nargs="?", help="YAML config file; omit to start from the defaults")
    parser.add_argument(
        "overrides", nargs="*", help="key=value overrides, e.g. data.train=runs/sample/sft.jsonl"
    )
    add_run_flags(parser)


def run_sft_cli(args: Any) -> int:
    """Run ``thinkrl sft`` from parsed :func:`add_sft_arguments` args; prints the last loss and the run dir."""
    from thinkrl.sft.config import load_sft_config

    path, overrides = args.config, list(args.overrides)
    if path is not None and "=" in path:  # `thinkrl sft a=b` without a YAML file
        path, overrides = None, [path, *overrides]
    cfg = load_sft_config(path, [*overrides, *run_flags(args)])
    check_run_dir(cfg.train)  # before a model loads
    trainer = SFTTrainer(cfg)
    history = trainer.train()
    if history:
        print(f"final step {history[-1]['step']} train/loss={history[-1]['train/loss']:.4f}")
    print(f"run directory: {trainer.run_dir}")
    return 0

"""Where metrics go: metrics.jsonl always; TensorBoard and Weights & Biases when asked for."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from thinkrl.analysis.jsonl import read_jsonl
from thinkrl.config import Config, LogConfig


class MetricsLogger:
    """Append one JSON object per step to ``RUN/metrics.jsonl`` (and mirror to TB / W&B if enabled)."""

    def __init__(
        self, run_dir: str | Path, log_cfg: LogConfig, cfg: Config | None = None, *, resume_step: int = 0
    ):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():  # on resume, drop records of steps after the checkpoint (they will be redone)
            kept = [
                r for r in read_jsonl(self.path) if r.get("step", 0) <= resume_step
            ]  # a torn tail is dropped
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self._tb = self._wandb = None
        if log_cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ImportError("log.tensorboard=true needs `pip install thinkrl[tensorboard]`") from e
            self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
        if log_cfg.wandb:
            try:
                import wandb
            except ImportError as e:
                raise ImportError("log.wandb=true needs `pip install thinkrl[wandb]`") from e
            from omegaconf import OmegaConf

            config = OmegaConf.to_container(OmegaConf.structured(cfg)) if cfg is not None else None
            self._wandb = wandb.init(project=log_cfg.wandb_project, dir=str(run_dir), config=config)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        record = {"step": step, "time": round(time.time(), 3), **{k: _clean(v) for k, v in metrics.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        numeric = {
            k: v for k, v in record.items() if isinstance(v, (int, float)) and k not in ("step", "time")
        }
        if self._tb is not None:
            for k, v in numeric.items():
                self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log(numeric, step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v

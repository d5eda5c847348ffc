"""RL training: the GRPO trainer and what it is made of.

- ``trainer.py``: ``GRPOTrainer``, whose ``train_step`` reads like the paper's inner loop;
- ``learner.py``: advantages -> old/reference log-probs -> epochs x minibatches -> optimizer;
- ``parallel.py``: the parallel edge (one process, data parallel, FSDP), on ``distributed.py`` and ``fsdp.py``;
- ``loop.py``: the outer loop and checkpoint save/resume GRPO and SFT share; ``checkpoint.py``: the files;
- ``batch.py``: trajectories -> training tensors, log-probs under a model; ``metrics.py``, ``logging.py``;
- ``setup.py``: the policy, rewards, rows, optimizer and schedule from a config; ``checks.py``: registry names.
"""

from thinkrl.train.trainer import GRPOTrainer

__all__ = ["GRPOTrainer"]

"""thinkrl: reinforcement learning for reasoning, the DeepSeek-R1 way."""

__version__ = "0.1.0"

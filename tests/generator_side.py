"""What the asynchronous tests' generator process imports by name (rewards and engine builders are pickled by
reference). Kept out of conftest.py on purpose: in the whole suite tests/vllm_engine/conftest.py takes the name
``conftest`` in ``sys.modules``, so ``conftest.some_function`` cannot be found by pickle there."""

from __future__ import annotations

ASYNC = ["asynchronous.generator_threads=1", "train.num_threads=1", "algorithm.tis_cap=2.0"]


def digit_share(prompts, completions, answer, **kw):
    """The toy task's reward (as conftest's ``copy_digit``): the share of the 4 completion characters that repeat
    the prompt's digit."""
    return [sum(ch == a for ch in c) / 4 for c, a in zip(completions, answer)]


def broken_engine(cfg, model, tokenizer):
    """The built-in engine in the learner (its evaluation engine); fails in the generator process."""
    import multiprocessing

    from thinkrl.rollout import ENGINES

    if multiprocessing.parent_process() is not None:
        raise RuntimeError("this engine cannot start here")
    return ENGINES["builtin"](cfg, model, tokenizer)

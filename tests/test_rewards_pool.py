"""The reward pool: same results as a serial call, and a hung chunk does not stop the call."""

from __future__ import annotations

import time

from thinkrl.rewards.pool import RewardPool  # light imports only: worker processes import this module


def slow_reward(prompts, completions, **kw):
    """Hangs on rows saying 'hang' (module level, so worker processes can import it)."""
    if any(c == "hang" for c in completions):
        time.sleep(60)
    return [float(len(c)) for c in completions]


def test_pool_is_deterministic_and_survives_a_hang() -> None:
    from thinkrl.rewards import get_reward

    comps = [f"<think>{i}</think><answer>{i}</answer>" if i % 3 else "bad" for i in range(10)]
    serial = get_reward("format")(["q"] * 10, comps)
    with RewardPool(num_workers=2, timeout_s=60, chunk_size=3) as pool:
        fmt = pool.wrap("format")
        assert fmt(["q"] * 10, comps) == serial == fmt(["q"] * 10, comps)
        assert fmt.__name__ == "format"
        assert pool.run(slow_reward, ["q"] * 4, ["a", "bb", "ccc", "dddd"]) == [1.0, 2.0, 3.0, 4.0]  # warm up
        pool.timeout_s, pool.chunk_size = 3, 1
        t = time.monotonic()
        assert pool.run(slow_reward, ["q"] * 3, ["a", "hang", "ccc"]) == [1.0, 0.0, 3.0]
        assert time.monotonic() - t < 15 and pool.stats["chunk_timeouts"] == 1
        pool.timeout_s = 60
        assert pool.run(slow_reward, ["q"] * 2, ["a", "bb"]) == [1.0, 2.0]  # rebuilt after the hang

"""Run an evaluation: sample k completions per problem, grade them with the training rewards, write and score.

Files in ``out_dir``:

- ``samples.jsonl``: one line per completion (``id``, ``sample_idx``, ``completion``, ``extracted``,
  ``correct``, ``length``, ``finish_reason``, ``format_ok``, ``qhash``), appended after every batch of problems.
  A rerun reads it back and generates only what is missing, so an interrupted eval resumes where it stopped,
  and a rerun with other ``pass_ks`` / ``cons_k`` or a smaller ``k`` generates nothing.
- ``eval_config.json``: the sampling settings the samples were drawn with; a rerun with different ones stops
  with a message instead of mixing samples from two distributions.
- ``summary.json``: the metrics (see :func:`thinkrl.eval.metrics.summarize`).

Determinism: problems are cut into fixed batches of ``batch_size`` by position and batch b's call is seeded
with a hash of (seed, b, first sample index). The engine's random stream depends only on that seed and the
row position, so a resumed run draws exactly what the uninterrupted run would have.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thinkrl.config import EvalSampling, check_eval_sampling
from thinkrl.core import check_positions, load_model_and_tokenizer, prompt_token_ids, weights_fingerprint
from thinkrl.data.templates import render_prompt
from thinkrl.eval import files
from thinkrl.eval.benchmarks import Grader, prepare_rows
from thinkrl.eval.files import SAMPLES_FILE, SUMMARY_FILE
from thinkrl.eval.metrics import format_table, summarize
from thinkrl.eval.tools import describe_environment, tool_pool, tool_record, tool_summary
from thinkrl.rollout import HFEngine, generate_episodes, is_multi_turn
from thinkrl.rollout.base import SamplingParams


@dataclass
class EvalResult:
    """What :func:`evaluate` returns."""

    summary: dict[str, Any]
    """Everything in summary.json: ``metrics``, ``by_level`` / ``by_subject``, ``per_problem``, settings."""
    samples: list[dict[str, Any]]
    """The per-sample records of the evaluated problems, in row order then sample index."""
    out_dir: Path | None
    """Where samples.jsonl and summary.json were written (None: nothing written)."""

    @property
    def metrics(self) -> dict[str, Any]:
        """The headline metrics (``pass@1``, ``pass@1_se``, ``pass@k``, ``cons@k``, lengths, rates)."""
        return self.summary["metrics"]

    def table(self) -> str:
        """The printable table of the summary."""
        return format_table(self.summary)


def evaluate(
    model_or_engine: Any,
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    sampling: EvalSampling | None = None,
    *,
    out_dir: str | Path | None = None,
    grader: Grader | None = None,
    pass_ks: Sequence[int] | None = None,
    cons_k: int | None = None,
    regrade: bool = False,
    progress: bool = True,
    name: str | None = None,
    env: Any = None,
    **settings: Any,
) -> EvalResult:
    """Evaluate a model on ``rows`` (from :func:`thinkrl.eval.load_benchmark`) with the R1 protocol.

    Args:
        model_or_engine: a ``RolloutEngine`` (has ``generate(prompt_ids, SamplingParams)``), a ``transformers``
            causal LM (wrapped in ``HFEngine``), or a model path (loaded with its tokenizer).
        tokenizer: renders and tokenizes the prompts; None only with a model path.
        sampling: how to sample (:class:`~thinkrl.config.EvalSampling`: k, temperature, top_p, top_k,
            max_new_tokens, template, system_prompt, stop_strings, seed, batch_size; the R1 protocol by
            default); ``settings`` override its fields by name, e.g. ``k=4, temperature=0`` (greedy: 1 sample).
        out_dir: where samples.jsonl / summary.json go; a rerun resumes from it. None keeps all in memory.
        grader: a :class:`Grader` (default ``Grader()``); anything with ``grade`` and ``equivalent`` works.
        pass_ks: k of pass@k (default powers of two up to k, and k); cons_k: votes in cons@k (default k).
        regrade: grade the stored completions again (after a grader change) instead of trusting ``correct``.
        progress: show a progress bar (problems done, samples/s, ETA).
        name: the benchmark name in the summary (default: the rows' ``benchmark``).
        env: a multi-turn environment (``thinkrl.rollout.python_tool.PythonTool``): the model may call the tool
            while it answers (pass@1 with tools); each sample records ``tool_calls``, ``tool_errors`` and
            ``turns``, and the summary their means. None: one completion per sample (the R1 protocol).

    >>> from thinkrl.testing import char_tokenizer, tiny_model
    >>> tok = char_tokenizer()
    >>> rows = [{"id": "a", "question": "1+1", "answer": "2"}]
    >>> result = evaluate(tiny_model("llama", len(tok)), tok, rows, k=2, max_new_tokens=4, template="plain",
    ...                   progress=False)
    >>> result.metrics["pass@1"], len(result.samples)
    (0.0, 2)
    """
    try:
        s = dataclasses.replace(sampling or EvalSampling(), **settings)
    except TypeError:
        valid = ", ".join(f.name for f in dataclasses.fields(EvalSampling))
        raise TypeError(
            f"evaluate() got an unknown setting among {sorted(settings)}; valid: {valid}"
        ) from None
    k, temperature, top_p, top_k = s.k, s.temperature, s.top_p, s.top_k
    max_new_tokens, template, system_prompt, seed, batch_size = (
        s.max_new_tokens, s.template, s.system_prompt, s.seed, s.batch_size,
    )  # fmt: skip
    try:
        check_eval_sampling(s)
    except ValueError as e:
        raise ValueError(f"evaluate: {e}") from None
    if max_new_tokens is None or template is None:
        raise ValueError("evaluate: max_new_tokens and template must be set (e.g. 1024 and 'r1')")
    if not rows:
        raise ValueError("no rows to evaluate; check --data and --limit")
    rows = prepare_rows(rows)
    engine, tokenizer, model_name = _as_engine(model_or_engine, tokenizer, seed)
    grader = grader or Grader()
    n = 1 if temperature == 0 else k  # greedy samples are all the same completion
    stops = (
        list(s.stop_strings)
        if s.stop_strings is not None
        else (["</answer>"] if template in ("r1", "r1_tools") else [])
    )
    tools = env is not None and is_multi_turn(env)
    name = name or str(rows[0].get("benchmark", "eval"))
    recorded = {  # eval_config.json: a rerun with other values refuses to mix the two
        "template": template,
        "system_prompt": system_prompt,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "max_new_tokens": max_new_tokens,
        "stop_strings": stops,
        "seed": seed,
        "batch_size": batch_size,
        # samples drawn with a tool never mix with samples drawn without one (None: the single-turn protocol)
        "environment": describe_environment(env) if tools else None,
    }
    prompts = [render_prompt(template, r["question"], tokenizer, system=system_prompt) for r in rows]
    prompt_ids = prompt_token_ids(tokenizer, prompts, template)
    check_positions(
        getattr(engine, "model", None), max(map(len, prompt_ids)), max_new_tokens, "max_new_tokens"
    )
    qhash = [hashlib.sha1(p.encode()).hexdigest()[:12] for p in prompts]
    ahash = [hashlib.sha1(str(r["answer"]).encode()).hexdigest()[:12] for r in rows]
    identity = model_identity(engine, model_name)

    out = Path(out_dir) if out_dir is not None else None
    done: dict[tuple[str, int], dict[str, Any]] = {}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        files.check_settings(out, {**identity, **recorded})  # samples of another model or sampling: refused
        done = files.load_samples(out / SAMPLES_FILE)
        files.check_prompts(done, rows, qhash, out, ahash if not regrade else None)
        if regrade and done:
            _regrade(done, rows, grader, {r["id"]: p for r, p in zip(rows, prompts)})
            ahash_of = {r["id"]: h for r, h in zip(rows, ahash)}
            for rec in done.values():  # graded against these answers now
                rec["ahash"] = ahash_of.get(rec["id"], rec.get("ahash"))
            files.write_samples(out / SAMPLES_FILE, done.values())
        reused = sum((r["id"], i) in done for r in rows for i in range(n))
        if reused:
            print(f"[thinkrl] eval {name}: reusing {reused} of {len(rows) * n} samples from {out / SAMPLES_FILE} "
                  "(same model weights, prompts and sampling settings)", flush=True)  # fmt: skip

    bar = _progress(len(rows), sum(all((r["id"], i) in done for i in range(n)) for r in rows), name, progress)
    t0, generated = time.perf_counter(), 0
    for b, start in enumerate(range(0, len(rows), batch_size)):
        idx = list(range(start, min(start + batch_size, len(rows))))
        missing = [(i, s) for i in idx for s in range(n) if (rows[i]["id"], s) not in done]
        if not missing:
            continue
        first = min(s for _, s in missing)  # samples first..n-1 of every problem of the batch, one call
        params = SamplingParams(
            n=n - first,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            max_new_tokens=max_new_tokens,
            stop_strings=stops,
            seed=_batch_seed(seed, b, first),
        )
        infos: list[dict[str, Any]] = []
        if tools:
            eps = generate_episodes(engine, env, [rows[i] for i in idx], [prompt_ids[i] for i in idx], params,
                                    tokenizer, tool_pool(env))  # fmt: skip
            roll, infos = eps.rollout, eps.infos
        else:
            roll = engine.generate([prompt_ids[i] for i in idx], params)
        lengths = roll.lengths.tolist()
        per = n - first
        owners = [idx[j // per] for j in range(len(roll.texts))]
        grades = _grade(grader, [rows[i] for i in owners], roll.texts, [prompts[i] for i in owners])
        new = []
        for j, (text, g) in enumerate(zip(roll.texts, grades)):
            i, s = owners[j], first + j % per
            if (rows[i]["id"], s) in done:
                continue
            rec = {"id": rows[i]["id"], "sample_idx": s, "completion": text, **g, "length": int(lengths[j])}
            rec.update(finish_reason=roll.finish_reasons[j], qhash=qhash[i], ahash=ahash[i])
            if tools:
                rec.update(tool_record(infos[j]))
            done[(rows[i]["id"], s)] = rec
            new.append(rec)
        if out is not None:
            files.append_samples(out / SAMPLES_FILE, new)
        generated += len(new)
        bar.update(len({i for i, _ in missing}))
        bar.set_postfix(samples_per_s=f"{generated / max(time.perf_counter() - t0, 1e-9):.2f}")
    bar.close()

    samples = [done[(r["id"], s)] for r in rows for s in range(n)]
    summary = summarize(
        samples, rows, n=n, pass_ks=pass_ks, cons_k=cons_k, equivalent=grader.equivalent, seed=seed
    )
    if tools:
        summary["metrics"].update(tool_summary(samples))
    summary = {
        "benchmark": name,
        "model": model_name,
        "model_identity": identity,
        "samples_per_problem": n,
        "sampling": recorded,
        "greedy": temperature == 0,
        **summary,
    }
    if out is not None:
        files.write_json(out / SUMMARY_FILE, summary)
    return EvalResult(summary=summary, samples=samples, out_dir=out)


def _as_engine(model_or_engine: Any, tokenizer: Any, seed: int) -> tuple[Any, Any, str]:
    """(engine, tokenizer, a name for the summary) from an engine, a transformers model or a path."""
    if isinstance(model_or_engine, str | Path):
        model, tok = load_model_and_tokenizer(str(model_or_engine), device="auto")
        tokenizer = tokenizer or tok
        model_or_engine = model
    if tokenizer is None:
        raise ValueError("evaluate needs the tokenizer that renders and tokenizes the prompts")
    import torch

    if isinstance(model_or_engine, torch.nn.Module):
        name = getattr(model_or_engine.config, "_name_or_path", "") or type(model_or_engine).__name__
        return HFEngine(model_or_engine, tokenizer, seed=seed), tokenizer, name
    if not hasattr(model_or_engine, "generate"):
        raise TypeError(f"{type(model_or_engine).__name__} is neither a RolloutEngine nor a torch model")
    return model_or_engine, tokenizer, type(model_or_engine).__name__


def model_identity(engine: Any, name: str) -> dict[str, Any]:
    """What an evaluation folder's samples are keyed by besides the sampling settings: the model's resolved
    path (or name) and a fingerprint of its weights (None for an engine that does not expose its model)."""
    import torch

    model = getattr(engine, "model", None)
    path = getattr(getattr(model, "config", None), "_name_or_path", "") or name
    if path and Path(path).exists():
        path = str(Path(path).resolve())
    weights = weights_fingerprint(model) if isinstance(model, torch.nn.Module) else None
    return {"model": path, "weights": weights}


def _batch_seed(seed: int, batch: int, first_sample: int) -> int:
    """A call seed that depends only on (seed, batch position, first sample index)."""
    digest = hashlib.sha256(f"{seed}:{batch}:{first_sample}".encode()).digest()
    return int.from_bytes(digest[:7], "little")


def _progress(total: int, initial: int, name: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total, initial=initial, desc=name, unit="problem", disable=not enabled, dynamic_ncols=True
    )


def _grade(grader: Any, rows: list[dict], completions: list[str], prompts: list[str]) -> list[dict[str, Any]]:
    """Call the grader with the rendered prompts when it accepts them (custom graders may take two args)."""
    if "prompts" in inspect.signature(grader.grade).parameters:
        return grader.grade(rows, completions, prompts=prompts)
    return grader.grade(rows, completions)


def _regrade(
    done: dict[tuple[str, int], dict[str, Any]], rows: Sequence[dict], grader: Any, prompt_of: dict
) -> None:
    by_id = {r["id"]: r for r in rows}
    keys = [key for key in done if key[0] in by_id]
    prompts = [prompt_of[key[0]] for key in keys]
    grades = _grade(
        grader, [by_id[key[0]] for key in keys], [done[key]["completion"] for key in keys], prompts
    )
    for key, g in zip(keys, grades):
        done[key].update(g)

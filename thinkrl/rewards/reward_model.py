"""Reward models for non-verifiable data: a Hugging Face sequence-classification model as a reward function.

DeepSeek-R1 (§2.3.4) scores general (non-verifiable) data with reward models: the *helpfulness* model reads
only the final summary/answer, so it does not judge the reasoning; the *harmlessness* model reads the whole
response, reasoning included. ``RewardModelReward(path, score_on="answer" | "response")`` does both:

    rm = RewardModelReward("/models/my-rm", score_on="answer")
    rm(prompts, completions, **columns)   # -> list[float | None], one score per row

What the model reads, per row: the prompt (or the column ``prompt_key``) and the scored text, joined by the
RM tokenizer's chat template (a user turn and an assistant turn) or as ``prompt + "\\n\\n" + text``. Longer
than ``max_length`` tokens: tokens are cut from the LEFT, so the prompt's beginning goes first and the response's
end (where the answer is, and the token the head reads) is always kept. The score is the head's logit
(``label`` picks one of several), optionally standardised or passed through a sigmoid.

The model is loaded once per process (a cache keyed by path, dtype, device) and runs in the calling process
(the trainer's), batched under ``torch.inference_mode()``; it runs in the scorer's process (``in_process``), never in reward workers.
``import thinkrl.rewards`` does not import torch: this module loads it on first use.

>>> final_answer("<think>2+2 is 4</think> <answer> 4 </answer>"), final_answer("<think>so</think> It is 4.")
('4', 'It is 4.')
>>> join_plain("What is 2+2?", "4")
'What is 2+2?\\n\\n4'
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from thinkrl.rewards.extract import as_text, extract_answer_tag
from thinkrl.rewards.format import with_prefill
from thinkrl.rewards.routing import is_model_route, route_key

SCORE_ON = ("answer", "response")
TEMPLATES = ("auto", "chat", "plain")
NORMALIZE = ("none", "standard", "sigmoid")
DTYPES = ("float32", "bfloat16", "float16")

_MODELS: dict[tuple[str, str, str, bool], tuple[Any, Any]] = {}
"""(path, dtype, device, trust_remote_code) -> (model, tokenizer): each RM is loaded once per process."""


def final_answer(completion: Any, prompt: Any = "") -> str:
    """The part of a completion a helpfulness RM scores: the last ``<answer>`` content; else the text after the
    last ``</think>``; else "" while a ``<think>`` is still open (no answer was given); else the whole text.

    A prompt that pre-fills ``<think>`` counts as an opened think block.

    >>> final_answer("<think>unfinished"), final_answer("no tags at all"), final_answer("a</think>b", "Q <think>")
    ('', 'no tags at all', 'b')
    """
    text = with_prefill(prompt, completion)
    tag = extract_answer_tag(text)
    if tag is not None:
        return tag
    end = text.rfind("</think>")
    if end != -1:
        return text[end + len("</think>") :].strip()
    return "" if "<think>" in text else text.strip()


def join_plain(prompt: str, response: str) -> str:
    """The RM input without a chat template."""
    return f"{prompt}\n\n{response}"


def load_reward_model(path: str, dtype: str, device: str, trust_remote_code: bool = False) -> tuple[Any, Any]:
    """``AutoModelForSequenceClassification`` + tokenizer from ``path``, in eval mode on ``device``; cached.

    Raises ValueError when the path cannot be loaded or the checkpoint has no trained classification head
    (a causal-LM checkpoint would silently get a random head and give random rewards).
    """
    key = (path, dtype, device, trust_remote_code)
    if key in _MODELS:
        return _MODELS[key]
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    local = Path(path).expanduser()
    if (local.is_absolute() or path.startswith(".")) and not local.exists():
        raise ValueError(f"path={path!r} does not exist; pass a folder saved by save_pretrained, or a hub id")
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            path, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code, output_loading_info=True
        )
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ValueError(
            f"cannot load a sequence-classification model from path={path!r} ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); pass a folder with config.json and weights, or a hub id"
        ) from None
    if info.get("missing_keys"):
        raise ValueError(
            f"path={path!r} has no trained classification head (missing weights: "
            f"{', '.join(sorted(info['missing_keys'])[:4])}); it looks like a base or causal-LM checkpoint, whose "
            "head would be random: pass a reward model saved as *ForSequenceClassification"
        )
    # The head reads the last token that is not model.config.pad_token_id (HF's pooling): we pad with that id.
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.eos_token_id
    if model.config.pad_token_id is None:
        raise ValueError(
            f"path={path!r}: neither the model config nor the tokenizer names a pad or eos token"
        )
    model.to(device).eval().requires_grad_(False)
    _MODELS[key] = (model, tokenizer)
    return model, tokenizer


class RewardModelReward:
    """A sequence-classification reward model as a reward ``(prompts, completions, **columns) -> scores``.

    It runs in the scorer's process (``in_process``): it holds a model, maybe on the GPU.

    Args:
        path: a local folder saved by ``save_pretrained`` or a hub id of a ``*ForSequenceClassification`` model.
        score_on: ``answer`` (the final answer only, :func:`final_answer`: R1's helpfulness RM) or ``response``
            (the whole completion, reasoning included: R1's harmlessness RM).
        template: ``chat`` (the RM tokenizer's chat template: user = prompt, assistant = scored text),
            ``plain`` (``prompt + "\\n\\n" + text``), ``auto`` (chat when the tokenizer has a template).
        max_length: most tokens the RM reads; longer inputs lose tokens from the left (the prompt first).
        batch_size: rows per forward pass (rows are sorted by length first, so batches carry little padding).
        device: ``auto`` (CUDA when visible, else CPU), ``cpu``, ``cuda``, ``cuda:N``.
        dtype: ``float32``, ``bfloat16`` or ``float16``.
        normalize: ``none`` (the raw logit), ``standard`` ((logit - mean) / std) or ``sigmoid``
            (sigmoid((logit - mean) / std): a Bradley-Terry RM's win probability against a response scoring mean).
        mean, std: the offset and scale used by ``standard`` and ``sigmoid`` (e.g. measured on reference data).
        label: which logit to read when the head has several (``num_labels > 1``); required then.
        route: score only rows whose ``verifier`` column equals this value (``reward_model`` or
            ``reward_model:TAG``); other rows get None, so a rule reward (``routed``) can score them.
            None: score every row.
        prompt_key: a column whose text the RM reads as the prompt instead of the policy's rendered prompt
            (e.g. the bare question without the R1 template); None: the prompt as the policy saw it.
        name: the name this reward is logged under (give two RMs different names).
        trust_remote_code: passed to ``from_pretrained``.
    """

    def __init__(
        self,
        path: str,
        *,
        score_on: str = "answer",
        template: str = "auto",
        max_length: int = 4096,
        batch_size: int = 8,
        device: str = "auto",
        dtype: str = "float32",
        normalize: str = "none",
        mean: float = 0.0,
        std: float = 1.0,
        label: int | None = None,
        route: str | None = None,
        prompt_key: str | None = None,
        name: str = "reward_model",
        trust_remote_code: bool = False,
    ) -> None:
        for value, valid, field in (
            (score_on, SCORE_ON, "score_on"),
            (template, TEMPLATES, "template"),
            (normalize, NORMALIZE, "normalize"),
            (dtype, DTYPES, "dtype"),
        ):
            if value not in valid:
                raise ValueError(f"{field}={value!r}; valid: {', '.join(valid)}")
        if not path:
            raise ValueError("path is empty; set kwargs.path to a reward model folder or hub id")
        if max_length < 2 or batch_size < 1:
            raise ValueError(f"max_length={max_length} must be >= 2 and batch_size={batch_size} >= 1")
        if not std > 0:
            raise ValueError(f"std={std} must be > 0")
        if normalize == "none" and (mean != 0.0 or std != 1.0):
            raise ValueError(
                f"mean/std are used only with normalize=standard or sigmoid (got normalize={normalize!r})"
            )
        if route is not None and not is_model_route(route_key(route) or ""):
            raise ValueError(
                f"route={route!r}; use 'reward_model' or 'reward_model:TAG' (the verifier value that `routed` "
                "leaves to reward models)"
            )
        from thinkrl.core import resolve_device

        self.device = str(resolve_device(device))
        self.model, self.tokenizer = load_reward_model(path, dtype, self.device, trust_remote_code)
        num_labels = self.model.config.num_labels
        if num_labels > 1 and label is None:
            raise ValueError(
                f"path={path!r} has a head with num_labels={num_labels}; set kwargs.label to the index of the "
                "logit that scores quality (see the model card)"
            )
        if label is not None and not 0 <= label < num_labels:
            raise ValueError(f"label={label} is out of range for num_labels={num_labels}")
        has_chat = getattr(self.tokenizer, "chat_template", None) is not None
        if template == "chat" and not has_chat:
            raise ValueError(
                f"template='chat' but the tokenizer at {path!r} has no chat template; use plain or auto"
            )
        self.chat = template == "chat" or (template == "auto" and has_chat)
        self.path, self.score_on, self.max_length, self.batch_size = path, score_on, max_length, batch_size
        self.normalize, self.mean, self.std, self.label = normalize, mean, std, label or 0
        self.route = route_key(route) if route is not None else None
        self.prompt_key = prompt_key
        self.__name__ = name
        self.stats = {"rows_scored": 0, "rows_truncated": 0}
        """Running counts: rows scored, rows cut to ``max_length``."""

    def texts(self, prompts: list[Any], completions: list[Any]) -> list[str]:
        """The exact strings the RM reads for these rows (before tokenization and truncation)."""
        out = []
        for p, c in zip(prompts, completions):
            scored = final_answer(c, p) if self.score_on == "answer" else as_text(c).strip()
            if self.chat:
                user = p if isinstance(p, list) else [{"role": "user", "content": as_text(p)}]
                messages = [*user, {"role": "assistant", "content": scored}]
                out.append(self.tokenizer.apply_chat_template(messages, tokenize=False))
            else:
                out.append(join_plain(as_text(p), scored))
        return out

    def score_texts(self, texts: list[str]) -> list[float]:
        """RM scores of already-joined texts: batched (sorted by length), right-padded, after normalisation."""
        import torch

        ids = self.tokenizer(texts, add_special_tokens=not self.chat)["input_ids"]
        self.stats["rows_truncated"] += sum(len(x) > self.max_length for x in ids)
        ids = [x[-self.max_length :] for x in ids]  # keep the end: the response and the token the head reads
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        scores = [0.0] * len(ids)
        pad = self.model.config.pad_token_id
        with torch.inference_mode():
            for s in range(0, len(order), self.batch_size):
                rows = order[s : s + self.batch_size]
                width = len(ids[rows[0]])
                # right padding keeps every real token's position id as in an unpadded forward
                batch = torch.full((len(rows), width), pad, dtype=torch.long)  # (B, T)
                mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
                for j, i in enumerate(rows):
                    batch[j, : len(ids[i])] = torch.tensor(ids[i])
                    mask[j, : len(ids[i])] = 1
                out = self.model(input_ids=batch.to(self.device), attention_mask=mask.to(self.device))
                picked = out.logits[:, self.label].float().cpu().tolist()  # (B, num_labels) -> (B,)
                for i, v in zip(rows, picked):
                    scores[i] = self._normalize(v)
        self.stats["rows_scored"] += len(ids)
        return scores

    def _normalize(self, logit: float) -> float:
        if self.normalize == "none":
            return logit
        z = (logit - self.mean) / self.std
        return z if self.normalize == "standard" else 1.0 / (1.0 + math.exp(-z))

    def __call__(self, prompts: list[Any], completions: list[Any], **columns: Any) -> list[float | None]:
        rows = list(range(len(completions)))
        if self.route is not None:
            verifier = columns.get("verifier")
            if verifier is None:
                raise ValueError(
                    f"{self.__name__}: route={self.route!r} needs a column 'verifier' in the data"
                )
            rows = [i for i in rows if route_key(verifier[i]) == self.route]
        if self.prompt_key is not None:
            if self.prompt_key not in columns:
                raise ValueError(
                    f"{self.__name__}: prompt_key={self.prompt_key!r} is not a data column; columns: "
                    f"{', '.join(sorted(columns)) or 'none'}"
                )
            prompts = columns[self.prompt_key]
        out: list[float | None] = [None] * len(completions)
        if rows:
            texts = self.texts([prompts[i] for i in rows], [completions[i] for i in rows])
            for i, s in zip(rows, self.score_texts(texts)):
                out[i] = s
        return out

    in_process = True

    def __getstate__(self) -> dict:
        raise TypeError(
            f"{self.__name__}: a reward model runs in the trainer process and cannot be pickled into worker "
            "processes; pass it to the trainer directly"
        )

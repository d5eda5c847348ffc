"""The ``thinkrl pipeline`` file: stages run in order, each one a thinkrl command whose inputs are earlier outputs.

    output_dir: runs/pipelines/r1
    vars: {base_model: demo}
    stages:
      - name: cold_start
        kind: sft                              # sft | rl | sample | eval
        config: configs/my-sft.yaml            # optional: the command's own YAML (thinkrl sft / train)
        model: {path: "${vars.base_model}"}    # every other key is that command's config, nested or dotted
        data.train: cold_start.jsonl
      - name: reasoning_rl
        kind: rl
        model.path: ${stages.cold_start.model}  # the folder the cold_start stage exports

References (plain string substitution, checked at load time, so a typo fails before anything runs):

- ``${vars.NAME}``: a value of the top-level ``vars`` mapping (override it with ``vars.NAME=...``);
- ``${stages.NAME.OUTPUT}``: a path an *earlier* stage writes (:data:`OUTPUTS`): ``model`` (sft, rl: a plain
  Hugging Face folder), ``data`` (sample: the filtered ``sft.jsonl``), ``samples`` (sample, eval: every graded
  sample), ``summary`` (sample, eval: pass@k json), ``dir`` (any stage: its folder).

Every stage writes only under ``output_dir/NAME/``; the pipeline sets the stage's own output fields
(``train.output_dir`` of sft/rl, the output folder of sample/eval) and ``train.resume=true``, so whatever a
config file says there is replaced. Each stage config is resolved and validated by its command's own loader
before the first stage runs.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from thinkrl.config import (
    Config,
    ConfigError,
    EvalSampling,
    GradingConfig,
    RewardSpec,
    check_eval_sampling,
    explain_error,
    validate,
)
from thinkrl.rejection.filters import FilterConfig
from thinkrl.rejection.runner import SAMPLE_DEFAULTS
from thinkrl.sft.config import SFTConfig, validate_sft
from thinkrl.train.checks import check_config

KINDS = ("sft", "rl", "sample", "eval")
OUTPUTS: dict[str, dict[str, str]] = {
    "sft": {"model": "model"},
    "rl": {"model": "model"},
    "sample": {"data": "sft.jsonl", "samples": "samples.jsonl", "summary": "summary.json"},
    "eval": {"samples": "samples.jsonl", "summary": "summary.json"},
}
"""What ``${stages.NAME.OUTPUT}`` may name for each kind, and the path under the stage folder it stands for."""
RESERVED = ("name", "kind", "config")
NOT_HASHED = ("log", "progress")
"""Top-level config fields that do not change what a stage computes (logging, progress bars): changing them
does not make a finished stage count as changed."""
_REF = re.compile(r"\$\{\s*(vars|stages)\.([A-Za-z0-9_\-]+)(?:\.([A-Za-z0-9_]+))?\s*\}")


# ------------------------------------------------------------------------------------- sample / eval stages
@dataclass
class SamplingStageConfig(EvalSampling):
    """Fields shared by the ``sample`` and ``eval`` stages (the flags of ``thinkrl sample`` / ``thinkrl eval``):
    the sampling settings of :class:`~thinkrl.config.EvalSampling`, the model, the prompts and the grading."""

    k: int = SAMPLE_DEFAULTS.k
    """Samples per prompt."""
    max_new_tokens: int | None = SAMPLE_DEFAULTS.max_new_tokens
    """Completion cap; samples that hit it count as truncated."""
    model: str = ""
    """Model folder or hub name, usually ``${stages.NAME.model}``; ``demo`` is the built-in base model."""
    data: str = ""
    """Prompts: a benchmark name (gsm8k, math500, ...; eval), a .jsonl/.parquet/.csv file, a folder, a hub name
    or ``builtin:demo``."""
    split: str = "train"
    """Split of a ``datasets`` folder, hub name or built-in task."""
    question_key: str = "question"
    """Column holding the problem text."""
    answer_key: str = "answer"
    """Column holding the gold answer (passed to the rewards as ``answer``)."""
    limit: int | None = None
    """Use only the first N prompts."""
    rewards: list[RewardSpec] = field(
        default_factory=lambda: [RewardSpec("accuracy", 1.0), RewardSpec("format", 1.0)]
    )
    """Rewards that grade every sample (the RL rewards, so training and grading cannot drift)."""
    grading: GradingConfig = field(default_factory=GradingConfig)
    """Time bounds, worker count and sandbox of the rewards, as in training (``thinkrl.config.GradingConfig``)."""
    correct_reward: str | None = None
    """Reward whose score >= 1 makes a sample ``correct`` (default: the first of accuracy/countdown/... graded)."""
    dtype: str = "auto"
    """``auto`` (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16."""
    device: str | None = None
    """``cuda``, ``cpu``, ...; None = cuda when available."""
    progress: bool = True
    """Progress bar on the console."""


@dataclass
class SampleStageConfig(SamplingStageConfig):
    """``kind: sample`` (``thinkrl sample``): k samples per prompt, graded, filtered into ``sft.jsonl``."""

    filters: FilterConfig = field(default_factory=FilterConfig)
    """Rejection filters (``thinkrl.rejection.filters.FilterConfig``), e.g. ``{keep: correct, max_per_prompt: 4}``."""


@dataclass
class EvalStageConfig(SamplingStageConfig):
    """``kind: eval`` (``thinkrl eval``): pass@1 over k samples, pass@k, cons@k on held-out prompts."""

    split: str = "test"
    """Split of a ``datasets`` folder, hub name or built-in task (``builtin:demo``'s held-out set is ``test``)."""


SCHEMAS: dict[str, type] = {
    "sft": SFTConfig,
    "rl": Config,
    "sample": SampleStageConfig,
    "eval": EvalStageConfig,
}


# ------------------------------------------------------------------------------------------- the pipeline
@dataclass
class Stage:
    """One resolved stage: its typed config (``SFTConfig``, ``Config``, ``SampleStageConfig``,
    ``EvalStageConfig``), where it writes, what it reads, and the hash that says whether it changed."""

    name: str
    kind: str
    cfg: Any
    dir: Path
    deps: list[str]
    """Earlier stages whose outputs this one reads."""
    hash: str
    """sha256 of the resolved config (output folder written as ``<pipeline>``) and of the deps' hashes."""

    def output(self, what: str) -> Path:
        """The path of output ``what`` (a key of :data:`OUTPUTS` for this kind, or ``dir``)."""
        return self.dir if what == "dir" else self.dir / OUTPUTS[self.kind][what]


@dataclass
class Pipeline:
    output_dir: Path
    stages: list[Stage]
    source: str = ""
    """The file it was read from (or ``distill``)."""
    vars: dict[str, Any] = field(default_factory=dict)
    """The ``vars`` mapping, overrides applied."""

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise ConfigError(f"no stage {name!r}; stages: {', '.join(s.name for s in self.stages)}")

    def dependents(self, name: str) -> list[str]:
        """``name`` and every stage that reads its outputs, directly or through others, in order."""
        out = {name}
        for s in self.stages:
            if out & set(s.deps):
                out.add(s.name)
        return [s.name for s in self.stages if s.name in out]


def load_pipeline(path: str | Path, overrides: list[str] | None = None) -> Pipeline:
    """Read a pipeline YAML, apply ``key=value`` overrides, resolve and validate every stage.

    Overrides: ``output_dir=DIR``, ``vars.NAME=VALUE``, or ``STAGE.KEY=VALUE`` for a stage's own config
    (e.g. ``cold_start.train.lr=1e-5``).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"pipeline file {str(p)!r} does not exist; see configs/pipelines/")
    try:
        raw = OmegaConf.to_container(OmegaConf.load(p), resolve=False)
    except (OmegaConfBaseException, ValueError) as e:
        raise ConfigError(f"{p}: invalid YAML ({e})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: a pipeline is a mapping with output_dir, vars and stages")
    return build_pipeline(raw, overrides, source=str(p))


def build_pipeline(raw: dict[str, Any], overrides: list[str] | None = None, source: str = "") -> Pipeline:
    """:func:`load_pipeline` from an already parsed mapping (``thinkrl distill`` builds one in code)."""
    unknown = set(raw) - {"output_dir", "vars", "stages"}
    if unknown:
        raise ConfigError(f"unknown top-level key(s) {sorted(unknown)}; valid: output_dir, vars, stages")
    stages_raw = raw.get("stages")
    if not isinstance(stages_raw, list) or not stages_raw:
        raise ConfigError(
            "stages is missing or empty; list stages as {name, kind, ...} (see configs/pipelines/)"
        )
    variables = dict(raw.get("vars") or {})
    output_dir = str(raw.get("output_dir") or "")
    specs = [dict(s) if isinstance(s, dict) else s for s in stages_raw]
    for i, s in enumerate(specs):
        if not isinstance(s, dict) or "name" not in s or "kind" not in s:
            raise ConfigError(f"stages[{i}] needs a name and a kind ({', '.join(KINDS)})")
        s["name"] = str(s["name"])
        if not re.fullmatch(r"[A-Za-z0-9_\-]+", s["name"]) or s["name"] in ("vars", "output_dir"):
            raise ConfigError(
                f"stage name {s['name']!r}: use letters, digits, _ and - (it names a folder), not vars/output_dir"
            )
        if s["kind"] not in KINDS:
            raise ConfigError(f"stage {s['name']!r}: kind={s['kind']!r}; valid: {', '.join(KINDS)}")
    names = [s["name"] for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"stage names must be unique; repeated: {', '.join(dup)}")
    stage_overrides: dict[str, list[str]] = {n: [] for n in names}
    for o in overrides or []:
        key, eq, value = o.partition("=")
        head, _, rest = key.partition(".")
        if not eq:
            raise ConfigError(f"override {o!r} is not key=value (e.g. cold_start.train.lr=1e-5)")
        if key == "output_dir":
            output_dir = value
        elif head == "vars" and rest:
            variables[rest] = value
        elif head in stage_overrides and rest:
            stage_overrides[head].append(f"{rest}={value}")
        else:
            raise ConfigError(
                f"override {o!r}: the key must be output_dir, vars.NAME or STAGE.KEY with STAGE one of "
                f"{', '.join(names)}"
            )
    if not output_dir:
        raise ConfigError("output_dir is empty; set it in the file or with output_dir=runs/pipelines/NAME")
    root = Path(output_dir)
    stages: list[Stage] = []
    for s in specs:
        stages.append(_resolve_stage(s, stage_overrides[s["name"]], variables, root, stages))
    return Pipeline(output_dir=root, stages=stages, source=source, vars=variables)


def _resolve_stage(
    spec: dict[str, Any], overrides: list[str], variables: dict[str, Any], root: Path, earlier: list[Stage]
) -> Stage:
    name, kind = spec["name"], spec["kind"]
    by_name = {s.name: s for s in earlier}
    deps: list[str] = []

    def substitute(m: re.Match) -> str:
        scope, key, what = m.group(1), m.group(2), m.group(3)
        if scope == "vars":
            if key not in variables or what is not None:
                raise ConfigError(
                    f"stage {name!r}: {m.group(0)} is not defined; vars: {', '.join(variables) or '(none)'}"
                )
            return str(variables[key])
        if key not in by_name:
            raise ConfigError(
                f"stage {name!r}: {m.group(0)} names no earlier stage; a stage reads only the outputs of stages "
                f"listed before it ({', '.join(by_name) or 'none here'})"
            )
        src = by_name[key]
        valid = [*OUTPUTS[src.kind], "dir"]
        if what not in valid:
            raise ConfigError(
                f"stage {name!r}: {m.group(0)}: a {src.kind} stage's outputs are {', '.join(valid)}"
            )
        if key not in deps:
            deps.append(key)
        return str(src.output(what))

    body = {k: v for k, v in spec.items() if k not in RESERVED}
    body = _substitute(_expand_dotted(body), substitute)
    layers = []
    if spec.get("config"):
        path = Path(str(_substitute(spec["config"], substitute)))
        if not path.is_file():
            raise ConfigError(
                f"stage {name!r}: config {str(path)!r} does not exist (paths are relative to the cwd)"
            )
        layers.append(OmegaConf.load(path))
    layers.append(OmegaConf.create(body))
    layers.append(OmegaConf.from_dotlist([_substitute(o, substitute) for o in overrides]))
    stage_dir = root / name
    if kind in ("sft", "rl"):  # the pipeline owns where a stage writes, and a rerun always resumes
        layers.append(OmegaConf.create({"train": {"output_dir": str(stage_dir / "run"), "resume": True}}))
    cfg = _structured(SCHEMAS[kind], layers, name)
    _validate(kind, cfg, name)
    fields = OmegaConf.to_container(OmegaConf.structured(cfg))
    assert isinstance(fields, dict)
    for key in NOT_HASHED:
        fields.pop(key, None)
    text = json.dumps(fields, sort_keys=True).replace(str(root), "<pipeline>")
    digest = hashlib.sha256(text.encode())
    for d in deps:
        digest.update(by_name[d].hash.encode())
    return Stage(name=name, kind=kind, cfg=cfg, dir=stage_dir, deps=deps, hash=digest.hexdigest()[:16])


def _structured(schema: type, layers: list[Any], name: str) -> Any:
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), *layers))
    except OmegaConfBaseException as e:
        raise ConfigError(f"stage {name!r}: invalid config: {explain_error(e, schema)}") from None
    except ValueError as e:  # a dataclass's own __post_init__ check (e.g. filters.keep)
        raise ConfigError(f"stage {name!r}: invalid config: {e}") from None


def _validate(kind: str, cfg: Any, name: str) -> None:
    try:
        if kind in ("sft", "rl") and not cfg.model.path:
            raise ConfigError(
                "model.path is empty; set it (e.g. model.path: ${vars.base_model}, then vars.base_model=...)"
            )
        if kind == "sft":
            validate_sft(cfg)
        elif kind == "rl":
            validate(cfg)
            check_config(cfg)
            if cfg.train.steps < 1:
                raise ConfigError("train.steps must be >= 1 in a pipeline (0 steps exports no model)")
        else:
            if not cfg.model or not cfg.data:
                raise ConfigError("model and data are required (e.g. model: ${stages.NAME.model})")
            check_eval_sampling(cfg)
            if cfg.max_new_tokens is None:
                raise ConfigError("max_new_tokens must be set (e.g. 1024)")
            if not cfg.rewards:
                raise ConfigError("rewards is empty; grade with at least one, e.g. [{name: accuracy}]")
    except (ConfigError, ValueError) as e:
        raise ConfigError(f"stage {name!r} ({kind}): {e}") from None


def _expand_dotted(d: Any) -> Any:
    """``{"train.lr": 1, "train": {"steps": 2}}`` -> ``{"train": {"lr": 1, "steps": 2}}`` (recursively)."""
    if not isinstance(d, dict):
        return d
    out: dict[str, Any] = {}
    for key, value in d.items():
        value = _expand_dotted(value)
        *parents, last = str(key).split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"key {key!r} sets a field inside {part!r}, which is not a section")
        if isinstance(value, dict) and isinstance(node.get(last), dict):
            node[last] = {**node[last], **value}
        else:
            node[last] = value
    return out


def _substitute(value: Any, fn: Any) -> Any:
    """Replace every ``${vars.X}`` / ``${stages.X.Y}`` inside the strings of a nested value."""
    if isinstance(value, str):
        out = _REF.sub(fn, value)
        if "${" in out:
            raise ConfigError(
                f"{value!r}: only ${{vars.NAME}} and ${{stages.NAME.OUTPUT}} references are understood"
            )
        return out
    if isinstance(value, dict):
        return {k: _substitute(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, fn) for v in value]
    return value

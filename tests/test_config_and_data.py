"""Config loading, overrides and validation; dataset loading and templates; bad input gets a clear error."""

from __future__ import annotations

import json

import pytest

from thinkrl.config import ConfigError, load_config, save_config
from thinkrl.data.datasets import DataError, load_prompts
from thinkrl.data.templates import R1_ZERO_TEMPLATE, render_prompt
from thinkrl.train.checks import check_config


def test_defaults_are_the_papers():
    cfg = load_config()
    assert cfg.algorithm.beta == 0.001 and cfg.rollout.group_size == 16 and cfg.rollout.temperature == 1.0
    assert cfg.train.lr == 3e-6 and cfg.rollout.prompts_per_step == 32 and cfg.algorithm.kl_estimator == "k3"
    assert [r.name for r in cfg.rewards] == ["accuracy", "format"]


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "rollout:\n  group_size: 8\ntrain:\n  lr: 1.0e-4\nrewards:\n  - {name: format, weight: 0.5}\n"
    )
    cfg = load_config(path, ["rollout.group_size=4", "algorithm.beta=0"])
    assert cfg.rollout.group_size == 4 and cfg.train.lr == 1e-4 and cfg.algorithm.beta == 0.0
    assert cfg.rewards[0].name == "format" and cfg.rewards[0].weight == 0.5
    save_config(cfg, tmp_path / "saved.yaml")
    again = load_config(tmp_path / "saved.yaml")
    assert again == cfg


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["rollout.group_size=1"], r"group-relative advantage needs G >= 2"),
        (
            ["algorithm.advantage=ppo"],
            r"algorithm.advantage='ppo' is unknown; valid: dr_grpo, gae, grpo, reinforce_pp, rloo",
        ),
        (["algorithm.loss_agg=mean"], r"valid: seq_mean_token_mean, seq_mean_token_sum_norm, token_mean"),
        (["algorithm.kl_estimator=k4"], r"valid: k1, k2, k3"),
        (["data.template=Solve this"], r"no '\{question\}' placeholder"),
        (["rollout.temperature=0"], r"RL needs sampling"),
        (["algorithm.num_minibatches=3"], r"must divide prompts_per_step x group_size = 512"),
        (
            ["rollout.grup_size=4"],
            r"unknown key 'rollout.grup_size'; valid keys under 'rollout': engine, group_size",
        ),
        (["train.lr=fast"], r"train.lr"),
        (["beta"], r"not key=value"),
    ],
)
def test_bad_config_is_named_with_its_fix(overrides, message):
    """Structure is checked on loading, registry names by check_config: every run calls both at start."""
    with pytest.raises(ConfigError, match=message):
        check_config(load_config(None, overrides))


def test_missing_config_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("nope.yaml")


def test_group_of_one_allowed_without_group_baseline():
    assert (
        load_config(None, ["rollout.group_size=1", "algorithm.advantage=reinforce_pp"]).rollout.group_size
        == 1
    )


@pytest.fixture()
def files(tmp_path):
    rows = [{"problem": "1+1", "solution": "2", "level": 1}, {"problem": "2+3", "solution": "5", "level": 2}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    (tmp_path / "d.csv").write_text("problem,solution,level\n1+1,2,1\n2+3,5,2\n")
    return tmp_path


@pytest.mark.parametrize("name", ["d.jsonl", "d.parquet", "d.csv"])
def test_load_prompts_maps_columns(files, name):
    rows = load_prompts(str(files / name), question_key="problem", answer_key="solution")
    assert [r["question"] for r in rows] == ["1+1", "2+3"]
    assert [str(r["answer"]) for r in rows] == ["2", "5"]
    assert [str(r["level"]) for r in rows] == ["1", "2"]  # extra columns ride along to the rewards


def test_load_prompts_from_datasets_folder(files):
    import datasets

    datasets.Dataset.from_list([{"question": "q", "answer": "a"}]).save_to_disk(str(files / "ds"))
    assert load_prompts(str(files / "ds"))[0] == {"question": "q", "answer": "a"}


def test_missing_file_and_column_are_clear(files):
    with pytest.raises(DataError, match="does not exist"):
        load_prompts(str(files / "missing.jsonl"))
    with pytest.raises(
        DataError,
        match=r"no column 'question' \(data.question_key\); its columns are: problem, solution, level",
    ):
        load_prompts(str(files / "d.jsonl"))


def test_bad_jsonl_line_is_located(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"question": "a", "answer": "1"}\n{oops\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2 is not valid JSON"):
        load_prompts(str(tmp_path / "bad.jsonl"))


def test_shuffle_is_seeded(files):
    a = load_prompts(str(files / "d.jsonl"), question_key="problem", answer_key="solution", seed=3)
    b = load_prompts(str(files / "d.jsonl"), question_key="problem", answer_key="solution", seed=3)
    assert a == b


def test_r1_template_is_the_papers():
    prompt = render_prompt("r1", "What is 2+3?")
    assert prompt.startswith("A conversation between User and Assistant.")
    assert "<think> reasoning process here </think> <answer> answer here </answer>" in prompt
    assert prompt.endswith("User: What is 2+3?. Assistant:")
    assert R1_ZERO_TEMPLATE.count("{question}") == 1


def test_custom_template_keeps_latex_braces():
    assert render_prompt("Solve: {question}\n", r"\frac{1}{2} + x") == "Solve: \\frac{1}{2} + x\n"


def test_chat_template_needs_a_chat_tokenizer():
    from thinkrl.testing import char_tokenizer

    with pytest.raises(ValueError, match="has none"):
        render_prompt("chat", "q", char_tokenizer())

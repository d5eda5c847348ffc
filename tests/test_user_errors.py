"""Errors a user can cause by a path, a file or a config: one sentence that says what and how to fix it."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from thinkrl.core import ModelLoadError, load_model_and_tokenizer
from thinkrl.data.datasets import DataError, load_prompts, read_rows
from thinkrl.eval.benchmarks import BenchmarkError, normalize_rows


@pytest.fixture
def no_hub(monkeypatch):
    """Any attempt to load from the hub fails the test (a local-looking path must never get there)."""
    import transformers

    def refuse(*a, **k):
        raise AssertionError(f"from_pretrained was called with {a}")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", refuse)


@pytest.mark.parametrize("path", ["./runs/typo", "/models/no-such-model", "runs/a/b", "~/missing"])
def test_a_missing_local_path_never_goes_to_the_hub(path, no_hub, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    start = time.monotonic()
    with pytest.raises(ModelLoadError, match=r"does not exist .*not looked up on the Hugging Face hub"):
        load_model_and_tokenizer(path)
    assert time.monotonic() - start < 1


def test_a_folder_that_is_not_a_model_says_so(tmp_path, no_hub):
    with pytest.raises(ModelLoadError, match=r"is a folder but not a model \(it has no config.json\)"):
        load_model_and_tokenizer(str(tmp_path))
    ckpt = tmp_path / "checkpoints" / "step-000004"
    ckpt.mkdir(parents=True)
    (ckpt / "config.json").write_text("{}")
    with pytest.raises(
        ModelLoadError, match=r"looks like a run folder; pass one of its checkpoints, e.g. .*step-000004"
    ):
        load_model_and_tokenizer(str(tmp_path))


def test_a_broken_model_folder_is_one_sentence(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ModelLoadError, match=rf"could not load the model '{tmp_path}' from the folder"):
        load_model_and_tokenizer(str(tmp_path))


def test_cli_prints_one_line_for_a_bad_model_path(tmp_path, capsys, no_hub):
    from thinkrl.cli import main

    rc = main(["eval", str(tmp_path / "nope"), "--data", "builtin:demo", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("thinkrl: error: model path") and "Traceback" not in err


def test_non_utf8_data_names_the_file_and_line(tmp_path):
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_bytes(b'{"question": "1", "answer": "1"}\n{"question": "caf\xe9", "answer": "2"}\n')
    with pytest.raises(DataError, match=rf"{jsonl}:2 is not UTF-8 text \(byte 0xe9 at column 18\).*iconv"):
        read_rows(str(jsonl))
    csv = tmp_path / "train.csv"
    csv.write_bytes(b"question,answer\n1,1\n2,\xff\n")
    with pytest.raises(DataError, match=rf"{csv}:3 is not UTF-8"):
        read_rows(str(csv))


def test_a_missing_answer_names_the_row(tmp_path):
    path = tmp_path / "train.jsonl"
    rows = [f'{{"question": "{i}", "answer": "{i}"}}' for i in range(5)] + ['{"question": "5"}']
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"row 5 has no 'answer' column \(data.answer_key"):
        load_prompts(str(path))
    path.write_text('{"question": "1", "answer": "1"}\n[1, 2]\n')
    with pytest.raises(DataError, match=rf"{path}:2 is a JSON list, not an object"):
        read_rows(str(path))
    with pytest.raises(BenchmarkError, match=r"row 1: row has no answer column"):
        normalize_rows([{"question": "a", "answer": "1"}, {"question": "b"}])


def test_pipeline_dry_run_checks_paths_and_vars(tmp_path, capsys):
    from thinkrl.pipeline import run_pipeline_cli

    spec = tmp_path / "p.yaml"
    spec.write_text(
        f"output_dir: {tmp_path / 'out'}\n"
        "vars: {base: ./no-such-model, data: data/missing.jsonl, note: ''}\n"
        "stages:\n"
        "  - {name: s, kind: sample, model: '${vars.base}', data: '${vars.data}', max_new_tokens: 8}\n"
        "  - {name: e, kind: eval, model: demo, data: builtin:demo, max_new_tokens: 8}\n"
    )
    args = SimpleNamespace(pipeline=str(spec), overrides=[], dry_run=True, force=[], until=None)
    assert run_pipeline_cli(args) == 2
    out = capsys.readouterr().out
    assert "vars.note is empty" in out
    assert "stage 's': model: model path './no-such-model' does not exist" in out
    assert "stage 's': data='data/missing.jsonl': data/missing.jsonl does not exist" in out
    assert "stage 'e'" not in out  # demo and builtin:demo exist
    # a real run refuses before the first stage, for the same reasons
    from thinkrl.pipeline import load_pipeline, run_pipeline
    from thinkrl.pipeline.runner import PipelineError

    with pytest.raises(PipelineError, match=r"inputs are not ready"):
        run_pipeline(load_pipeline(spec))
    assert not (tmp_path / "out").exists()

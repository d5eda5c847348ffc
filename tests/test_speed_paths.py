"""Fast paths give what the plain paths give: the tiled LM head (values, gradients, LoRA, fallbacks), the
fused optimizer, and the bf16 autocast option."""

from __future__ import annotations

import pytest
import torch
from conftest import make_cfg, make_trainer, params

from thinkrl.algorithms import entropy_from_logits, lm_head_logprobs, token_logprobs
from thinkrl.core import disable_dropout
from thinkrl.rollout import HFEngine, SamplingParams
from thinkrl.testing import char_tokenizer, tiny_model
from thinkrl.train.batch import build_batch, forward_logprobs, split_lm_head


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_lm_head_logprobs_equal_full_logits_in_values_and_grads(temperature):
    """Tiles of 5 positions (not a divisor of 12) against log_softmax on the full (N, T, V) logits."""
    torch.manual_seed(0)
    h = torch.randn(3, 4, 8, requires_grad=True)
    w = torch.randn(11, 8, requires_grad=True)
    b = torch.randn(11, requires_grad=True)
    tokens = torch.randint(0, 11, (3, 4))
    g_lp, g_ent = torch.randn(3, 4), torch.randn(3, 4)  # arbitrary upstream gradients for both outputs

    def grads(logp, ent):
        return torch.autograd.grad((logp * g_lp).sum() + (ent * g_ent).sum(), (h, w, b))

    lp, ent = lm_head_logprobs(h, w, tokens, temperature, bias=b, chunk_size=5)
    logits = torch.nn.functional.linear(h, w, b)
    lp_ref = token_logprobs(logits, tokens, temperature)
    ent_ref = entropy_from_logits(logits, temperature=temperature)
    torch.testing.assert_close(lp, lp_ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(ent, ent_ref, rtol=0, atol=1e-5)
    for got, want in zip(grads(lp, ent), grads(lp_ref, ent_ref)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_lm_head_logprobs_gradient_of_logprobs_alone():
    """Only the log-probs in the loss (the entropy logged, not trained): the entropy's gradient arrives as None
    (no all-zero pass) and the gradients still equal the full-logits path's."""
    torch.manual_seed(1)
    h = torch.randn(2, 5, 8, requires_grad=True)
    w = torch.randn(13, 8, requires_grad=True)
    tokens = torch.randint(0, 13, (2, 5))
    lp, ent = lm_head_logprobs(h, w, tokens, chunk_size=3)
    got = torch.autograd.grad(lp.sum() + ent.detach().sum(), (h, w))
    want = torch.autograd.grad(token_logprobs(torch.nn.functional.linear(h, w), tokens).sum(), (h, w))
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("weight_dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_lm_head_logprobs_under_bf16_autocast_any_weight_dtype(weight_dtype):
    """Under bf16 autocast the head computes in bf16 whatever its own dtype (float16 weights used to meet
    float32 hidden states in the backward's matmul and crash); values and gradients within bf16 rounding of
    the float32 head."""
    torch.manual_seed(2)
    h = torch.randn(2, 6, 16, requires_grad=True)
    w32 = torch.randn(20, 16) * 0.3
    w = w32.to(weight_dtype).requires_grad_()
    tokens = torch.randint(0, 20, (2, 6))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lp, _ = lm_head_logprobs(h, w, tokens, chunk_size=4)
    g_h, g_w = torch.autograd.grad(lp.sum(), (h, w))
    assert g_w.dtype == weight_dtype and g_h.dtype == torch.float32
    lp_ref = token_logprobs(torch.nn.functional.linear(h, w32), tokens)
    torch.testing.assert_close(lp, lp_ref, rtol=0, atol=0.05)
    g_h_ref = torch.autograd.grad(lp_ref.sum(), h)[0]
    assert float((g_h - g_h_ref).norm() / g_h_ref.norm()) < 0.02


def test_lm_head_logprobs_rejects_bad_shapes():
    with pytest.raises(ValueError, match="hidden must be"):
        lm_head_logprobs(torch.zeros(2, 3), torch.zeros(4, 3), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="temperature"):
        lm_head_logprobs(torch.zeros(1, 2, 3), torch.zeros(4, 3), torch.zeros(1, 2, dtype=torch.long), 0.0)


def _model_and_batch(arch: str, lora: bool = False):
    tok = char_tokenizer()
    model = tiny_model(arch, len(tok))
    disable_dropout(model)
    if lora:
        from thinkrl.config import ModelConfig
        from thinkrl.core.lora import apply_lora

        model = apply_lora(model, ModelConfig(lora_r=4))
        for name, p in model.named_parameters():
            if "lora_B" in name:  # B = 0 at init would hide adapter mistakes: make it non-zero
                torch.nn.init.normal_(p, std=0.1)
    prompts = [tok(p)["input_ids"] for p in ("ab c=", "hello world 12 +", "x")]  # different lengths
    engine = HFEngine(model.get_base_model() if lora else model, tok)
    rollout = engine.generate(prompts, SamplingParams(n=3, max_new_tokens=6, seed=1)).to("cpu")
    batch = build_batch(rollout, torch.randn(9), tok.pad_token_id, rollout.completion_mask)
    return model, batch.rows(torch.tensor([0, 1, 4, 5, 6, 8]))  # groups of 2 rows, as a micro-batch may hold


def _logp_entropy_grads(model, batch, **kw):
    params = [p for p in model.parameters() if p.requires_grad]
    logp, ent = forward_logprobs(model, batch, 0.8, with_entropy=True, entropy_grad=True, **kw)
    loss = (logp * batch.mask).sum() + 0.1 * (ent * batch.mask).sum()
    return logp.detach() * batch.mask, ent.detach() * batch.mask, torch.autograd.grad(loss, params)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
@pytest.mark.parametrize("share_prompt", [False, True])
def test_fused_head_equals_logits_path(arch, share_prompt):
    """Same log-probs, entropy and gradients (of both) as the model's own logits, on 3 architectures."""
    model, batch = _model_and_batch(arch)
    assert split_lm_head(model) is not None, "the tiny test models have a plain linear head"
    plain = _logp_entropy_grads(model, batch, share_prompt=share_prompt)
    fused = _logp_entropy_grads(model, batch, share_prompt=share_prompt, fused_head=True)
    torch.testing.assert_close(fused[0], plain[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(fused[1], plain[1], rtol=0, atol=1e-5)
    for got, want in zip(fused[2], plain[2]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("share_prompt", [False, True])
def test_fused_head_with_lora_and_reference_mode(share_prompt):
    """Under PEFT: adapter gradients match, and with adapters disabled both paths give the base model."""
    pytest.importorskip("peft", reason="LoRA needs the optional peft package (pip install thinkrl[peft])")
    from thinkrl.core.lora import reference_mode

    model, batch = _model_and_batch("qwen2", lora=True)
    plain = _logp_entropy_grads(model, batch, share_prompt=share_prompt)
    fused = _logp_entropy_grads(model, batch, share_prompt=share_prompt, fused_head=True)
    torch.testing.assert_close(fused[0], plain[0], rtol=0, atol=1e-5)
    for got, want in zip(fused[2], plain[2]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    with torch.no_grad(), reference_mode(model):
        ref_plain, _ = forward_logprobs(model, batch, 0.8, share_prompt=share_prompt)
        ref_fused, _ = forward_logprobs(model, batch, 0.8, share_prompt=share_prompt, fused_head=True)
    torch.testing.assert_close(ref_fused, ref_plain, rtol=0, atol=1e-5)
    assert (ref_plain - plain[0]).abs().max() > 1e-3, "reference mode did not disable the adapters"


def test_split_lm_head_rejects_a_head_the_backbone_cannot_reproduce():
    """A model whose logits are changed after the head (as Cohere's logit_scale) falls back to its logits."""
    tok = char_tokenizer()
    model = tiny_model("llama", len(tok))
    forward = model.forward

    def scaled(*a, **k):
        out = forward(*a, **k)
        out.logits = 0.5 * out.logits
        return out

    model.forward = scaled
    assert split_lm_head(model) is None


@pytest.mark.parametrize("lora", [False, True])
def test_fused_adamw_matches_default(lora):
    """build_optimizer picks the fused kernel on CPU (LoRA adapters too) and steps like the for-loop AdamW."""
    from thinkrl.config import ModelConfig, TrainConfig
    from thinkrl.train.setup import build_optimizer

    if lora:
        pytest.importorskip("peft", reason="LoRA needs the optional peft package (pip install thinkrl[peft])")
    t = TrainConfig(lr=1e-2, weight_decay=0.1)
    models = []
    for _ in range(2):
        model = tiny_model("qwen2", 20)
        if lora:
            from thinkrl.core.lora import apply_lora

            torch.manual_seed(1)
            model = apply_lora(model, ModelConfig(lora_r=4))
        models.append(model)
    fast = build_optimizer([p for p in models[0].parameters() if p.requires_grad], t)
    slow = torch.optim.AdamW(
        [p for p in models[1].parameters() if p.requires_grad], lr=t.lr, weight_decay=0.1, foreach=False
    )
    assert fast.defaults["fused"] is True
    ids = torch.randint(0, 20, (2, 5))
    for _ in range(3):
        for model, opt in zip(models, (fast, slow)):
            opt.zero_grad()
            model(input_ids=ids, labels=ids).loss.backward()
            opt.step()
    for (name, a), (_, b) in zip(models[0].named_parameters(), models[1].named_parameters()):
        # 3 steps of lr 1e-2 move weights ~3e-2; Adam turns the rounding noise of a ~0 gradient (k_proj's bias
        # cannot change a softmax) into a full step, hence atol 2e-5 rather than float epsilon
        torch.testing.assert_close(a, b, rtol=1e-5, atol=2e-5, msg=name)


def test_trainer_fused_head_and_bf16_autocast(tmp_path):
    """One GRPO step: the fused LM head moves the weights exactly as the logits path; bf16 autocast trains
    and warns on CPU (its weights are not compared: Adam turns a flipped sign of a tiny gradient into a full
    step; its log-probs are, in the next test)."""
    results = {}
    for name, extra in (
        ("logits", ("train.fused_lm_head=false",)),
        ("fused", ()),
        ("bf16", ("train.autocast=bf16",)),
    ):
        tr = make_trainer(tmp_path / name, "train.steps=1", "algorithm.beta=0.01", *extra)
        if name == "bf16":
            with pytest.warns(UserWarning, match="autocast=bf16 on CPU"):
                history = tr.train()
            assert abs(history[-1]["train/logprob_mismatch"]) < 0.05  # bf16 trainer vs fp32 sampler
        else:
            tr.train()
        results[name] = params(tr.model)
    for k, v in results["logits"].items():
        torch.testing.assert_close(results["fused"][k], v, rtol=1e-4, atol=1e-5)
        assert torch.isfinite(results["bf16"][k]).all()
    assert any(not torch.equal(results["bf16"][k], v) for k, v in results["logits"].items())


def test_gradient_checkpointing_with_fused_head_gives_the_same_update(tmp_path):
    """Checkpointed decoder layers under the fused head (the backbone is called directly): the same step as
    without checkpointing. share_prompt is off under checkpointing (see train.share_prompt's help)."""
    results = []
    for ckpt in ("true", "false"):
        tr = make_trainer(
            tmp_path / ckpt, "train.steps=1", "algorithm.beta=0.01", f"model.gradient_checkpointing={ckpt}"
        )
        assert tr.share_prompt is (ckpt == "false")
        tr.train()
        results.append(params(tr.model))
    for k, v in results[0].items():
        torch.testing.assert_close(results[1][k], v, rtol=1e-4, atol=1e-5)


@pytest.mark.filterwarnings("ignore:train.autocast=bf16 on CPU")
@pytest.mark.parametrize("share_prompt", [False, True])
def test_bf16_autocast_close_to_fp32_on_both_head_paths(share_prompt):
    """Under bf16 autocast: log-probs and gradients within bf16 rounding of float32 on both head paths (the
    fused backward recomputes the tile logits in the forward's compute dtype and runs its gradient matmuls in
    bf16, as autocast's backward of the plain path's linear does)."""
    model, batch = _model_and_batch("llama")
    fp32 = _logp_entropy_grads(model, batch, share_prompt=share_prompt)

    def grad_error(run):
        diff = torch.cat([(a - b).flatten() for a, b in zip(run[2], fp32[2])])
        return float(diff.norm() / torch.cat([b.flatten() for b in fp32[2]]).norm())

    for fused in (False, True):
        run = _logp_entropy_grads(model, batch, share_prompt=share_prompt, autocast="bf16", fused_head=fused)
        torch.testing.assert_close(run[0], fp32[0], rtol=0, atol=0.01)
        assert 0 < grad_error(run) < 0.01, "bf16 gradients should differ from float32 by bf16 rounding only"


def test_autocast_option_is_validated(tmp_path):
    from thinkrl.config import ConfigError

    with pytest.raises(ConfigError, match="train.autocast='fp8'; valid: none, bf16"):
        make_cfg(tmp_path, "train.autocast=fp8")


def _bench_trl():
    """benchmarks/bench_trl.py as a module (benchmarks/ is not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_trl.py"
    spec = importlib.util.spec_from_file_location("bench_trl", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_flags_reach_both_workers_and_vocab_padding(tmp_path):
    """The CPU-side logic of benchmarks/gpu.sh: --device/--autocast/--thinkrl-set reach every worker and
    thinkrl's config; --vocab pads the tokenizer with EOS kept last (outside the model's vocabulary)."""
    from pathlib import Path

    from thinkrl.config import load_config

    bench = _bench_trl()
    args = bench.parse_args(
        ["--device", "cuda", "--autocast", "bf16", "--thinkrl-set", "train.fused_lm_head=false"]
    )
    for framework in ("thinkrl", "trl"):
        cmd = bench.worker_command(Path("py"), framework, tmp_path / "m", 64, args, tmp_path / "o")
        worker = bench.parse_args(cmd[2:])
        assert (worker.worker, worker.device, worker.autocast, worker.length) == (
            framework,
            "cuda",
            "bf16",
            64,
        )
        assert worker.thinkrl_set == ["train.fused_lm_head=false"]
    cfg = load_config(None, [*bench.thinkrl_overrides(worker), *worker.thinkrl_set])
    assert (cfg.train.device, cfg.train.autocast, cfg.train.fused_lm_head) == ("cuda", "bf16", False)
    tok = bench.build_tokenizer(300)
    assert len(tok) == 301 and tok.eos_token_id == 300
    assert tok.decode(tok("ab")["input_ids"]) == "ab"


def test_gpu_script_dry_run_runs_the_cuda_comparison():
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        ["bash", "benchmarks/gpu.sh"], cwd=root, capture_output=True, text=True, check=True,
        env={**os.environ, "DRY_RUN": "1", "VENV": "/nonexistent/venv"},
    ).stdout  # fmt: skip
    assert "pip install -q torch" in out
    line = next(ln for ln in out.splitlines() if "bench_trl.py" in ln)
    for flag in (
        "--device cuda",
        "--autocast bf16",
        "4M/64,4M/256,30M/64,30M/256",
        "TRL_PYTHON=/nonexistent",
    ):
        assert flag in line, flag

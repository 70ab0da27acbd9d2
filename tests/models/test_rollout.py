"""The in-loop sampler against a naive reference: same tokens under a seed, the model's distribution, LoRA, modes.

`_reference` is the sampler as it was before it shared prefills and stayed on the device: one
forward per step over the whole batch, full-vocabulary prefill logits, sampling on the CPU, a
Python loop over rows. The fast sampler must draw exactly its tokens and weights from the same seed.
"""
import copy

import pytest
import torch
from scipy.stats import chi2

from prefdistill.config.schema import ModelConfig
from prefdistill.losses.divergences import log_mixture
from prefdistill.models.hf import LocalLM
from prefdistill.models.logprobs import cache_kwarg, output_cache
from prefdistill.models.rollout import rollout, sampling_seconds

PROMPTS = ["Summarize : the model learns data", "Summarize : data", "Summarize : teacher student"]


@pytest.fixture(scope="module")
def student(tiny_assets):
    return LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["student"])))


@pytest.fixture(scope="module")
def teacher(tiny_assets):
    return LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["teacher"])))


def _left_padded(lm, prompts):
    ids = [lm.prompt_ids(p) for p in prompts]
    width, pad = max(len(x) for x in ids), lm.tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids])
    mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
    return input_ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


@torch.no_grad()
def _reference(policy, prompts, max_new_tokens, temperature=1.0, mix=None, mix_weight=0.0):
    """The old sampler, step by step: (completions, importance)."""
    lms = [policy] + ([mix] if mix is not None and mix_weight > 0 else [])
    state = [list(_left_padded(lm, prompts)) + [None] for lm in lms]  # input_ids, mask, positions, cache
    eos, pad, n = policy.tokenizer.eos_token_id, policy.tokenizer.pad_token_id, len(prompts)
    finished, tokens, weights = torch.zeros(n, dtype=torch.bool), [[] for _ in prompts], [[] for _ in prompts]
    for _ in range(max_new_tokens):
        logits = []
        for lm, s in zip(lms, state):
            out = lm.model(input_ids=s[0], attention_mask=s[1], position_ids=s[2], use_cache=True, **{cache_kwarg(lm.model): s[3]})
            s[3] = output_cache(out)
            logits.append(out.logits[:, -1].float().cpu())
        log_q = torch.log_softmax(logits[0] / temperature, -1)
        log_sample = log_q
        if len(lms) > 1:
            log_p = torch.log_softmax(logits[1][:, :log_q.shape[-1]] / temperature, -1)
            log_sample = log_mixture(log_p, log_q[:, :log_p.shape[-1]], mix_weight)
        nxt = torch.multinomial(log_sample.exp(), 1).squeeze(-1)
        w = (log_q.gather(-1, nxt[:, None]) - log_sample.gather(-1, nxt[:, None])).squeeze(-1).exp()
        for i in range(n):
            if not finished[i]:
                tokens[i].append(int(nxt[i]))
                weights[i].append(float(w[i]))
        finished |= nxt == eos
        if bool(finished.all()):
            break
        fed = torch.where(finished, torch.full_like(nxt, pad), nxt)
        for s in state:
            s[0], s[2] = fed[:, None], s[2][:, -1:] + 1
            s[1] = torch.cat([s[1], torch.ones_like(s[0])], dim=-1)
    return tokens, weights


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_same_tokens_as_the_reference_under_a_seed(student, temperature):
    for seed in range(4):
        torch.manual_seed(seed)
        expected = _reference(student, PROMPTS, 8, temperature)
        torch.manual_seed(seed)
        out = rollout(student, PROMPTS, max_new_tokens=8, temperature=temperature)
        assert (out.completions, out.importance) == expected


def test_same_tokens_and_weights_as_the_reference_with_a_teacher_mixed_in(student, teacher):
    for seed in range(4):
        torch.manual_seed(seed)
        expected = _reference(student, PROMPTS, 8, 1.0, teacher, 0.3)
        torch.manual_seed(seed)
        out = rollout(student, PROMPTS, max_new_tokens=8, mix=teacher, mix_weight=0.3)
        assert out.completions == expected[0]
        assert [len(w) for w in out.importance] == [len(w) for w in expected[1]]
        assert sum(out.importance, []) == pytest.approx(sum(expected[1], []), rel=1e-6)


def test_shared_prefill_draws_what_repeated_prompts_draw(student):
    """n samples per prompt from one prefill each = the reference on the prompts repeated n times, same seed."""
    for seed in range(3):
        torch.manual_seed(seed)
        expected = _reference(student, [p for p in PROMPTS for _ in range(3)], 8)
        torch.manual_seed(seed)
        assert rollout(student, PROMPTS, max_new_tokens=8, n=3).completions == expected[0]


def _chi_square_p_value(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson's χ² test of counts (V,) against probabilities (V,), bins expecting < 5 pooled into one."""
    expected = probs.double() * counts.sum()
    small = expected < 5
    obs = torch.cat([counts[~small].double(), counts[small].double().sum()[None]])
    exp = torch.cat([expected[~small], expected[small].sum()[None]])
    keep = exp > 0
    stat = float(((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum())
    return float(chi2.sf(stat, int(keep.sum()) - 1))


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_first_and_second_tokens_follow_the_models_softmax(student, temperature):
    """4000 samples of one prompt: the first token's counts match softmax(logits / T); so do the second's after a fixed first."""
    prompt, draws = PROMPTS[1], 4000
    torch.manual_seed(0)
    out = rollout(student, [prompt], max_new_tokens=2, temperature=temperature, n=draws)
    ids = torch.tensor(student.prompt_ids(prompt))[None]
    with torch.no_grad():
        probs = torch.softmax(student.model(input_ids=ids).logits[0, -1].float() / temperature, -1)  # (V,)
    first = torch.tensor([c[0] for c in out.completions])
    assert _chi_square_p_value(torch.bincount(first, minlength=probs.numel()), probs) > 1e-3
    top = int(torch.mode(first).values)
    seconds = torch.tensor([c[1] for c in out.completions if c[0] == top and len(c) > 1])
    with torch.no_grad():
        after = torch.softmax(student.model(input_ids=torch.cat([ids, torch.tensor([[top]])], 1)).logits[0, -1].float() / temperature, -1)
    assert len(seconds) > 100 and _chi_square_p_value(torch.bincount(seconds, minlength=after.numel()), after) > 1e-3


def test_rows_stop_at_their_first_eos(student):
    """A row ends with its first EOS and holds nothing after it; a row without EOS has max_new_tokens tokens."""
    eos = student.tokenizer.eos_token_id
    model = copy.deepcopy(student.model)
    boost = torch.zeros(model.config.vocab_size)
    boost[eos] = 3.0  # EOS likely at every step, not certain: some rows end early, some run to the limit
    model.lm_head.register_forward_hook(lambda module, args, out: out + boost)
    torch.manual_seed(0)
    out = rollout(LocalLM(model, student.tokenizer, name="eos-heavy"), PROMPTS, max_new_tokens=6, n=50)
    lengths = [len(c) for c in out.completions]
    assert min(lengths) < 6 and max(lengths) == 6 and len(set(lengths)) > 2
    for ids, w in zip(out.completions, out.importance):
        assert eos not in ids[:-1] and len(w) == len(ids) and all(x == 1.0 for x in w)
        assert len(ids) == 6 or ids[-1] == eos


@pytest.fixture()
def lora_student(tiny_assets):
    lm = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["student"])), for_training=True)
    from peft import LoraConfig, get_peft_model

    lm.model = get_peft_model(lm.model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.5, target_modules="all-linear", task_type="CAUSAL_LM"))
    lm.model.train()
    return lm


def test_samples_come_from_the_lora_weights_of_this_step(lora_student):
    """Change the adapter: the same seed now draws what the merged model of the new weights draws."""
    def draw(lm):
        torch.manual_seed(5)
        return rollout(lm, PROMPTS, max_new_tokens=8, n=4).completions

    before = draw(lora_student)
    with torch.no_grad():
        for name, p in lora_student.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 2.0, generator=torch.Generator().manual_seed(len(name)))
    after = draw(lora_student)
    merged = LocalLM(copy.deepcopy(lora_student.model).merge_and_unload().eval(), lora_student.tokenizer, name="merged")
    assert after != before
    assert after == draw(merged)


def test_sampling_turns_dropout_off_and_restores_every_modules_mode(lora_student):
    """In train mode with LoRA dropout 0.5 the draws equal eval mode's (dropout is off while sampling), and each
    module's own mode comes back, a dropout the caller had switched off included."""
    model = lora_student.model
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and all(m.training for m in dropouts)
    dropouts[0].eval()
    modes = {name: m.training for name, m in model.named_modules()}
    torch.manual_seed(3)
    in_train_mode = rollout(lora_student, PROMPTS, max_new_tokens=8).completions
    assert {name: m.training for name, m in model.named_modules()} == modes
    model.eval()
    torch.manual_seed(3)
    assert rollout(lora_student, PROMPTS, max_new_tokens=8).completions == in_train_mode


def test_sampling_time_is_counted(student):
    before = sampling_seconds()
    rollout(student, PROMPTS, max_new_tokens=2)
    assert sampling_seconds() > before

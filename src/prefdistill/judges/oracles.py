"""Preference oracles: how often does y beat y' for prompt x.

    oracle = BradleyTerryOracle(judge)                 # σ((r(y) − r(y'))/τ) over any judge's scores
    oracle = BradleyTerryOracle(TeacherScorer(teacher), temperature=0.3)   # r: the teacher's mean per-token log-prob
    P = oracle.win_matrices(prompts, [[y1, y2, y3], ...])[0]   # (K, K): P[i, j] = P(y_i ≻ y_j | x)
    oracle.comparisons, oracle.queries                 # what it cost

Every oracle answers P(y ≻ y') + P(y' ≻ y) = 1 with ½ on the diagonal. Answers are cached
by (prompt, y, y'), so asking again is free and not counted. Two counts are kept:
`comparisons` (pairwise preferences answered, the sample-complexity currency of WIND /
BOND) and `queries` (calls to the model behind the oracle: texts scored by a reward
model or by the teacher, or requests sent to an LLM judge).
"""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from prefdistill.models.api_client import APIClient


class PreferenceOracle:
    name = "oracle"

    def __init__(self):
        self.comparisons = 0
        self.queries = 0

    def win_matrices(self, prompts: list[str], completions: list[list[str]]) -> list[np.ndarray]:
        """One (K, K) matrix per prompt over that prompt's completions."""
        raise NotImplementedError

    @staticmethod
    def win_rates(matrix: np.ndarray) -> np.ndarray:
        """P̂_i = mean over j ≠ i of P(y_i ≻ y_j): each sample's empirical win rate against the others."""
        k = matrix.shape[0]
        if k < 2:
            raise ValueError("win rates need at least two completions per prompt")
        return (matrix.sum(1) - np.diag(matrix)) / (k - 1)

    def counts(self) -> dict[str, int]:
        return {"comparisons": self.comparisons, "queries": self.queries}


class BradleyTerryOracle(PreferenceOracle):
    """P(y ≻ y') = σ((r(y) − r(y'))/τ) with r any scorer's score: a judge's (a reward model, the trained judge, a
    callable), or the teacher's length-normalised log-likelihood (`TeacherScorer`)."""

    def __init__(self, judge, *, temperature: float = 1.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"oracle temperature must be positive, got {temperature}")
        self.judge, self.temperature = judge, temperature
        self.name = f"bradley-terry({getattr(judge, 'name', 'judge')})"
        self._scores: dict[tuple[str, str], float] = {}
        self._seen_pairs: set[tuple[str, str, str]] = set()

    def scores(self, prompts: list[str], texts: list[str]) -> list[float]:
        missing = list(dict.fromkeys((p, t) for p, t in zip(prompts, texts) if (p, t) not in self._scores))
        if missing:
            values = self.judge.score([p for p, _ in missing], [t for _, t in missing])
            self._scores.update(zip(missing, values))
            self.queries += len(missing)
        return [self._scores[(p, t)] for p, t in zip(prompts, texts)]

    def win_matrices(self, prompts: list[str], completions: list[list[str]]) -> list[np.ndarray]:
        flat = self.scores([p for p, c in zip(prompts, completions) for _ in c], [t for c in completions for t in c])
        out, at = [], 0
        for prompt, group in zip(prompts, completions):
            r = np.asarray(flat[at:at + len(group)], dtype=np.float64)
            at += len(group)
            # σ(z) = (1 + tanh(z/2))/2: no overflow at small τ, and odd in z, so P + Pᵀ = 1 and ½ on the diagonal
            out.append(0.5 * (1.0 + np.tanh((r[:, None] - r[None, :]) / (2.0 * self.temperature))))
            self._count(prompt, group)
        return out

    def _count(self, prompt: str, group: list[str]) -> None:
        for i, a in enumerate(group):
            for b in group[i + 1:]:
                key = (prompt, min(a, b), max(a, b))
                if a != b and key not in self._seen_pairs:
                    self._seen_pairs.add(key)
                    self.comparisons += 1


class TeacherScorer:
    """The teacher as the Bradley–Terry score of `oracle.kind: teacher`: r(y) = log p(y|x)/|y|, its mean per-token log-prob.

    Length-normalised, so a longer completion is not preferred or penalised for its length alone (docs/derivations.md,
    "The teacher as preference oracle"). `lm` is any model that scores text (`LanguageModel.score`): local weights, a
    vLLM engine, or a server whose echo passed the probe.
    """

    def __init__(self, lm):
        self.lm = lm
        self.name = f"teacher({getattr(lm, 'name', 'lm')})"

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        return [float(v) for v in self.lm.score(prompts, responses, normalize=True)]


class MatrixOracle(PreferenceOracle):
    """An exact preference matrix over a finite set of actions (the bandit lab): completions are action ids."""

    def __init__(self, matrix: np.ndarray):
        super().__init__()
        m = np.asarray(matrix, dtype=np.float64)
        if m.ndim != 3 or m.shape[1] != m.shape[2] or not np.allclose(m + m.transpose(0, 2, 1), 1.0):
            raise ValueError("a preference matrix must have shape (contexts, actions, actions) with P + Pᵀ = 1")
        self.matrix = m
        self.name = "matrix"

    def win_matrices(self, prompts, completions) -> list[np.ndarray]:
        out = []
        for x, group in zip(prompts, completions):
            idx = np.asarray(group, dtype=np.int64)
            out.append(self.matrix[int(x)][np.ix_(idx, idx)])
            self.comparisons += len(idx) * (len(idx) - 1) // 2
            self.queries += len(idx) * (len(idx) - 1) // 2
        return out


JUDGE_TEMPLATE = """You compare two responses to the same request and pick the better one.

Request:
{prompt}

Response A:
{a}

Response B:
{b}

Which response is better? Answer with a single letter: A or B."""


class PairwiseAPIOracle(PreferenceOracle):
    """An LLM judge behind an OpenAI-compatible /v1/chat/completions endpoint, asked "A or B?".

    Each unordered pair is asked in both orders (y as A, then y as B), which cancels the
    judge's position bias: P(y ≻ y') = ½·[A chosen in (y, y')] + ½·[B chosen in (y', y)].
    An answer that names neither letter counts as a tie (½) and is counted in `unparsed`.
    Requests run concurrently (`max_workers`) through `prefdistill.models.api_client` (deadline,
    retries with backoff, Retry-After); a request that still fails stops the run.
    """

    def __init__(self, client: APIClient, model: str, *, max_workers: int = 8, template: str = JUDGE_TEMPLATE):
        super().__init__()
        self.client, self.model, self.max_workers, self.template = client, model, max_workers, template
        self.name = f"pairwise-api({model})"
        self.unparsed = 0
        self._answers: dict[tuple[str, str, str], float] = {}  # (prompt, A, B) -> 1 if A chosen, 0 if B, ½ if neither

    def _ask(self, prompt: str, a: str, b: str) -> float:
        reply = self.client.post("/chat/completions", {
            "model": self.model, "temperature": 0, "max_tokens": 2,
            "messages": [{"role": "user", "content": self.template.format(prompt=prompt, a=a, b=b)}]})
        try:
            text = reply["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            text = ""
        letter = re.search(r"\b([AB])\b", text.strip().upper())
        if letter is None:
            self.unparsed += 1
            return 0.5
        return 1.0 if letter.group(1) == "A" else 0.0

    def win_matrices(self, prompts: list[str], completions: list[list[str]]) -> list[np.ndarray]:
        wanted = []
        for prompt, group in zip(prompts, completions):
            for i, a in enumerate(group):
                for b in group[i + 1:]:
                    if a != b:
                        wanted += [(prompt, a, b), (prompt, b, a)]
        todo = list(dict.fromkeys(k for k in wanted if k not in self._answers))
        if todo:
            with ThreadPoolExecutor(max_workers=self.max_workers) as pool:
                for key, answer in zip(todo, pool.map(lambda k: self._ask(*k), todo)):
                    self._answers[key] = answer
            self.queries += len(todo)
            self.comparisons += len(todo) // 2
        out = []
        for prompt, group in zip(prompts, completions):
            k = len(group)
            m = np.full((k, k), 0.5)
            for i in range(k):
                for j in range(k):
                    if i != j and group[i] != group[j]:
                        m[i, j] = 0.5 * self._answers[(prompt, group[i], group[j])] + 0.5 * (1.0 - self._answers[(prompt, group[j], group[i])])
            out.append(m)
        return out


def build_oracle(cfg, judge_factory, teacher_factory=None) -> PreferenceOracle:
    """The oracle `cfg` (an OracleConfig, checked at config time) asks for; `judge_factory()` builds the training judge,
    `teacher_factory()` gives the scoring teacher (kind teacher). Only the one the kind names is called."""
    if cfg.kind == "judge":
        return BradleyTerryOracle(judge_factory(), temperature=cfg.temperature)
    if cfg.kind == "teacher":
        if teacher_factory is None:
            raise ValueError("oracle.kind teacher: no teacher was given to score with")
        return BradleyTerryOracle(TeacherScorer(teacher_factory()), temperature=cfg.temperature)
    api = cfg.api
    client = APIClient(api.base_url, api_key_env=api.api_key_env, timeout_s=api.timeout_s, max_retries=api.max_retries,
                       backoff_s=api.backoff_s, backoff_max_s=api.backoff_max_s)
    return PairwiseAPIOracle(client, cfg.model, max_workers=api.max_concurrency)

"""A teacher behind an OpenAI-compatible API: text in, text out, log-probs where offered.

    teacher:
      backend: openai
      name_or_path: gpt-4o-mini              # the model's name on the server
      api: {base_url: "https://api.openai.com/v1", api_key_env: OPENAI_API_KEY, endpoint: chat}

Each completion is one request (servers differ on `n`), sent by `max_concurrency`
worker threads through `prefdistill.models.api_client` (deadline, retries, backoff). A prompt
whose request still fails, or whose reply holds no usable text, comes back as a
`GenerationFailure` instead of crashing the run: the caller records it with its prompt.

Log-probabilities of given text (`score`, used by DPKD) need `/v1/completions` with
`echo` and `logprobs`, asked at temperature 1; `can_score` probes the server once
(`api_topk.echo_probe_fault`) and, when the server does not give them right, says why in
`score_unavailable`.

Top-k log-probs come two ways (`prefdistill.models.api_topk` reads them):

    lm.completion_topk(prompts, completion_ids, 20, tokenizer=student_tok, temperature=1.0)  # of given text (echo)
    lm.generate_topk(prompts, sampling, 20, seed=0)     # the server's own samples, top-k at each of their tokens

The first passes the same probe as `score` first (`require_topk_of_text` raises its reason, e.g.
before training from a served teacher starts), so llama-cpp-python 0.3.x's shifted echo is
refused; the second has its own probe, `generated_topk_usable`: a server may get one right and
not the other. `completion_topk(..., token_logps=True)` adds each given token's own log-prob.
"""
from __future__ import annotations

import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from prefdistill.progress import bar as progress_bar

from prefdistill.config.schema import ModelConfig, SamplingConfig
from prefdistill.models.api_client import APIClient, MalformedReply, RequestFailed
from prefdistill.models.api_aligned import AlignedCompletion, aligned_completion, aligned_echoed_topk
from prefdistill.models.api_topk import (ECHO_TEMPERATURE, PROBE_COMPLETION, PROBE_GUESS, PROBE_GUESS_PROMPT,  # noqa: F401
                                         PROBE_PROMPT, PROBE_TOPK, Misaligned, completion_pieces, echo_probe_fault,
                                         echoed_topk, generated_topk, piece_ids, top1_misses)
from prefdistill.models.backends import Capabilities, register_backend
from prefdistill.models.common import TopkFailure, plain_prompt


@dataclass
class GenerationFailure:
    """A prompt the backend could not answer: why, and after how many attempts."""

    kind: str
    error: str
    attempts: int



class APILM:
    """The `openai` backend: a text-only model, or a scoring one when the server echoes log-probs."""

    one_call = True  # seeds come from the prompt text, so callers may send every prompt at once

    def __init__(self, client: APIClient, model: str, *, endpoint: str = "chat", max_concurrency: int = 8,
                 logprobs: str = "auto"):
        self.client, self.name, self.endpoint = client, model, endpoint
        self.max_concurrency, self.logprobs = max_concurrency, logprobs
        self.score_unavailable: str | None = None if logprobs != "off" else "api.logprobs is off"
        self._can_score: bool | None = False if logprobs == "off" else None
        self.generated_topk_unavailable: str | None = None
        self._generated_topk_ok: bool | None = None

    @property
    def stats(self) -> dict[str, int]:
        """Requests sent, retries, failures and each kind of fault seen, since this model was made."""
        return dict(self.client.stats)

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> "APILM":
        a = cfg.api
        if not a.base_url:
            raise ValueError(f"{cfg.name_or_path}: backend openai needs api.base_url (e.g. http://127.0.0.1:8000/v1)")
        client = APIClient(a.base_url, api_key_env=a.api_key_env, timeout_s=a.timeout_s, max_retries=a.max_retries,
                           backoff_s=a.backoff_s, backoff_max_s=a.backoff_max_s)
        return cls(client, cfg.name_or_path, endpoint=a.endpoint, max_concurrency=a.max_concurrency, logprobs=a.logprobs)

    # ------------------------------------------------------------------ generation
    def _request(self, prompt: str, sampling: SamplingConfig, seed: int, top_k: int | None = None) -> dict:
        body = {"model": self.name, "max_tokens": sampling.max_new_tokens, "seed": seed,
                "temperature": sampling.temperature if sampling.do_sample else 0.0}
        if sampling.do_sample:
            body["top_p"] = sampling.top_p
        if self.endpoint == "chat":
            if top_k is not None:
                body.update(logprobs=True, top_logprobs=top_k)
            return {**body, "messages": [{"role": "user", "content": prompt}]}
        if top_k is not None:
            body["logprobs"] = top_k
        return {**body, "prompt": plain_prompt(prompt)}

    @property
    def _path(self) -> str:
        return "/chat/completions" if self.endpoint == "chat" else "/completions"

    def _one(self, prompt: str, sampling: SamplingConfig, seed: int) -> str:
        """One completion; a reply without usable text is retried like a transport fault."""
        return self.client.post(self._path, self._request(prompt, sampling, seed), parse=self._text)

    def _one_topk(self, prompt: str, sampling: SamplingConfig, seed: int, k: int) -> tuple:
        """One completion with the top-k log-probs of each of its tokens (`api_topk.generated_topk`)."""
        return self.client.post(self._path, self._request(prompt, sampling, seed, top_k=k),
                                parse=lambda reply: generated_topk(reply, self.endpoint))

    def _text(self, reply: dict) -> str:
        try:
            choice = reply["choices"][0]
            text = choice["message"]["content"] if self.endpoint == "chat" else choice["text"]
        except (KeyError, IndexError, TypeError):
            raise MalformedReply(f"reply has no choices[0].{'message.content' if self.endpoint == 'chat' else 'text'}: "
                             f"{str(reply)[:200]}") from None
        if not isinstance(text, str):
            raise MalformedReply(f"reply text is {type(text).__name__}, not a string")
        if not text.strip():
            raise MalformedReply("empty completion", kind="empty")
        return text.strip()

    def generate(self, prompts: list[str], sampling: SamplingConfig, *, seed: int, desc: str | None = None,
                 on_result=None) -> list:
        """`num_samples` completions per prompt, or a GenerationFailure for a prompt that could not be answered.

        Request k of a prompt carries a seed made from `seed`, the prompt's text and k, so
        servers that honour `seed` give the same samples whatever else is in the call.
        """
        return self._each_sample(prompts, sampling, seed, self._one, desc=desc, on_result=on_result)

    def generate_topk(self, prompts: list[str], sampling: SamplingConfig, k: int, *, seed: int, desc: str | None = None,
                      on_result=None) -> list:
        """Per prompt, `num_samples` of (text, [(token, {token text: log-prob, ...}) per generated token]), or a
        GenerationFailure; one request per sample returns the sample and the top-k at each of its positions.

        Seeds as in `generate`. The texts are as the server sent them (unstripped, so the tokens
        spell them). Check `generated_topk_usable` before trusting the log-probs.
        """
        fetch = lambda prompt, s, request_seed: self._one_topk(prompt, s, request_seed, k)  # noqa: E731
        return self._each_sample(prompts, sampling, seed, fetch, desc=desc, on_result=on_result)

    def _each_sample(self, prompts: list[str], sampling: SamplingConfig, seed: int, fetch, *, desc: str | None,
                     on_result) -> list:
        """fetch(prompt, sampling, seed) for every sample of every prompt on the worker threads; failures are values."""
        n = sampling.num_samples
        results: list = [None] * len(prompts)
        pending = [[None] * n for _ in prompts]
        left = [n] * len(prompts)
        lock = threading.Lock()
        bar = progress_bar(total=len(prompts), desc=desc or f"generate {self.name}", unit="prompt", disable=desc == "")

        def work(i: int, k: int) -> None:
            try:
                out = fetch(prompts[i], sampling, request_seed(seed, prompts[i], k))
            except RequestFailed as e:
                out = GenerationFailure(e.kind, str(e), e.attempts)
            with lock:
                pending[i][k] = out
                left[i] -= 1
                if left[i]:
                    return
                failed = [x for x in pending[i] if isinstance(x, GenerationFailure)]
                results[i] = failed[0] if failed else list(pending[i])
                if on_result is not None:
                    on_result(i, results[i])
                bar.update(1)

        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            for future in [pool.submit(work, i, k) for i in range(len(prompts)) for k in range(n)]:
                future.result()  # re-raise a bug in `work` or `on_result`; request failures are values
        bar.close()
        return results

    # ------------------------------------------------------------------ scoring
    @property
    def can_score(self) -> bool:
        """Whether the server returns usable log-probs of given text; probed once (api.logprobs: auto).

        The probe echoes two texts at temperature 1 with their top-k (`api_topk.echo_probe_fault`).
        An obvious continuation (counting): any language model puts it near certainty, so a low
        score means the server's echoed log-probs are wrong, not the model (llama-cpp-python 0.3.x
        scores each echoed token under the distribution of the *next* position). Then a colour
        picked at random, where any model is unsure: a near one-hot top-k there means log-probs
        tempered below 1 (or greedy). Every top-k list must be sorted, sum to at most 1 and agree
        with the scored token's own log-prob. A server that fails counts as text-only.
        """
        if self._can_score is None:
            try:
                for prompt, completion, guess in ((PROBE_PROMPT, PROBE_COMPLETION, False), (PROBE_GUESS_PROMPT, PROBE_GUESS, True)):
                    reply, start, end = self._echo(prompt, completion, PROBE_TOPK)
                    fault = echo_probe_fault(reply, start, end, guess=guess)
                    if fault:
                        raise MalformedReply(fault)
                self._can_score = True
            except (RequestFailed, MalformedReply) as e:
                if self.logprobs == "on":
                    raise ValueError(f"{self.name}: api.logprobs is 'on' but the server gave no usable log-probs of given "
                                     f"text: {e}") from e
                self._can_score, self.score_unavailable = False, f"the server gave no usable log-probs of given text: {e}"
        return self._can_score

    def score(self, prompts: list[str], completions: list[str], *, normalize: bool = False) -> list[float]:
        """log p(completion | prompt) summed (or averaged per token) in the server's own tokenisation."""
        if not self.can_score:
            raise ValueError(f"{self.name} cannot score text: {self.score_unavailable}")
        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            per_row = list(pool.map(lambda pc: self._echo_logps([pc[0]], [pc[1]])[0], zip(prompts, completions)))
        return [sum(lp) / max(len(lp), 1) if normalize else sum(lp) for lp in per_row]

    # ------------------------------------------------------------------ top-k
    topk_by_offset = True  # completion_topk(aligned=True) reads a server of another tokenizer by character offset

    def completion_topk(self, prompts: list[str], completions: list[list[int]], k: int, *, tokenizer,
                        temperature: float = 1.0, token_logps: bool = False, aligned: bool | None = False) -> list:
        """The server's top-k at each of the student's completion tokens: per row ids (n, k) and log-probs (n, k)
        (and, with `token_logps`, each token's own log-prob (n,), from the same reply's `token_logprobs`).

        One /v1/completions request per row: echo, logprobs=k, max_tokens=1, temperature 1, on
        plain_prompt(prompt) + the completion as the student's `tokenizer` decodes it. The server's
        tokens must be the student's (`api_topk.echoed_topk` checks it): a row whose tokens differ is
        a `TopkFailure` naming the row and the first token that differs, for the caller to record and
        leave out. Entries whose text no single id decodes to are dropped and their slots padded with
        (0, -inf). Refused unless the echo
        passes `can_score`'s probe (`require_topk_of_text`), and at a temperature other than 1: a
        server's log-probs are the model's distribution at temperature 1, and tempering needs the
        whole distribution.

        aligned True: the server tokenises otherwise (a teacher of another tokenizer): its top-k is
        read at the student positions whose prefix is also the server's (`api_aligned.aligned_echoed_topk`;
        other positions all padding), and with `token_logps` each row is (ids, log-probs, span
        log-probs (n,), spans): the teacher's log-probability of each span of shared characters.
        None: each row read as with False where the server's tokens are the student's, else (the same
        reply) as with True; no row fails for tokens that do not line up.
        """
        if temperature != 1.0:
            raise ValueError(f"{self.name}: a server's top-k log-probs are the model's distribution at temperature 1; "
                             f"temperature {temperature:g} needs a local (backend: hf) teacher")
        self.require_topk_of_text()
        read = aligned_completion if aligned else completion_pieces
        pieces, texts = piece_ids(tokenizer), [read(tokenizer, ids) for ids in completions]
        fallback = (lambda i: aligned_completion(tokenizer, completions[i])) if aligned is None else None
        fetch = lambda i: self._echo_topk(i, prompts[i], texts[i], k, pieces, len(tokenizer), token_logps,  # noqa: E731
                                          fallback and fallback(i))
        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            return list(pool.map(fetch, range(len(prompts))))

    def require_topk_of_text(self) -> None:
        """Raise, with the probe's reason, when the server's echoed log-probs of given text fail `can_score`'s probe."""
        try:
            usable, why = self.can_score, self.score_unavailable
        except ValueError as e:  # api.logprobs: on, and the probe failed
            usable, why = False, str(e)
        if not usable:
            raise ValueError(f"{self.name}: echoed top-k log-probs of given text are refused: {why}. The top-k of the "
                             "server's own generated tokens (generate_topk) may still be usable: see generated_topk_usable. "
                             "A local (backend: hf) or vLLM (backend: vllm) teacher gives the top-k of given text.")

    def _echo_topk(self, i: int, prompt: str, completion: tuple, k: int, pieces: dict[str, int], vocab: int,
                   token_logps: bool = False, fallback: AlignedCompletion | None = None):
        """Row i's top-k from one echo request; completion: (text, spans) of `api_topk.completion_pieces`, or an
        `api_aligned.AlignedCompletion` (read by offset, the server tokenising otherwise). With `fallback` (the same
        completion aligned), a reply whose tokens are not the student's is read by offset instead of failing."""
        reply, start, _ = self._echo(prompt, completion[0], k)
        read = aligned_echoed_topk if isinstance(completion, AlignedCompletion) else echoed_topk
        where = f"row {i} ({prompt[:40]!r}...)"
        try:
            return read(reply, start, completion, pieces, k, vocab, row=where, token_logps=token_logps)
        except Misaligned as e:
            if fallback is not None:  # the reply's text after the aligned text (an EOS spelled out) reads as generated
                return aligned_echoed_topk(reply, start, fallback, pieces, k, vocab, row=where, token_logps=token_logps)
            return TopkFailure(f"{e} (distill.params.vocabulary: auto reads such a row by character offset)")

    @property
    def generated_topk_usable(self) -> bool:
        """Whether the top-k log-probs the server gives for its own generated tokens are right; probed once.

        Decoding greedily (temperature 0) from PROBE_PROMPT, every generated token must be the
        most likely entry of its own position's top-k. A server that reports each token under
        the next position's distribution (as llama-cpp-python 0.3.x does for echoed text) fails.
        Why it failed is in `generated_topk_unavailable`.
        """
        if self._generated_topk_ok is None:
            greedy = SamplingConfig(max_new_tokens=PROBE_TOPK, do_sample=False, num_samples=1)
            (out,) = self.generate_topk([PROBE_PROMPT], greedy, PROBE_TOPK, seed=0, desc="")
            if isinstance(out, GenerationFailure):
                why = f"the probe request failed ({out.kind}): {out.error}"
            else:
                tokens = out[0][1]
                misses = top1_misses(tokens)
                why = (f"greedy tokens {[tokens[t][0] for t in misses]} at positions {misses} of {len(tokens)} are not the "
                       "most likely entries of their own top-k (the server reports log-probs of another position)"
                       if misses else None)
            self._generated_topk_ok, self.generated_topk_unavailable = why is None, why
        return self._generated_topk_ok

    def _echo(self, prompt: str, completion: str, k: int) -> tuple[dict, int, int]:
        """(reply, start, end): one /v1/completions echo of plain_prompt(prompt) + completion with the top-k log-probs of
        each token, at ECHO_TEMPERATURE; the completion is the reply's text[start:end] (the one generated token is not)."""
        head = plain_prompt(prompt)
        reply = self.client.post("/completions", {"model": self.name, "prompt": head + completion, "max_tokens": 1,
                                                  "echo": True, "logprobs": k, "temperature": ECHO_TEMPERATURE})
        return reply, len(head), len(head) + len(completion)

    def _echo_logps(self, prompts: list[str], completions: list[str]) -> list[list[float]]:
        """Per-token log-probs of each completion, from /v1/completions with echo (no new tokens)."""
        return [completion_token_logps(*self._echo(prompt, completion, 1)) for prompt, completion in zip(prompts, completions)]


def request_seed(seed: int, prompt: str, k: int) -> int:
    return (seed * 1_000_003 + zlib.crc32(prompt.encode("utf-8")) * 31 + k) % 2**31


def completion_token_logps(reply: dict, start: int, end: int) -> list[float]:
    """Log-probs of the echoed tokens that begin inside text[start:end] (the completion's characters).

    A token straddling the prompt/completion border belongs to the completion when it
    ends past `start`; tokens from `end` on were generated, not echoed, and are left out.
    """
    try:
        lp = reply["choices"][0]["logprobs"]
        tokens, logps, offsets = lp["tokens"], lp["token_logprobs"], lp["text_offset"]
    except (KeyError, IndexError, TypeError):
        raise MalformedReply("reply has no choices[0].logprobs with tokens, token_logprobs and text_offset") from None
    if not (len(tokens) == len(logps) == len(offsets)):
        raise MalformedReply("logprobs lists differ in length")
    picked = [float(x) for t, x, o in zip(tokens, logps, offsets) if o < end and o + len(t) > start and x is not None]
    if end > start and not picked:
        raise MalformedReply("no echoed log-probs for the completion's tokens")
    return picked


def load(cfg: ModelConfig, *, checkpoint=None, for_training: bool = False) -> APILM:
    """The registered loader: a model behind an API is used as it is served, never fine-tuned here."""
    if for_training or checkpoint is not None:
        raise ValueError(f"{cfg.name_or_path}: a model behind an API (backend: openai) cannot be fine-tuned here; "
                         "set sft.teacher.enabled=false and use it as the teacher")
    return APILM.from_config(cfg)


def check_config(cfg: ModelConfig, role: str) -> None:
    """Config-time: the server's address is given."""
    from prefdistill.errors import ConfigError

    if not cfg.api.base_url:
        raise ConfigError(f"{role}.api.base_url: required when {role}.backend is 'openai' (e.g. http://127.0.0.1:8000/v1)")


# Text from any OpenAI-compatible server; scores and top-k from its echoed log-probs at temperature 1, where its echo
# passes the probe (`APILM.can_score`, `require_topk_of_text`); no logits in the loop, no weights here.
CAPABILITIES = Capabilities(generate=True, can_score=True, topk=True, temperature_any=False, echo=True, in_loop=False,
                            trainable=False, local=False)
register_backend("openai", CAPABILITIES, load, describe="a server behind an OpenAI-compatible API", check=check_config)

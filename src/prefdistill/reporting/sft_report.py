"""The SFT warm-up as both reports show it: each model's budget, the step it kept and how, and its curve.

    sft = {role: sft_summary(log, choice)}     # choice: RUN/checkpoints/ROLE_sft/choice.json (prefdistill.training.best_checkpoint)
    header, body = sft_table(sft)              # rendered by report.py and bench_report.py with their markdown table
    lines = curve_lines(sft)                   # every evaluation, the kept one in bold
    sentence = sft_sentence(log, "PLaD student", kept=6)   # the verdict's word on whether the SFT student learnt

Pure formatting of numbers already computed; no model runs here.
"""
from __future__ import annotations

from prefdistill.reporting.common import DASH, fmt
CRITERIA = {"val_loss": ("loss", "validation loss", 3), "win_rate": ("win_rate", "validation win rate (%)", 1),
            "rougeL": ("rougeL", "validation ROUGE-L", 2)}  # criterion: (key of an evaluation, name, decimals)


def sft_summary(log: list[dict], choice: dict | None) -> dict:
    """One SFT's numbers: budget, the untrained and each evaluation's validation loss, the kept step and its criterion."""
    choice = choice or {}
    first = next((r["val_loss_initial"] for r in log if "val_loss_initial" in r), None)
    return {"steps": choice.get("budget", len(log)), "val_loss_initial": first,
            "val_loss": [[r["step"], r["val_loss"]] for r in log if "val_loss" in r],
            "kept_step": choice.get("step"), "criterion": choice.get("criterion"), "curve": choice.get("curve", [])}


def run_summaries(metrics: dict) -> dict[str, dict]:
    """`sft_summary` of each SFT of a run's metrics.json (its logs under training.sft_ROLE, its choice under sft.ROLE)."""
    logs = metrics.get("training") or {}
    return {role: sft_summary(logs.get(f"sft_{role}") or [], choice) for role, choice in (metrics.get("sft") or {}).items()
            if isinstance(choice, dict)}


def _loss_at(s: dict, step) -> float | None:
    return next((v for st, v in s.get("val_loss") or [] if st == step), None)


def sft_table(sft: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    """(header, rows): budget, kept step and how it was chosen, validation loss initial / at the kept step / last / lowest."""
    body = []
    for name, s in sft.items():
        losses = [(st, v) for st, v in s.get("val_loss") or [] if fmt(v, 3) != DASH]
        low = min(losses, key=lambda p: p[1]) if losses else None
        recorded = s.get("kept_step") is not None  # results from before early stopping used the last step
        kept, how = (s["kept_step"], s.get("criterion")) if recorded else (s.get("steps"), "last: no choice recorded")
        how += "" if s.get("curve") or not recorded else "; no evaluation: sft.ROLE.eval_every unset"
        body.append([name, str(s.get("steps", DASH)), f"{kept} ({how})", fmt(s.get("val_loss_initial"), 3),
                     fmt(_loss_at(s, kept), 3), fmt(losses[-1][1], 3) if losses else DASH,
                     f"{low[1]:.3f} (step {low[0]})" if low else DASH])
    header = ["Model", "Budget (steps)", "Kept step (chosen by)", "Val. loss initial", "Val. loss kept", "Val. loss last",
              "Lowest (step)"]
    return header, body


def curve_lines(sft: dict[str, dict]) -> list[str]:
    """One line per model with an evaluation curve: the criterion's value at each evaluation, the kept step in bold."""
    out = []
    for name, s in sft.items():
        key, what, nd = CRITERIA.get(s.get("criterion"), CRITERIA["val_loss"])
        points = [(c["step"], (c.get("val") or {}).get(key)) for c in s.get("curve") or []]
        if not points:
            continue
        cells = [f"**{st}: {fmt(v, nd)}**" if st == s.get("kept_step") else f"{st}: {fmt(v, nd)}" for st, v in points]
        out.append(f"- {name}, {what} at each evaluation (step: value): {', '.join(cells)}")
    return out


SFT_LEARNT = 0.02  # the SFT student learnt when its validation loss fell by at least this share


def sft_sentence(log: list[dict], method_label: str = "the distilled student", kept: int | None = None) -> str | None:
    """Whether the SFT student learnt, from the validation losses its log holds (None without them).

    An SFT student whose validation loss barely moved is under-trained: a distilled student
    that beats it may only have trained longer, so the sentence says so.
    """
    first = next((r["val_loss_initial"] for r in log if "val_loss_initial" in r), None)
    losses = [(r["step"], r["val_loss"]) for r in log if "val_loss" in r]
    if first is None or not losses:
        return None
    best_step, best = min(losses, key=lambda x: x[1])
    last_step, last = losses[-1]
    kept_note = "" if kept is None else f"; the weights of step {kept} were kept"
    moved = f"validation loss {first:.3f} -> {last:.3f} over {last_step} steps (best {best:.3f} at step {best_step}{kept_note})"
    if best <= first * (1 - SFT_LEARNT):
        return f"The SFT student learnt: {moved}."
    return (f"The SFT student is under-trained ({moved}): a gain of {method_label} over it may only mean more training; "
            "compare with SeqKD, the budget-matched control (prefdistill bench bench --quick).")

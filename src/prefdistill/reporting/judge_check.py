"""The bench report's "Is the judge right on model text?" section, from results.json's "judge_check".

    lines = judge_check_section(results)     # markdown lines; [] when the results have no judge check

Renders what `evaluation.judge_check` computed: the grader's accuracy against the reference
on each row's test outputs, on the degenerate ones apart, its verdict, the rank agreement of
the rows' win rates with ROUGE-L and with embedding similarity, and a sample to check by hand.
"""
from __future__ import annotations

from prefdistill.reporting.common import DASH, fmt, md_table, number

TEXT_CHARS = 320  # characters of a reference or an output shown in the sample


def _pct(x, nd: int = 0) -> str:
    return DASH if number(x) is None else f"{100 * x:.{nd}f}%"


def _plain(text: str, limit: int = TEXT_CHARS) -> str:
    """One line, backticks made quotes, cut at `limit` characters."""
    flat = " ".join(str(text).split()).replace("`", "'")
    return flat if len(flat) <= limit else flat[:limit] + " …"


def _verdict_lines(check: dict) -> list[str]:
    v, t = check["verdict"], check["thresholds"]
    pooled = check["degenerate"]
    kinds = ", ".join(f"{k} {d['n']} (judge right on {_pct(d['accuracy'])})" for k, d in pooled["by_kind"].items())
    head = f"**The judge {v['status']}.**" if v["cannot_tell_degenerate"] else f"Verdict: the judge {v['status']}."
    out = [head + (" " + "; ".join(r[0].upper() + r[1:] for r in v["reasons"]) + "." if v["reasons"] else ""), "",
           f"Degenerate outputs (empty; loops: ≥ {100 * t['loop_share']:.0f}% repeated word trigrams in ≥ {t['loop_min_words']} "
           f"words; templates: ≤ {t['template_max_content_words']} distinct content words), pooled over the rows: "
           f"{pooled['n']}" + (f", {kinds}" if kinds else "") + f". The flag is raised when the judge ranks the reference above "
           f"fewer than {100 * t['accuracy_floor']:.0f}% of them (with at least {t['min_degenerate']}), or when they earn a row "
           f"more than {t['degenerate_points']:g} points of win rate.", ""]
    return out


def _rows_table(check: dict) -> list[str]:
    body = []
    for name, r in check["rows"].items():
        d = r["degenerate"]
        kinds = ", ".join(f"{k} {n}" for k, n in d["kinds"].items())
        body.append([r["label"], str(r["n"]), _pct(r["accuracy"], 1), f"{d['n']} ({_pct(d['share'])})" + (f": {kinds}" if kinds
                     else ""), _pct(d["accuracy"], 1), fmt(d["win_points"], 1)])
    return [md_table(["Row", "Outputs", "Judge ranks the reference higher", "Degenerate outputs", "…on degenerate ones",
                      "Win-rate points they earn"], body), ""]


def _rank_lines(check: dict) -> list[str]:
    ra = check["rank_agreement"]
    body = [[t["label"], fmt(t["win_rate"], 1), fmt(t["rougeL"], 1), fmt(t["similarity"], 3)] for t in ra["rows"]]
    agree = "; ".join(f"with {name}: Spearman ρ {fmt(ra[key]['spearman'])}, Kendall τ {fmt(ra[key]['kendall'])}"
                      for key, name in (("rougeL", "ROUGE-L"), ("similarity", "embedding similarity")))
    return [f"Rank agreement of the rows' win rates ({ra['n_rows']} rows) {agree}. Embedding similarity: mean cosine of "
            "mean-pooled MiniLM sentence embeddings of output and reference (— where it was not computed). ROUGE-L rewards "
            "copied words, which the judges were trained to punish: a low agreement with it alone is expected; against both, "
            "the judge orders the rows by something else.", "",
            md_table(["Row", "Judge win rate (%)", "ROUGE-L", "Similarity to the reference"], body), ""]


def _sample_lines(check: dict) -> list[str]:
    out = ["Outputs to check by hand (first the degenerate ones the judge put above their reference, then the students' on "
           "random prompts):", ""]
    for i, s in enumerate(check["sample"], 1):
        kind = f", degenerate: {s['degenerate']}" if s["degenerate"] else ""
        out += [f"{i}. **{s['label']}**, test prompt {s['prompt_index']}" + (f": `{_plain(s['prompt_head'], 160)}`"
                                                                              if s["prompt_head"] else ""),
                f"    - Reference (score {fmt(s['reference_score'], 3)}): {_plain(s['reference'])}",
                f"    - Output (score {fmt(s['output_score'], 3)}{kind}): {_plain(s['output'])}",
                f"    - The judge prefers the {s['judge_prefers']}."]
    return out + [""]


def judge_check_section(results: dict) -> list[str]:
    """The section's markdown lines ([] without results["judge_check"])."""
    check = results.get("judge_check")
    if not check:
        return []
    trained_on = (results.get("judges", {}).get("eval", {}) or {}).get("negatives") or []
    note = (" The grader's training negatives included the initial student's own answers on its half of the training "
            "documents, so its accuracy on that row is not out of sample; the SFT student's and the methods' outputs are."
            if "student_init" in trained_on else "")
    lines = ["## Is the judge right on model text?", "",
             "The judges' validation accuracy is measured on corrupted references. Here the evaluation judge is checked on "
             "the rows' test outputs: the share it scores below their human reference (ties half; 100% − win rate). "
             "A trained row may beat references honestly; a degenerate output should not." + note, ""]
    return lines + _verdict_lines(check) + _rows_table(check) + _rank_lines(check) + _sample_lines(check)


def judge_check_console(results: dict) -> list[str]:
    """One console line when the judge cannot tell degenerate outputs from the reference, else none."""
    v = (results.get("judge_check") or {}).get("verdict") or {}
    return [f"Judge check: the judge {v['status']} ({'; '.join(v['reasons'])})."] if v.get("cannot_tell_degenerate") else []

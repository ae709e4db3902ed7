"""The text of ``results.md``: provenance, tables, the paper beside the runs, the dose, the
precision check, the list of figures, and the conclusions the numbers support.

Every sentence is computed from the records (:mod:`maxsq_lib.course.results`) and phrased
conditionally (a difference is called level when it is inside the seed noise); the dates and
commits are those recorded in the runs, never today's, so the same runs give the same bytes.
:func:`maxsq_lib.course.plots.regenerate` writes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from .. import methods as method_registry
from ..config import LOSS_METHODS, TABLE_METHODS as ADAPT_METHODS
from .paper import PAPER_CITATION, PAPER_GTA5_CITYSCAPES, paper_tables_markdown
from .results import (RARE_SHARE, SELECTION_RULE, RunRecord, Study, has_reports, mean, mean_std,
                      paired_difference, present, reported_gains, resolution, seed_noise, seed_text,
                      seed_values, source_entry, source_on_target)
from .series import class_target_share, cross_city_values, per_class_gains, sweep_points, sweep_runs
from .tables import markdown_tables

_label = method_registry.label


def _pts(x: float | None, signed: bool = False) -> str:
    """A fraction as percentage points with one decimal (``–`` when missing)."""
    if x is None:
        return "–"
    points = round(100 * x, 1) + 0.0  # + 0.0 turns -0.0 into 0.0, so no "-0.0" is printed
    return f"{points:+.1f}" if signed else f"{points:.1f}"


def _pm(values: Sequence[float], signed: bool = False) -> str:
    """``mean ± std`` in points over seeds (no ± with one seed)."""
    m, s = mean_std(values)
    text = _pts(m, signed)
    return text if s is None else f"{text} ± {_pts(s)}"


def dose_markdown(dose: Mapping | None, reason: str | None = None) -> list[str]:
    """The dose table of ``results.md``."""
    lines = ["## Dose at the starting point", ""]
    if dose is None:
        return lines + [f"Skipped ({reason}).", ""]
    lines += [f"‖∇θ λ_T·L_T‖ / ‖∇θ CE_source‖ for the source model of seed {dose['seed']} on the first "
              f"{dose['batches']} source and target train batches (BatchNorm in train mode, as the "
              "loop starts), at λ_T = 1 and at the table's λ_T; and the ratio of the logit gradient "
              "‖∂L_T/∂z‖ to MaxSquare's (the authors' constants), which sets the matched λ.", "",
              "| method | ratio at λ_T = 1 (min–max over batches) | table λ_T | ratio at the table's λ_T | "
              "logit gradient / MaxSquare's |", "|---|---|---|---|---|"]
    for m, v in dose["methods"].items():
        lam = dose["lambda_target"][m]
        lines.append(f"| {m} | {v['ratio']:.3g} ({v['ratio_min']:.3g}–{v['ratio_max']:.3g}) | {lam:g} | "
                     f"{lam * v['ratio']:.3g} | {v['logit_ratio_to_maxsquare']:.2f} |")
    return lines + [""]


def _display_path(path: Path) -> str:
    """A path as the results tables show it: relative to the project root when inside it."""
    from .notebook import project_root

    try:
        return str(path.resolve().relative_to(project_root()))
    except ValueError:
        return str(path)


def _provenance_lines(study: Study) -> list[str]:
    all_runs = study.all_records()
    prov = [r.provenance for r in all_runs]
    dates = sorted({str(p["date"]) for p in prov if p.get("date")})
    commits = sorted({str(p["commit"]) for p in prov if p.get("commit")})
    torch_versions = sorted({str(p["torch"]) for p in prov if p.get("torch")})
    lib_versions = sorted({str(p["maxsq_lib"]) for p in prov if p.get("maxsq_lib")})
    iterations: dict[str, set[int]] = {}
    for r in all_runs:
        if r.iterations is not None:
            iterations.setdefault(str(r.stage), set()).add(int(r.iterations))
    lines = [f"- profile: `{study.profile}`"]
    for b, table in study.tables.items():
        seeds = sorted({s for e in table.values() for s in e["seeds"]})
        lines.append(f"- `{b}`: {len(table)} runs, seeds {', '.join(map(str, seeds))}")
    lines.append(f"- run dates (from the runs' provenance): {', '.join(dates) or 'not recorded'}")
    lines.append(f"- commits: {', '.join(f'`{c}`' for c in commits) or 'not recorded'}"
                 + (f"; maxsq_lib {', '.join(lib_versions)}" if lib_versions else "")
                 + (f"; torch {', '.join(torch_versions)}" if torch_versions else ""))
    for stage in sorted(iterations):
        lines.append(f"- iterations, {stage} stage: {', '.join(map(str, sorted(iterations[stage])))}")
    return lines


def _beside_paper_markdown(study: Study) -> list[str]:
    lines = ["## Beside the paper", "",
             f"The paper's numbers ({PAPER_CITATION}; the SYNTHIA rows from that README before "
             "2019-07-25, whose MinEnt rows are the authors' own MinEnt runs). They are, most likely, the "
             "best of ten per-epoch evaluations on the target val set (selection with target labels), "
             "with flip ensembling for the Multi rows; our 'best on val' column is the comparable "
             "selection, 'last' the honest one.", "", paper_tables_markdown()]
    if study.main is None:
        return lines
    table = study.tables[study.main]
    source = source_on_target(table)
    rows = ["| method | paper mIoU | paper gain | here mIoU | here gain (paired) |", "|---|---|---|---|---|",
            f"| source only | {PAPER_GTA5_CITYSCAPES['source']:.1f} | – | {_pm(list(source.values()))} | – |"]
    for m in present(table, ADAPT_METHODS):
        paper = PAPER_GTA5_CITYSCAPES.get(m)
        ptext = "–" if paper is None else f"{paper:.1f}"
        gtext = "–" if paper is None else f"{paper - PAPER_GTA5_CITYSCAPES['source']:+.1f}"
        rows.append(f"| {_label(m)} | {ptext} | {gtext} | {_pm(list(seed_values(table[m]).values()))} | "
                    f"{_pm(list(reported_gains(table, m).values()), signed=True)} |")
    lines += [f"GTA5→Cityscapes (paper) beside `{study.main}` (here), mIoU %, mean ± std over seeds:", ""]
    lines += rows + [""]
    return lines


def _noise_tolerance(table: Mapping[str, dict]) -> tuple[float, str]:
    """Threshold under which a difference is called level: 3 × the seed noise of a loss's paired
    gain over AdaBN (:func:`seed_noise`) with several seeds and an AdaBN row; else the larger seed
    std of MinEnt and MaxSquare; with one seed a fixed 0.5 points."""
    noise = seed_noise(table) if "adabn" in table else None
    if noise is not None:
        return 3 * noise, f"3 × the seed std of a loss's paired gain over AdaBN ({_pts(noise)} points)"
    stds = [table[m]["miou_std"] for m in ("minent", "maxsquare") if m in table and table[m]["miou_std"] is not None]
    if stds:
        return max(stds), "the larger std over seeds of MinEnt and MaxSquare"
    return 0.005, "a fixed 0.5 points: one seed gives no std"


def _matching_reference(runs: Sequence[RunRecord], table: Mapping[str, dict]) -> tuple[float | None, float | None]:
    """(MinEnt's λ_T the matched run refers to, MaxSquare/MinEnt initial gradient-norm ratio).

    From the matched runs' ``lambda_matching`` record (λ = λ_ref·|g_ref|/|g|); else λ_ref from the
    MinEnt run and the ratio λ_ref/λ.
    """
    ratios, refs = [], []
    for r in runs:
        info = r.lambda_matching or {}
        if (r.run == "maxsquare-match-minent" and info.get("gradient_norm")
                and info.get("reference_gradient_norm")):
            ratio = info["gradient_norm"] / info["reference_gradient_norm"]
            ratios.append(ratio)
            refs.append(r.lambda_target * ratio)
    if ratios:
        return mean(refs), mean(ratios)
    ref, lam = table["minent"]["lambda_target"], table["maxsquare-match-minent"]["lambda_target"]
    if isinstance(ref, (int, float)) and isinstance(lam, (int, float)) and lam > 0:
        return float(ref), float(ref) / float(lam)
    return None, None


def _minent_run_at(table: Mapping[str, dict], lam: float | None) -> str | None:
    """The MinEnt run (plain or sweep) trained at λ_T = ``lam``."""
    if lam is None:
        return "minent" if "minent" in table else None
    for name in ["minent", *sweep_runs(table, "minent")]:
        value = table.get(name, {}).get("lambda_target")
        if isinstance(value, (int, float)) and abs(value - lam) <= 1e-3 * max(1.0, abs(lam)):
            return name
    return None


def _compare(diff: float, tol: float) -> str:
    return "ahead of" if diff > tol else "behind" if diff < -tol else "level with"


def _evidence_overview(name: str, table: Mapping[str, dict]) -> list[str]:
    """Seeds, the domain gap and the paired gains of the main methods."""
    out = []
    shown = present(table, ADAPT_METHODS)
    seeds = sorted({s for m in shown for s in table[m]["seeds"]})
    if seeds:
        out.append(f"Main table `{name}`: {seed_text(seeds)}"
                   + ("; with one seed there is no estimate of seed noise." if len(seeds) == 1 else "."))
    source, src = source_on_target(table), source_entry(table)
    if source and src is not None and src["source_val_miou_mean"] is not None:
        s_mean = mean(source.values())
        out.append(f"The source model reaches {_pts(s_mean)} mIoU on target val vs "
                   f"{_pts(src['source_val_miou_mean'])} on source val: a domain gap of "
                   f"{_pts(src['source_val_miou_mean'] - s_mean)} points.")
    if has_reports(table):
        out.append(f"Every number below is the reported one: {SELECTION_RULE} (chosen on MiniCityscapes "
                   "dev, reported on test; nothing is chosen on test).")
    if shown:
        gains = ", ".join(f"{_label(m)} {_pm(list(reported_gains(table, m).values()), signed=True)}" for m in shown)
        out.append(f"Paired gains over the source model (points, mean ± std over seeds): {gains}.")
    beyond = [m for m in shown if m != "adabn" and reported_gains(table, m, "adabn")]
    if beyond:
        gains = ", ".join(f"{_label(m)} {_pm(list(reported_gains(table, m, 'adabn').values()), signed=True)}"
                          for m in beyond)
        out.append(f"Paired gains over the BatchNorm-only control AdaBN (what the training adds beyond "
                   f"re-estimated BatchNorm statistics): {gains}.")
    return out


def _evidence_methods(table: Mapping[str, dict]) -> list[str]:
    """MaxSquare vs MinEnt, vs the BatchNorm-only control, the paper's order, IW and Multi."""
    out = []
    diffs = list(paired_difference(table, "maxsquare", "minent").values())
    if diffs:
        ahead, behind = sum(v > 0 for v in diffs), sum(v < 0 for v in diffs)
        verdict = ("one seed, so this is not evidence of a difference" if len(diffs) == 1 else
                   "ahead on every seed" if ahead == len(diffs) else
                   "behind on every seed" if behind == len(diffs) else "mixed across seeds")
        out.append(f"At the paper's λ_T, MaxSquare − MinEnt (paired per seed) is {_pm(diffs, signed=True)} "
                   f"points; MaxSquare is ahead on {ahead} of {len(diffs)} seed(s) ({verdict}).")
    g_none, g_ms = mean(reported_gains(table, "none").values()), mean(reported_gains(table, "maxsquare").values())
    if "adabn" in table and has_reports(table):
        pass  # the overview states every loss's gain over AdaBN
    elif g_none is not None and g_ms is not None:
        tail = (f"so on these runs the MaxSquare loss adds nothing beyond what target batches do through "
                f"BatchNorm ({_pts(g_ms - g_none, True)} points)" if g_ms <= g_none else
                f"so the MaxSquare loss adds {_pts(g_ms - g_none, True)} points beyond the BatchNorm effect")
        out.append(f"The control without a target loss ('none': target images only move the BatchNorm "
                   f"statistics) gains {_pts(g_none, True)}; MaxSquare gains {_pts(g_ms, True)}, {tail}.")
    order = [m for m in LOSS_METHODS if m in table]
    if len(order) >= 2:
        means = [mean(seed_values(table[m]).values()) for m in order]
        holds = all(a is not None and b is not None and a < b for a, b in zip(means, means[1:]))
        out.append(f"The paper's order ({' < '.join(_label(m) for m in order)}) "
                   f"{'holds' if holds else 'does not hold'} for the means here "
                   f"({', '.join(f'{_label(m)} {_pts(v)}' for m, v in zip(order, means))}).")
    for step, a, b in (("IW", "maxsquare", "maxsquare_iw"), ("Multi", "maxsquare_iw", "maxsquare_iw_multi")):
        diffs = list(paired_difference(table, b, a).values())
        if diffs:
            paper_step = PAPER_GTA5_CITYSCAPES[b] - PAPER_GTA5_CITYSCAPES[a]
            out.append(f"Adding {step} ({_label(a)} → {_label(b)}) changes mIoU by {_pm(diffs, signed=True)} "
                       f"points, paired (the paper: {paper_step:+.1f}).")
    return out


def _evidence_lambda(table: Mapping[str, dict], runs: Sequence[dict], tol: float, tol_text: str) -> list[str]:
    """The λ_T sweep and the matched-gradient run (is it the shape or the size of the gradient?)."""
    out = []
    sweep_seeds = sorted({s for m in LOSS_METHODS for e in sweep_runs(table, m).values() for s in e["seeds"]})
    best: dict[str, tuple[float, float]] = {}
    worst: dict[str, tuple[float, float]] = {}
    for m in LOSS_METHODS:
        points = dict(sweep_points(table, m, sweep_seeds))
        if len(points) > 1:
            lams = sorted(points)
            best[m] = (hi := max(lams, key=points.get), points[hi])
            worst[m] = (lo := min(lams, key=points.get), points[lo])
    if best:
        parts = [f"{_label(m)} is best at λ_T = {lam:.3g} ({_pts(v)}) and lowest at λ_T = "
                 f"{worst[m][0]:.3g} ({_pts(worst[m][1])})" for m, (lam, v) in best.items()]
        sentence = f"In the λ_T sweep on {seed_text(sweep_seeds)}, {'; '.join(parts)}."
        if "minent" in best and "maxsquare" in best:
            diff = best["maxsquare"][1] - best["minent"][1]
            spread = {m: best[m][1] - worst[m][1] for m in ("minent", "maxsquare")}
            sentence += (f" At its best λ_T MaxSquare is {_compare(diff, tol)} MinEnt at its best "
                         f"({_pts(diff, True)} points; best-on-test λ, so an upper bound for both); across "
                         f"the λ_T tried MinEnt varies by {_pts(spread['minent'])} points and MaxSquare by "
                         f"{_pts(spread['maxsquare'])}, so "
                         + ("MaxSquare is the less sensitive to λ_T here." if spread["maxsquare"] < spread["minent"] - tol
                            else "MinEnt is the less sensitive to λ_T here."
                            if spread["minent"] < spread["maxsquare"] - tol else
                            "both are about equally sensitive to λ_T here."))
        out.append(sentence)
        out += _evidence_dev_chosen_lambda(table, runs, sweep_seeds)
        out += _evidence_sensitivity(table, sweep_seeds, tol, tol_text)
    match = table.get("maxsquare-match-minent")
    if match is None or "minent" not in table:
        return out
    mseeds = sorted(match["seeds"])
    ref, ratio = _matching_reference(runs, table)
    reference_run = _minent_run_at(table, ref)
    if reference_run is None:
        out.append(f"The matched-gradient MaxSquare run refers to MinEnt at λ_T = {ref:.3g}, which was not "
                   "run: no comparison.")
        return out
    ms = mean(seed_values(match).values())
    me = mean(seed_values(table[reference_run], seeds=mseeds).values())
    if ms is None or me is None:
        return out
    diff, lam = ms - me, match["lambda_target"]
    lam_text = f"{lam:.3g}" if isinstance(lam, (int, float)) else str(lam)
    verdict = {"ahead of": "MaxSquare keeps an edge at equal gradient size here, so its advantage is not only "
                           "a smaller gradient",
               "behind": "at equal gradient size MaxSquare falls behind MinEnt here, so its edge at equal λ_T "
                         "comes from the gradient's size rather than its shape",
               "level with": "at equal gradient size the two losses are not distinguishable here, so an edge at "
                             "equal λ_T cannot be credited to the gradient's shape"}[_compare(diff, tol)]
    ref_text = f"{ref:.3g}" if ref is not None else "its λ_T"
    ratio_text = "" if ratio is None else f"; at equal λ_T, MaxSquare's initial gradient is {ratio:.2f}× MinEnt's"
    out.append(f"At matched initial gradient norm (MaxSquare λ_T = {lam_text}, whose target gradient w.r.t. the "
               f"logits equals MinEnt's at λ_T = {ref_text}{ratio_text}), MaxSquare reaches {_pts(ms)} vs MinEnt "
               f"{_pts(me)} on {seed_text(mseeds)}: a difference of {_pts(diff, True)} points against a "
               f"tolerance of {_pts(tol)} ({tol_text}); {verdict}.")
    return out


def _evidence_dev_chosen_lambda(table: Mapping[str, dict], runs: Sequence[RunRecord],
                                sweep_seeds: Sequence[int]) -> list[str]:
    """Each loss with λ_T chosen on dev (with its iteration), reported on test: the sweep's fair row."""
    by_run = {(r.run, r.seed): r for r in runs}
    parts = []
    for m in LOSS_METHODS:
        names = list(sweep_runs(table, m)) + ([m] if m in table else [])
        picks = []
        for seed in sweep_seeds:
            choices = [(c, n) for n in names if (n, seed) in by_run and (c := by_run[(n, seed)].report)]
            if choices:
                c, n = max(choices, key=lambda t: t[0]["select_miou"])
                picks.append((c, table[n]["lambda_target"]))
        if picks:
            lam_text = ", ".join(f"{lam:g}" for _, lam in picks)
            parts.append(f"{_label(m)} λ_T {lam_text} → {_pts(mean(c['miou'] for c, _ in picks))}")
    if not parts or not has_reports(table):
        return []
    return [f"With λ_T and the iteration both chosen on dev (reported on test, {seed_text(sweep_seeds)}): "
            f"{'; '.join(parts)}."]


def _evidence_sensitivity(table: Mapping[str, dict], sweep_seeds: Sequence[int], tol: float,
                          tol_text: str) -> list[str]:
    """Does the instrument resolve a loss's effect? The largest |effect| over AdaBN in the sweep."""
    if "adabn" not in table:
        return []
    ref = mean(seed_values(table["adabn"], seeds=sweep_seeds).values())
    effects = []
    for m in LOSS_METHODS:
        for lam, value in sweep_points(table, m, sweep_seeds):
            effects.append((value - ref, m, lam))
    if ref is None or not effects:
        return []
    last = [(v - ref, m, lam) for m in LOSS_METHODS for lam, v in sweep_points(table, m, sweep_seeds, "reported_last")]
    collapse = [e for e in last if e[0] < -tol]
    last_text = ("" if not has_reports(table) else
                 f" At the last iteration (no rule protects it) {len(collapse)} of {len(last)} sweep points are "
                 f"resolved losses, down to {_pts(min(e[0] for e in last), True)} points ("
                 f"{_label(min(last)[1])} at λ_T = {min(last)[2]:.3g}): the dev rule falls back to the starting "
                 "point where adaptation collapses.")
    resolved = [e for e in effects if abs(e[0]) > tol]
    effect, m, lam = max(effects, key=lambda e: abs(e[0]))
    pos = [e for e in resolved if e[0] > 0]
    return [f"Sensitivity: {len(resolved)} of {len(effects)} sweep points differ from AdaBN by more than "
            f"{_pts(tol)} points ({tol_text}); the largest effect is {_label(m)} at λ_T = {lam:.3g}: "
            f"{_pts(effect, True)} points. "
            + (f"Resolved gains: {', '.join(f'{_label(x)} λ_T {l:.3g} {_pts(e, True)}' for e, x, l in pos)}."
               if pos else "No sweep point is a resolved gain over AdaBN"
               + ("; the resolved effects are losses." if resolved else "; no effect is resolved."))
            + last_text]


def _evidence_protocol(table: Mapping[str, dict], tol: float) -> list[str]:
    """BatchNorm mode, checkpoint selection and flip ensembling."""
    out = []
    frozen = table.get("maxsquare-bn-frozen")
    if frozen is not None and "maxsquare" in table:
        fseeds = sorted(frozen["seeds"])
        f_mean = mean(seed_values(frozen).values())
        t_mean = mean(seed_values(table["maxsquare"], seeds=fseeds).values())
        if f_mean is not None and t_mean is not None:
            out.append(f"MaxSquare with BatchNorm frozen reaches {_pts(f_mean)} vs {_pts(t_mean)} with BatchNorm "
                       f"in train mode on {seed_text(fseeds)}: frozen is {_compare(f_mean - t_mean, tol)} train "
                       f"mode (tolerance {_pts(tol)} points).")
    rows = [r for m in present(table, ADAPT_METHODS) for r in table[m]["seeds"].values()]

    def gap(key: str) -> float | None:
        return mean(r[key] - r["miou"] for r in rows if r[key] is not None)

    best_gap, free_gap, flip_gap = gap("best_on_target_val"), gap("label_free_choice"), gap("miou_flip")
    if best_gap is not None:
        out.append(f"Selecting the best evaluation with target labels (the paper's protocol) adds "
                   f"{_pts(best_gap, True)} points over the last iteration on average over the methods"
                   + (f"; the label-free choice (lowest mean entropy) changes it by {_pts(free_gap, True)}."
                      if free_gap is not None else "."))
    if flip_gap is not None:
        out.append(f"Flip ensembling changes the last-iteration mIoU by {_pts(flip_gap, True)} points on "
                   "average over the methods.")
    return out


def _evidence_rare_classes(table: Mapping[str, dict], runs: Sequence[dict]) -> list[str]:
    """Mean per-class IoU change on the classes rarer than :data:`RARE_SHARE`."""
    share = class_target_share(runs)
    if share is None:
        return []
    classes = next(iter(table.values()))["class_names"]
    rare = [c for c, s in zip(classes, share) if s < RARE_SHARE]
    parts = []
    control = "adabn" in table
    changes = {m: mean(per_class_gains(runs, m).get(c) for c in rare)
               for m in (present(table, ("none",) + LOSS_METHODS) if rare else [])}
    for m, change in changes.items():
        if change is not None:
            beyond = changes.get("none")
            extra = (f" ({_pts(change - beyond, True)} beyond none)"
                     if beyond is not None and m != "none" else "")
            parts.append(f"{_label(m)} {_pts(change, True)}{extra}")
    if not parts:
        return []
    what = "the BatchNorm-only control AdaBN (same seed)" if control else "the source model"
    return [f"On the rare classes ({', '.join(rare)}: each under {100 * RARE_SHARE:.0f} % of the target val "
            f"pixels) the mean per-class IoU change over {what} is: {', '.join(parts)}."]


def _evidence_cross_city(study: Study) -> list[str]:
    """Per city, one seed: MaxSquare and +IW against the source model and the controls, counting a
    difference only beyond the main benchmark's resolution (the course's one rule; one seed per city
    resolves nothing finer), and level otherwise."""
    values = cross_city_values({c: study.tables[b] for c, b in study.cities.items()})
    counts = {"source": 0, "adabn": 0, "none": 0, "iw": 0}
    n, gains, ties = 0, [], 0
    margin = resolution(study.tables[study.main]) if study.main else None
    rule = (f"a difference counts beyond the main benchmark's resolution, {_pts(margin)} points" if margin
            else "no resolution without seeds to estimate it: a difference counts beyond the 0.1-point rounding")
    margin = margin or 0.0005
    for v in values.values():
        s, ada, none, ms, iw = (mean(v.get(k, {}).values()) for k in ("source", "adabn", "none", "maxsquare",
                                                                        "maxsquare_iw"))
        if s is None or ms is None:
            continue
        n += 1
        gains.append(ms - s)
        counts["source"] += ms > s + margin
        counts["adabn"] += ada is not None and ms > ada + margin
        counts["none"] += none is not None and ms > none + margin
        if iw is not None:
            counts["iw"] += iw > ms + margin
            ties += abs(iw - ms) <= margin
    if not n:
        return []
    out = (f"Cross-city (13 classes, one seed per city; {rule}): MaxSquare beats the source "
           f"model in {counts['source']} of {n} cities (mean gain {_pts(mean(gains), True)} points) and +IW "
           f"beats MaxSquare in {counts['iw']} of {n} ({ties} level; the paper: 4 of 4 for both)")
    if any(values[c].get("adabn") for c in values):
        out += (f"; against the controls, MaxSquare beats AdaBN in {counts['adabn']} of {n} and none in "
                f"{counts['none']} of {n}")
    return [out + "."]


def evidence_sentences(study: Study) -> list[str]:
    """Conclusions computed from the numbers, phrased conditionally (results.md's last section).

    Args:
        study: the loaded runs (:func:`~maxsq_lib.course.results.load_study`).
    Returns:
        sentences (markdown bullets without the bullet).
    """
    out: list[str] = []
    if study.profile == "smoke":
        out.append("These are `smoke` runs (a few iterations on tiny data): they check the pipeline; "
                   "their numbers say nothing about the methods.")
    if study.main is not None:
        table, runs = study.tables[study.main], study.records[study.main]
        tol, tol_text = _noise_tolerance(table)
        out += _evidence_overview(study.main, table)
        out += _evidence_methods(table)
        out += _evidence_lambda(table, runs, tol, tol_text)
        out += _evidence_protocol(table, tol)
        out += _evidence_rare_classes(table, runs)
    if study.cities:
        out += _evidence_cross_city(study)
    return out


def results_markdown(study: Study, figures: Mapping[str, str], notes: Mapping[str, str | None],
                     dose: Mapping | None = None, dose_reason: str | None = None,
                     precision: Sequence[str] = ()) -> str:
    """The text of ``results.md`` (see :func:`maxsq_lib.course.plots.regenerate`).

    Args:
        study: the loaded runs (:func:`~maxsq_lib.course.results.load_study`).
        figures: every course figure's file name -> its sentence, in the list's order.
        notes: figure file name -> None when written, else why it was skipped.
        dose: :func:`~maxsq_lib.course.plots.adaptation.dose_evidence` (None: skipped for
            ``dose_reason``).
        precision: the "Precision" section (:func:`~maxsq_lib.course.precision_study.precision_markdown`).
    Returns:
        markdown.
    """
    where = _display_path(study.runs_root / study.profile) if study.runs_root else "results.json"
    lines = ["# Results", "",
             f"Generated by `maxsq figures` from `{where}` (the metrics.json of every finished run); "
             "do not edit by hand: regenerate it. mIoU in percent on the target val set.", ""]
    lines += _provenance_lines(study) + ["", "## Tables", ""]
    for benchmark, table in study.tables.items():
        lines.append(markdown_tables(benchmark, table))
    lines += _beside_paper_markdown(study)
    lines += dose_markdown(dose, dose_reason)
    lines += list(precision)
    lines += ["## Figures", ""]
    for name, text in figures.items():
        reason = notes.get(name)
        lines.append(f"- `{name}`: {text}" if reason is None else f"- `{name}`: skipped ({reason}).")
    lines += ["", "## What the evidence here supports", ""]
    lines += [f"- {s}" for s in evidence_sentences(study)] or ["- No adaptation runs to compare."]
    return "\n".join(lines) + "\n"


def precision_section(results: dict, runs: Sequence[RunRecord], main: str | None) -> tuple[list[str], dict | None]:
    """results.md's "Precision" section and its comparison, for a study with a λ sweep (the
    committed one); the one-seed course has nothing to compare and gets no section."""
    from . import precision_study as ps
    from .notebook import project_root

    root = project_root()
    reference = ps.load_reference(root)
    if main is None or reference is None or not any("-lambda" in r.run for r in runs):
        return [], None
    comparison = ps.compare_with_reference(results["benchmarks"][main]["runs"], reference["runs"])
    comparisons = [(f"This study: {ps.describe_runs(runs)}", comparison)]
    for title, file in ps.TRIED_FILES.items():
        tried = ps.load_reference(root, file)
        if tried is not None:
            comparisons.append((title, ps.compare_with_reference(tried["runs"], reference["runs"])))
    lines = ps.precision_markdown(comparisons, reference["what"], ps.batchnorm_subset_check(runs),
                                  "no final model of seed 0 found")
    return lines, {"this_study": comparison, **{t: c for t, c in comparisons[1:]}}


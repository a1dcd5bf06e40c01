"""Reading the GPU check's stage logs and configs back, and its summary and markdown
(benchmarks/gpu_check.py runs; this module only reads and formats)."""

import os
import re
from typing import Any, Dict, List, Optional

from benchmarks.report import format_table


# VISSL's LogLossLrEtaHook line: "[ep: 0] iter: 1; lr: 0.0005; loss: 1.38; ..."
_LOSS_RE = re.compile(r"iter: (\d+); lr: ([^;]+); loss: ([^;]+);")
_LOADER_RE = re.compile(r"ExtractionLoader\(num_workers=(\d+)")
PHASE_TARGET_S = 2.0
EXTRACTION_STEADY_TARGET = 0.9
EXTRACTION_OVERALL_TARGET = 0.8
TRAIN_TARGET = 0.9


def _get(d: Any, path: str, default: Any = None) -> Any:
    for key in path.split("."):
        if not isinstance(d, dict) or key not in d:
            return default
        d = d[key]
    return d


def config_facts(cfg: Any) -> Dict[str, Any]:
    """The settings of one stage config that issue 21 is about."""
    facts = {
        "batch": _get(cfg, "DATA.TRAIN.BATCHSIZE_PER_REPLICA"),
        "workers": _get(cfg, "DATA.NUM_DATALOADER_WORKERS"),
        "multiprocessing": _get(cfg, "MULTI_PROCESSING_METHOD"),
        "procs": _get(cfg, "DISTRIBUTED.NUM_PROC_PER_NODE"),
        "train_step": _get(cfg, "TRAINER.TRAIN_STEP_NAME"),
        "autocast": _get(cfg, "VCF.TRAINING.AUTOCAST"),
        "channels_last": _get(cfg, "VCF.TRAINING.CHANNELS_LAST"),
        "use_amp": _get(cfg, "MODEL.AMP_PARAMS.USE_AMP"),
        "sync_bn": _get(cfg, "MODEL.SYNC_BN_CONFIG.CONVERT_BN_TO_SYNC_BN"),
        "extraction_loader": _get(cfg, "VCF.CLUSTERFIT.LOADER"),
    }
    lr = _get(cfg, "OPTIMIZER.param_schedulers.lr", {}) or {}
    facts["lr_schedule"] = lr.get("name")
    facts["lr_auto_scale"] = _get(lr, "auto_lr_scaling.auto_scale")
    try:
        from classy_vision.optim.param_scheduler import build_param_scheduler

        sched = build_param_scheduler(dict(lr))
        facts["lr_at"] = {w: round(float(sched(w)), 5) for w in (0.0, 0.05, 0.5)}
    except Exception as e:  # recorded, not fatal: VISSL's multistep needs num_epochs
        facts["lr_at"] = f"not built here ({type(e).__name__})"
    return facts


def precision_of(facts: Dict[str, Any]) -> str:
    """The ceilings' name for a stage's precision."""
    if facts.get("use_amp"):
        return "fp16_amp"
    if facts.get("autocast") == "bfloat16" and facts.get("channels_last"):
        return "bf16_cl"
    if not facts.get("autocast") and not facts.get("channels_last"):
        return "fp32"
    return (
        f"autocast={facts.get('autocast')},channels_last={facts.get('channels_last')}"
    )


def collect_pipeline(folder: str) -> Dict[str, Any]:
    """Per stage folder of a pipeline output: phase records, extraction records, the
    first logged losses, and the settings from its train_config.yaml."""
    from benchmarks.plugin import (
        EXTRACTION_LINE,
        PHASE_LINE,
        PHASE_START_LINE,
        parse_lines,
    )

    stages: Dict[str, Any] = {}
    if not os.path.isdir(folder):
        return stages
    for name in sorted(os.listdir(folder)):
        log_path = os.path.join(folder, name, "stdout.log")
        if not os.path.isfile(log_path):
            continue
        with open(log_path, errors="replace") as f:
            text = f.read()
        loader = _LOADER_RE.search(text)
        stage = {
            "phases": parse_lines(PHASE_LINE, text),
            # where each advance went (gc, worker fork + first batch, hooks)
            "phase_starts": parse_lines(PHASE_START_LINE, text),
            "extraction": parse_lines(EXTRACTION_LINE, text),
            "extraction_workers": int(loader.group(1)) if loader else None,
            "first_losses": [
                {"iter": int(i), "lr": lr.strip(), "loss": loss.strip()}
                for i, lr, loss in _LOSS_RE.findall(text)[:3]
            ],
        }
        cfg_path = os.path.join(folder, name, "train_config.yaml")
        if os.path.isfile(cfg_path):
            stage["config"] = _read_config_facts(cfg_path)
        stages[name] = stage
    return stages


def _read_config_facts(path: str) -> Dict[str, Any]:
    import yaml

    try:
        with open(path) as f:
            cfg = yaml.safe_load(f)
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}
    return config_facts(cfg.get("config", cfg) if isinstance(cfg, dict) else {})


def _closest(rows: List[Dict[str, Any]], key: str, value: Any) -> Optional[Dict]:
    rows = [r for r in rows if isinstance(r.get(key), (int, float))]
    if not rows or value is None:
        return None
    return min(rows, key=lambda r: abs(r[key] - value))


def _row(what: str, measured: Any, ceiling: Any, target: str, ok: Any) -> Dict:
    ratio = None
    if isinstance(measured, (int, float)) and isinstance(ceiling, (int, float)):
        ratio = round(measured / ceiling, 2) if ceiling else None
    if ok is None and ratio is not None:
        ok = ratio >= float(target.split()[-1])
    return {
        "what": what,
        "measured": measured,
        "ceiling": ceiling,
        "ratio": ratio,
        "target": target,
        "met": {True: "yes", False: "NO", None: "-"}[ok],
    }


def summarize(results: Dict[str, Any]) -> Dict[str, Any]:
    """Every target of issue 21 that the run has figures for, as measured vs ceiling."""
    sections = results.get("sections", {})
    ceil = _get(sections, "ceilings.figures", {}) or {}
    targets: List[Dict[str, Any]] = []
    for section in ("in1k", "fmnist"):
        stages = _get(sections, f"{section}.stages", {}) or {}
        starts = [
            (p["advance"] + p["first_batch"], name, p["phase"])
            for name, st in stages.items()
            for p in st["phases"]
        ]
        if starts:
            worst = max(starts)
            targets.append(
                _row(
                    f"{section}: slowest phase start ({worst[1]} phase {worst[2]}), s",
                    round(worst[0], 2),
                    None,
                    f"<= {PHASE_TARGET_S}",
                    worst[0] <= PHASE_TARGET_S,
                )
            )
        for name, st in stages.items():
            targets += _extraction_rows(section, name, st, ceil)
            targets += _train_rows(section, name, st, ceil)
        top1 = _get(sections, f"{section}.figures.report.linear_top1")
        if section == "in1k" and any(n.startswith("linear_") for n in stages):
            targets.append(
                _row(
                    "in1k: VISSL's linear benchmark ran",
                    bool(top1),
                    None,
                    "-",
                    bool(top1),
                )
            )
    return {"targets": targets}


def _extraction_rows(section: str, name: str, st: Dict, ceil: Dict) -> List[Dict]:
    rows = []
    loader = _closest(ceil.get("loader", []), "workers", st.get("extraction_workers"))
    # D_cf's extraction (the largest); N_cf's val split is assigned after it
    done = sorted(st.get("extraction", []), key=lambda e: e["n"])[-1:]
    for e in done:
        w = st.get("extraction_workers")
        if not loader:
            continue
        label = (
            f"{section} {name}: extraction ({w} workers vs loader {loader['workers']})"
        )
        rows.append(
            _row(
                f"{label}, steady img/s",
                round(e["rate"]),
                loader["steady_img_s"],
                f">= {EXTRACTION_STEADY_TARGET}",
                None,
            )
        )
        overall = e["n"] / e["total"] if e["total"] else 0.0
        rows.append(
            _row(
                f"{label}, overall img/s ({int(e['n'])} images)",
                round(overall),
                loader["overall_img_s"],
                f">= {EXTRACTION_OVERALL_TARGET}",
                None,
            )
        )
    return rows


def _train_rows(section: str, name: str, st: Dict, ceil: Dict) -> List[Dict]:
    facts = st.get("config") or {}
    train = [p for p in st.get("phases", []) if p["kind"] == "train" and p["images"]]
    # N_pre and N_cf train the whole network; the probes' frozen trunks are no match
    # for the plain train step
    if not train or section != "in1k" or not name.startswith(("npre", "ncf")):
        return []
    precision, batch = precision_of(facts), facts.get("batch")
    match = [
        c
        for c in ceil.get("train", [])
        if c["precision"] == precision and c["batch_size"] == batch
    ]
    rate = round(max(p["rate"] for p in train))
    what = f"{section} {name}: VISSL train img/s (batch {batch}, {precision})"
    ceiling = match[0]["img_s"] if match else "no ceiling at this batch/precision"
    return [_row(what, rate, ceiling, f">= {TRAIN_TARGET}", None if match else False)]


# ----------------------------------------------------------------------- markdown


def markdown(results: Dict[str, Any]) -> str:
    env = results.get("environment", {})
    md = [
        "# GPU check (issue 21)",
        "",
        f"- mode: {results.get('mode')}",
        f"- command: `{env.get('command')}`",
        f"- commit: `{env.get('git_commit')}`; date: {env.get('date')}",
        f"- machine: {env.get('gpu') or 'no GPU'} ({env.get('gpu_memory_gib')} GiB), "
        f"{env.get('cores')} cores ({env.get('cpu')}), {env.get('mem_total_gib')} GiB",
        f"- software: Python {env.get('python')}, torch {env.get('torch')} (CUDA "
        f"{env.get('cuda')}), torchvision {env.get('torchvision')}, numpy "
        f"{env.get('numpy')}, VISSL {env.get('vissl')}, faiss {env.get('faiss')}",
        f"- wall time: {results.get('wall_time_s')} s",
        "",
        "## Targets (measured / ceiling, one run)",
        "",
    ]
    targets = _get(results, "summary.targets", []) or []
    cols = ["what", "measured", "ceiling", "ratio", "target", "met"]
    md += [format_table(targets, cols, markdown=True) if targets else "(none yet)", ""]
    status = [
        {"section": k, **{c: v.get(c) for c in ("status", "seconds", "timeout_s")}}
        for k, v in results.get("sections", {}).items()
    ]
    md += [
        "## Sections",
        "",
        format_table(
            status, ["section", "status", "seconds", "timeout_s"], markdown=True
        ),
        "",
    ]
    ceil = _get(results, "sections.ceilings.figures", {}) or {}
    for key in ("loader", "inference", "train"):
        if ceil.get(key):
            md += [f"## Ceiling: {key}", "", _table(ceil[key]), ""]
    for section in ("in1k", "fmnist"):
        md += _pipeline_md(section, _get(results, f"sections.{section}", {}) or {})
    for name, sec in results.get("sections", {}).items():
        if sec.get("output_tail"):
            md += [f"## {name}: last output lines", "", "```"]
            md += sec["output_tail"][-20:] + ["```", ""]
    return "\n".join(md)


def _table(rows: List[Dict[str, Any]]) -> str:
    cols: List[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    return format_table(rows, cols, markdown=True)


def _pipeline_md(section: str, sec: Dict[str, Any]) -> List[str]:
    stages = sec.get("stages") or {}
    if not stages:
        return []
    times = _get(sec, "figures.report.stage_time_s", {}) or {}
    rows = []
    for name, st in stages.items():
        facts = st.get("config") or {}
        rows.append(
            {
                "stage": name,
                "wall s": times.get(name),
                "batch": facts.get("batch"),
                "precision": precision_of(facts) if facts else None,
                "phase starts s": ", ".join(
                    f"{p['advance'] + p['first_batch']:.2f}" for p in st["phases"]
                ),
                "first steps done s": ", ".join(
                    f"{p.get('first_step', 0):.2f}" for p in st["phases"]
                ),
                "train img/s": ", ".join(
                    f"{p['rate']:.0f}" for p in st["phases"] if p["kind"] == "train"
                ),
                "extraction": "; ".join(
                    f"{int(e['n'])} in {e['total']:.1f}s, {e['rate']:.0f} img/s"
                    for e in st["extraction"]
                ),
                "first losses": ", ".join(str(x["loss"]) for x in st["first_losses"]),
            }
        )
    md = [f"## {section}: stages", "", _table(rows), ""]
    top1 = _get(sec, "figures.report.linear_top1")
    if top1:
        for target, models in top1.items():
            layers = sorted({k for v in models.values() for k in v})
            table = [{"model": m, **v} for m, v in models.items()]
            md += [f"### {section}: linear top-1 (%) on {target}", ""]
            md += [format_table(table, ["model", *layers], markdown=True), ""]
    return md

"""The GPU check's CPU path (what runs without a GPU) and its summary arithmetic."""

import json
import os
import subprocess
import sys

import pytest

from benchmarks.gpu_check_report import collect_pipeline, summarize
from tests.conftest import ROOT
from vissl_clusterfit.runtime.log_lines import (
    EXTRACTION_LINE,
    PHASE_LINE,
    PHASE_START_LINE,
)


def _run(tmp_path, sections: str) -> dict:
    out = tmp_path / "check"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.gpu_check",
            "--cpu",
            f"--sections={sections}",
            f"--out={out}",
            f"--work={tmp_path / 'work'}",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env=dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1"),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "no GPU here" in proc.stdout
    assert os.path.isfile(f"{out}.md")
    with open(f"{out}.json") as f:
        return json.load(f)


@pytest.mark.slow  # ~36 s on 2 loaded cores: three processes importing torch
def test_cpu_path_makes_the_folder_and_measures_the_ceilings(tmp_path):
    result = _run(tmp_path, "folder,ceilings")
    sections = result["sections"]
    assert {k: v["status"] for k, v in sections.items()} == {
        "folder": "ok",
        "ceilings": "ok",
    }
    assert sections["folder"]["figures"]["images"] == 2 * (16 + 2)
    ceil = sections["ceilings"]["figures"]
    assert ceil["loader"][0]["images"] == 2 * 16, ceil["loader"]
    assert [(t["batch_size"], t["precision"]) for t in ceil["train"]] == [
        (2, "bf16_cl")
    ]
    assert all(f["img_s"] > 0 for f in ceil["train"] + ceil["inference"]), ceil


@pytest.mark.slow
def test_cpu_path_imports_and_composes_every_stage_config(tmp_path):
    result = _run(tmp_path, "imports,configs")
    facts = result["sections"]["configs"]["figures"]["configs"]
    one_gpu = facts["resnet50_in1k_1gpu npre"]
    assert (one_gpu["batch"], one_gpu["procs"], one_gpu["autocast"]) == (
        256,
        1,
        "bfloat16",
    )
    assert {f["multiprocessing"] for f in facts.values()} == {"fork"}, facts
    # the warm-up: the *_gpu N_pre starts low and reaches its peak after 5%: 0.1 per
    # 256 images x one process x 128
    assert facts["fmnist npre"]["batch"] == 128 and facts["fmnist npre"]["procs"] == 1
    assert facts["fmnist npre"]["lr_at"] == {
        "0.0": 0.0005,
        "0.05": 0.05,
        "0.5": 0.02729,
    }


def _log(folder, name: str, lines: list, config: str = "") -> None:
    os.makedirs(folder / name)
    (folder / name / "stdout.log").write_text("\n".join(lines) + "\n")
    if config:
        (folder / name / "train_config.yaml").write_text(config)


def test_summary_compares_each_stage_with_its_ceiling(tmp_path):
    phase = dict(kind="train", steps=10, images=2304, advance=0.1, first_step=3.0)
    _log(
        tmp_path,
        "npre_rotnet",
        [
            PHASE_LINE.format(phase=0, first_batch=0.5, rate=4000, **phase),
            PHASE_LINE.format(phase=1, first_batch=2.5, rate=4400, **phase),
            PHASE_START_LINE.format(
                phase=1,
                advance=0.1,
                before=0,
                release=0,
                gc=0,
                create=0.09,
                workers="kept",
                after=0.01,
            ),
        ],
        "config:\n  DATA: {TRAIN: {BATCHSIZE_PER_REPLICA: 256}}\n"
        "  VCF: {TRAINING: {AUTOCAST: bfloat16, CHANNELS_LAST: true}}\n",
    )
    _log(
        tmp_path,
        "ncf_rotnet_k100",
        [
            "[vcf] extraction: ExtractionLoader(num_workers=15, pin_memory=True)",
            EXTRACTION_LINE.format(
                rank=0, n=10000, dim=2048, total=5.0, first=1.0, rate=2400
            ),
        ],
    )
    stages = collect_pipeline(str(tmp_path))
    starts = stages["npre_rotnet"]["phase_starts"]
    assert [(p["phase"], p["create"], p["workers"]) for p in starts] == [
        (1, 0.09, "kept")
    ], starts
    results = {
        "sections": {
            "in1k": {"stages": stages},
            "ceilings": {
                "figures": {
                    "loader": [
                        {"workers": 5, "steady_img_s": 1600, "overall_img_s": 1000},
                        {"workers": 15, "steady_img_s": 4800, "overall_img_s": 2500},
                    ],
                    "train": [
                        {"batch_size": 256, "precision": "fp32", "img_s": 2200},
                        {"batch_size": 256, "precision": "bf16_cl", "img_s": 4700},
                    ],
                }
            },
        }
    }
    rows = {
        r["what"].split(":")[0] + r["what"][-12:]: r
        for r in summarize(results)["targets"]
    }
    by_start = [r for r in summarize(results)["targets"] if "phase start" in r["what"]]
    assert by_start[0]["measured"] == 2.6 and by_start[0]["met"] == "NO", by_start
    extraction = [r for r in rows.values() if "extraction" in r["what"]]
    # 15 workers: compared with the 15-worker loader; overall = 10,000 / 5.0 s
    assert [(r["measured"], r["ratio"]) for r in extraction] == [
        (2400, 0.5),
        (2000, 0.8),
    ], extraction
    (train,) = [r for r in rows.values() if "train img/s" in r["what"]]
    assert (train["measured"], train["ceiling"], train["met"]) == (4400, 4700, "yes")

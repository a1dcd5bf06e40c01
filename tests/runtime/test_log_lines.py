"""The plugin's timing lines are read back exactly as they were written."""

import logging

import torch

from vissl_clusterfit.cluster_step.extraction import extract_features
from vissl_clusterfit.cluster_step.extraction_trunks import SingleFeatureTrunk
from vissl_clusterfit.runtime.log_lines import (
    EXTRACTION_LINE,
    PHASE_LINE,
    PHASE_START_LINE,
    parse_lines,
)


def test_phase_line_round_trip():
    names = ("phase", "kind", "first_batch", "advance", "first_step", "steps")
    fields = dict(zip(names, (3, "test", 0.31, 0.02, 1.5, 5)), images=64, rate=812)
    line = PHASE_LINE.format(**fields)
    assert parse_lines(PHASE_LINE, f"INFO x.py: {line}\nother\n") == [fields]
    assert parse_lines(PHASE_LINE, "nothing here") == []


def test_phase_start_line_round_trip_and_apart_from_the_phase_line():
    parts = ("advance", "before", "release", "gc", "create", "after")
    fields = dict(zip(parts, (1.25, 0.01, 0.0, 0.71, 0.5, 0.03)), phase=2)
    fields["workers"] = "kept"
    line = PHASE_START_LINE.format(**fields)
    phase = PHASE_LINE.format(
        phase=2,
        kind="train",
        first_batch=0.3,
        advance=1.25,
        first_step=0.5,
        steps=4,
        images=48,
        rate=100,
    )
    text = f"INFO x.py: {phase}\nINFO x.py: {line}\n"
    assert parse_lines(PHASE_START_LINE, text) == [fields]
    assert len(parse_lines(PHASE_LINE, text)) == 1


class _Mean(SingleFeatureTrunk):
    def compute(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :5]


class _Data(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int):
        return {"data": [torch.full((1, 4, 4), float(i))]}


def test_extraction_logs_a_readable_line(caplog):
    with caplog.at_level(logging.INFO):
        feats = extract_features(
            [(_Mean(torch.nn.Identity(), "x"), "x", "flatten")],
            _Data(),
            4,
            torch.device("cpu"),
            shard=False,
        )
    (record,) = parse_lines(EXTRACTION_LINE, caplog.text)
    assert (record["rank"], record["n"], record["dim"]) == (0, 10, 5), record
    # total is written to 0.1 s, first to 0.01 s
    assert record["total"] + 0.05 >= record["first"] >= 0, record
    assert record["rate"] >= 0, record
    assert feats.shape == (10, 5)

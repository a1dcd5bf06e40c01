"""The plugin's timing lines are read back exactly as they were written."""

import logging

import torch

from vissl_clusterfit.cluster_step.extraction import extract_features
from vissl_clusterfit.cluster_step.extraction_trunks import SingleFeatureTrunk
from vissl_clusterfit.runtime.log_lines import EXTRACTION_LINE, PHASE_LINE, parse_lines


def test_phase_line_round_trip():
    names = ("phase", "kind", "first_batch", "advance", "first_step", "steps")
    fields = dict(zip(names, (3, "test", 0.31, 0.02, 1.5, 5)), images=64, rate=812)
    line = PHASE_LINE.format(**fields)
    assert parse_lines(PHASE_LINE, f"INFO x.py: {line}\nother\n") == [fields]
    assert parse_lines(PHASE_LINE, "nothing here") == []


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

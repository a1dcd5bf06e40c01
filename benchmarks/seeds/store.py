"""Finished seeds of ``benchmarks.clusterfit_seeds``, and reuse of an earlier run.

A seed is finished when ``<work dir>/seed<s>/records.json`` exists: written once, after
every stage of the seed is trained and every checkpoint probed, so a finished seed is
never recomputed and a report can be written from the finished seeds alone (the work
dir is per training setting, ``common.settings_work_dir``).

Reuse (``--reuse <results json>``): a seed that an earlier results file of this
benchmark holds keeps that file's records of the arms it has (N_pre, N_pre 2x, N_cf per
K, random init), provided every training and probe setting is the same; only the arms
it lacks are trained. The random-init trunk is rebuilt and probed again either way (it
seeds the random-N_pre arm) and must probe exactly as the reused run recorded, else the
code or the machine no longer gives that run's numbers and reuse is refused.
"""

import json
import os
from typing import Any, Dict, List, Optional, Sequence

from benchmarks import common
from benchmarks.seeds.analysis import TARGETS


SETTINGS_KEYS = (  # what must match for an earlier run's records to be reused
    "pretexts",
    "images",
    "epochs",
    "ks",
    "probe_train",
    "probe_val",
    "probe_test",
)
REUSED_MODELS = ("N_pre", "N_pre 2x", "random init")  # plus "N_cf K=<k>"


def records_path(out: str, seed: int) -> str:
    return os.path.join(out, f"seed{seed}", "records.json")


def committed_path(out: str, seed: int) -> str:
    """The committed copy of a finished seed's records:
    ``results/clusterfit_seeds_finished/<settings hash>/seed<s>.json``.

    The work dir (``benchmarks/_work``) is git-ignored and a fresh checkout starts
    without it; the run takes days of CPU time over several sessions, so a finished
    seed must survive in the repository, keyed by the work dir's settings hash."""
    name = os.path.basename(os.path.normpath(out))
    return os.path.join(
        common.RESULTS_DIR, "clusterfit_seeds_finished", name, f"seed{seed}.json"
    )


def load_finished(out: str, seeds: Sequence[int]) -> Dict[int, Dict[str, Any]]:
    """seed -> its records file's content, for the ``seeds`` that are finished (in the
    work dir, or committed by an earlier session)."""
    done = {}
    for s in seeds:
        for path in (records_path(out, s), committed_path(out, s)):
            if os.path.isfile(path):
                with open(path) as f:
                    done[s] = json.load(f)
                break
    return done


def save_finished(out: str, seed: int, payload: Dict[str, Any]) -> str:
    """Mark ``seed`` finished (atomically: a killed run leaves no half file), in the
    work dir and as the copy to commit (``committed_path``)."""
    common.write_json(committed_path(out, seed), payload)
    return common.write_json(records_path(out, seed), payload)


def read_reuse(path: str, args: Any) -> Dict[str, Any]:
    """The earlier results file, checked: same settings as ``args`` (else ValueError
    naming the key), its commit, and its raw records per seed (the K-chosen ``N_cf``
    records are dropped: K is chosen again with the new arm's)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"--reuse {path}: no such file (give a results json of "
            "benchmarks.clusterfit_seeds, or drop --reuse to train every arm)"
        )
    with open(path) as f:
        old = json.load(f)
    for key in SETTINGS_KEYS:
        if str(old["args"].get(key)) != str(getattr(args, key)):
            raise ValueError(
                f"--reuse {path}: its {key}={old['args'].get(key)!r} differs from this "
                f"run's {getattr(args, key)!r}; its records cannot be reused (drop "
                "--reuse, or run with its settings)"
            )
    by_seed: Dict[int, List[Dict[str, Any]]] = {}
    for r in old["records"]:
        if r["model"] != "N_cf":
            by_seed.setdefault(int(r["seed"]), []).append(r)
    return {
        "path": path,
        "commit": old.get("machine", {}).get("git_commit", "unknown"),
        "date": old.get("machine", {}).get("date"),
        "records": by_seed,
    }


def reused_records(
    reuse: Optional[Dict[str, Any]],
    seed: int,
    pretexts: Sequence[str],
    ks: Sequence[int],
) -> Optional[List[Dict[str, Any]]]:
    """The reusable records of ``seed`` (None when the earlier run lacks the seed);
    ValueError when it has the seed but not every model, pretext and target."""
    if not reuse or seed not in reuse["records"]:
        return None
    recs = reuse["records"][seed]
    have = {(r["model"], r["variant"], r["target"]) for r in recs}
    models = [*REUSED_MODELS, *(f"N_cf K={k}" for k in ks)]
    missing = [
        (m, p, t)
        for m in models
        for p in pretexts
        for t in TARGETS
        if (m, p, t) not in have
    ]
    if missing:
        raise ValueError(
            f"--reuse {reuse['path']}: seed {seed} lacks {len(missing)} records, e.g. "
            f"{missing[0]}; drop --reuse to train this seed's every arm"
        )
    return recs


def check_same_probe(
    old: Sequence[Dict[str, Any]], new: Sequence[Dict[str, Any]], model: str, path: str
) -> None:
    """ValueError unless ``model``'s (val, test) of every (pretext, target) in ``new``
    equals ``old``'s: the reused run's numbers are this code's numbers."""
    before = {
        (r["variant"], r["target"]): (r["val"], r["test"])
        for r in old
        if r["model"] == model
    }
    for r in new:
        if r["model"] != model:
            continue
        key = (r["variant"], r["target"])
        if before.get(key) != (r["val"], r["test"]):
            raise ValueError(
                f"--reuse {path}: seed {r['seed']}'s {model} probes at {key} as "
                f"(val, test) = {(r['val'], r['test'])} now but {before.get(key)} "
                "in the reused run: the code or machine changed its results, so the "
                "run's records cannot be reused; drop --reuse to retrain every arm"
            )

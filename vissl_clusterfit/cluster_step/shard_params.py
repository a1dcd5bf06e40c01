"""``config.VCF.CLUSTERFIT.FEATURE_SHARDS``: features on disk, bounded-memory clustering.

ImageNet scale (ClusterFit, Yan et al. 2020, Sec. 4: 1.28M images, D = 2048, K = 16,000)
and beyond (DeeperCluster, Caron et al. 2019, Sec. 4: 96M images): the features go to
disk as shards (``feature_store``) and the clustering trains on a bounded sample
(``clustering.bounded``). Read once into a frozen object, as ``ClusterFitParams``.
"""

import os
from dataclasses import dataclass
from typing import Any, Dict

from vissl_clusterfit.cluster_step.feature_store import DTYPES


SECTION = "CLUSTERFIT.FEATURE_SHARDS"
KMEANS_CHOICES = ("auto", "faiss", "torch")


def _key(name: str) -> str:
    return f"config.VCF.{SECTION}.{name}"


@dataclass(frozen=True)
class FeatureShardParams:
    """Where the features live and how the bounded route clusters them."""

    enabled: bool = False
    dtype: str = "float32"
    rows: int = 16384
    keep: bool = False
    kmeans: str = "auto"
    precomputed: str = ""
    precomputed_split: str = "train"
    sample_list: str = ""
    layer: str = "res5"  # FEATURE_LAYER: names VISSL's precomputed feature files

    @property
    def active(self) -> bool:
        """The bounded route runs (shards extracted, or precomputed features)."""
        return self.enabled or bool(self.precomputed)

    @classmethod
    def from_config(cls, c: Any) -> "FeatureShardParams":
        """From ``config.VCF.CLUSTERFIT`` (its FEATURE_SHARDS section may be absent)."""
        s = c.get("FEATURE_SHARDS", None) or {}
        p = cls(
            enabled=bool(s.get("ENABLED", False)),
            dtype=str(s.get("DTYPE", "float32")),
            rows=s.get("ROWS", 16384),
            keep=bool(s.get("KEEP", False)),
            kmeans=str(s.get("KMEANS", "auto")),
            precomputed=str(s.get("PRECOMPUTED", "") or ""),
            precomputed_split=str(s.get("PRECOMPUTED_SPLIT", "train")),
            sample_list=str(s.get("SAMPLE_LIST", "") or ""),
            layer=str(c.get("FEATURE_LAYER", "res5")),
        )
        if p.dtype not in DTYPES:
            raise ValueError(
                f"{_key('DTYPE')}={p.dtype} is not supported: use {DTYPES}"
            )
        if p.kmeans not in KMEANS_CHOICES:
            raise ValueError(
                f"{_key('KMEANS')}={p.kmeans} is not supported: use {KMEANS_CHOICES}"
            )
        if isinstance(p.rows, bool) or not isinstance(p.rows, int) or p.rows < 1:
            raise ValueError(f"{_key('ROWS')}={p.rows!r} must be an integer >= 1")
        if p.precomputed and not (
            os.path.isdir(p.precomputed)
            or (p.precomputed.endswith(".npy") and os.path.isfile(p.precomputed))
        ):
            raise FileNotFoundError(
                f"{_key('PRECOMPUTED')}={p.precomputed} is neither a directory nor an "
                ".npy file: give VISSL's extract_features output directory or an "
                "(N, D) .npy file"
            )
        return p

    def settings(self) -> Dict[str, Any]:
        """What changes the labels (shard size and KEEP do not)."""
        out: Dict[str, Any] = {"dtype": self.dtype, "kmeans": self.kmeans}
        if self.precomputed:
            out.update(precomputed=self.precomputed, split=self.precomputed_split)
        return out

    def check_compatible(self, method: str, backend: str, distill: bool) -> None:
        """The bounded route clusters with k-means on its own: refuse the rest."""
        if method != "kmeans" or distill:
            raise ValueError(
                f"{_key('ENABLED')} / PRECOMPUTED run k-means only: set "
                "config.VCF.CLUSTERFIT.METHOD=kmeans and DISTILL=False"
            )
        if backend == "distributed":
            raise ValueError(
                f"{_key('ENABLED')} / PRECOMPUTED replace KMEANS_BACKEND=distributed "
                "(every rank assigns its shards): set config.VCF.CLUSTERFIT."
                "KMEANS_BACKEND=faiss and choose the device with FEATURE_SHARDS.KMEANS"
            )

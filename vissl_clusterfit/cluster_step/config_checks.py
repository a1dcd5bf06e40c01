"""Start-up checks that the cluster step's settings fit the data they meet.

The plugin's defaults (configs/vissl_clusterfit_defaults/plugin.yaml) extract Fashion-MNIST
at 28 px with its mean/std, and the Fashion-MNIST presets set DATA.TEST to its test
files. Neither is right for another data set, and neither fails by itself: ResNet-50
features of ImageNet images squeezed to 28 px cluster without complaint, and ASSIGN_TEST
happily assigns Fashion-MNIST's test images. These checks turn both into errors that
name the key to set, before any work.
"""

import json
from typing import Any, Dict, List, Sequence

from vissl_clusterfit.config import plugin_defaults


def is_fashion_mnist_source(name: str) -> bool:
    """The plugin's Fashion-MNIST data sources (vcf_fashion_mnist, _tops)."""
    return str(name).startswith("vcf_fashion_mnist")


def _canonical(transforms: Sequence[Dict[str, Any]]) -> str:
    return json.dumps([dict(t) for t in transforms], sort_keys=True, default=str)


def _sources(cfg: Any, split: str) -> List[str]:
    if split not in cfg.DATA:
        return []
    return [str(s) for s in cfg.DATA[split].get("DATA_SOURCES", [])]


def check_extraction_transforms(
    cfg: Any, section: str, transforms: Sequence[Dict[str, Any]]
) -> None:
    """Refuse the Fashion-MNIST default extraction transforms of ``VCF.<section>`` on a
    DATA.TRAIN that is not Fashion-MNIST."""
    default = plugin_defaults()["VCF"][section]["TRANSFORMS"]
    if _canonical(transforms) != _canonical(default):
        return
    others = [s for s in _sources(cfg, "TRAIN") if not is_fashion_mnist_source(s)]
    if others:
        raise ValueError(
            f"config.VCF.{section}.TRANSFORMS are the plugin's Fashion-MNIST defaults "
            f"(Resize 28, Fashion-MNIST mean/std) but config.DATA.TRAIN.DATA_SOURCES="
            f"{_sources(cfg, 'TRAIN')}: features would be extracted from 28 px images "
            f"with the wrong normalisation. Set config.VCF.{section}.TRANSFORMS to "
            "deterministic transforms for your images, e.g. for ImageNet-style folders "
            "Resize 256, CenterCrop 224, ToTensor, Normalize with ImageNet's mean/std "
            "(what +vissl_clusterfit_defaults=ncf and the *_resnet50_in1k_gpu configs set)"
        )


def check_assign_test_split(cfg: Any) -> None:
    """ASSIGN_TEST must not assign the Fashion-MNIST preset's test split to the centroids
    of another training set."""
    train, test = _sources(cfg, "TRAIN"), _sources(cfg, "TEST")
    fmnist_test = test and all(is_fashion_mnist_source(s) for s in test)
    if fmnist_test and not any(is_fashion_mnist_source(s) for s in train):
        paths = list(cfg.DATA.TEST.get("DATA_PATHS", []))
        raise ValueError(
            f"config.VCF.CLUSTERFIT.ASSIGN_TEST=true would assign config.DATA.TEST "
            f"(DATA_SOURCES={test}, DATA_PATHS={paths}: the Fashion-MNIST preset) to the "
            f"centroids of config.DATA.TRAIN (DATA_SOURCES={train}). Point DATA.TEST at "
            "your own validation split (DATA_SOURCES, DATASET_NAMES / DATA_PATHS, "
            "LABEL_PATHS), or set ASSIGN_TEST=false"
        )

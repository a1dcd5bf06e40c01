"""Plain-PyTorch ceilings the plugin's loops are measured against (issue 21): the
torchvision ``ImageFolder`` loader, ResNet-50 inference and a ResNet-50 train step.
No VISSL, no plugin: what the same machine does with the same data, model, batch and
precision when nothing else runs. Every function returns a dict of figures.
"""

import dataclasses
import time
from typing import Any, Callable, Dict, Optional

import torch


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PRECISIONS = ("fp32", "bf16_cl")  # float32 NCHW | bf16 autocast + channels_last


@dataclasses.dataclass(frozen=True)
class Timing:
    """How a model figure is timed: ``warmup`` untimed steps, then enough steps to
    last about ``min_s`` seconds (at most ``max_iters``; None: no limit)."""

    min_s: float = 2.0
    warmup: int = 5
    max_iters: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class ModelFigure:
    """One ResNet-50 figure: batch, precision (PRECISIONS), input size, timing."""

    batch_size: int
    precision: str = "fp32"
    size: int = 224
    timing: Timing = Timing()


def loader_rate(
    folder: str,
    workers: int,
    batch_size: int = 128,
    multiprocessing_method: str = "fork",
    pin_memory: bool = True,
    crop: int = 224,
) -> Dict[str, Any]:
    """``ImageFolder`` with the extraction's transforms (resize 256, center crop 224,
    ToTensor, Normalize: ncf.yaml's VCF.CLUSTERFIT.TRANSFORMS) over every image once,
    at the extraction's defaults (batch 128, 2 batches prefetched per worker).
    ``overall``: from creating the loader to the last batch (worker start included);
    ``steady``: after the first batch."""
    import torchvision
    from torchvision import transforms as T

    tf = T.Compose(
        [
            T.Resize(round(crop * 256 / 224)),
            T.CenterCrop(crop),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    dataset = torchvision.datasets.ImageFolder(folder, tf)
    kwargs: Dict[str, Any] = {}
    if workers > 0:
        kwargs = {
            "multiprocessing_context": multiprocessing_method,
            "prefetch_factor": 2,
        }
    t0 = time.perf_counter()
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=pin_memory and torch.cuda.is_available(),
        **kwargs,
    )
    n, first, n_first = 0, 0.0, 0
    for images, _ in loader:
        if not first:
            first, n_first = time.perf_counter(), len(images)
        n += len(images)
    end = time.perf_counter()
    return {
        "images": n,
        "workers": workers,
        "batch_size": batch_size,
        "first_batch_s": round(first - t0, 3),
        "overall_img_s": round(n / (end - t0), 1),
        "steady_img_s": round((n - n_first) / (end - first), 1) if end > first else 0.0,
    }


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(
    step: Callable[[], None], batch_size: int, device: torch.device, timing: Timing
) -> Dict[str, Any]:
    """Images per second of ``step`` (the number of timed calls estimated from one)."""
    min_s, max_iters = timing.min_s, timing.max_iters
    for _ in range(timing.warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    step()
    sync(device)
    per_iter = time.perf_counter() - t0
    iters = max(3, int(min_s / max(per_iter, 1e-6)))
    iters = min(iters, max_iters) if max_iters else iters
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    sync(device)
    seconds = time.perf_counter() - t0
    return {
        "batch_size": batch_size,
        "iters": iters,
        "img_s": round(iters * batch_size / seconds, 1),
    }


def _figure(step: Callable[[], None], device: torch.device, fig: ModelFigure) -> Dict:
    out = _rate(step, fig.batch_size, device, fig.timing)
    return dict(out, precision=fig.precision, image_size=fig.size)


def torchvision_resnet(
    device: torch.device, precision: str, arch: str = "resnet50"
) -> torch.nn.Module:
    """torchvision's ``arch`` (random init) on ``device``, channels_last for
    ``bf16_cl``."""
    import torchvision

    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision}: use one of {PRECISIONS}")
    model = getattr(torchvision.models, arch)(weights=None).to(device)
    if precision == "bf16_cl":
        model = model.to(memory_format=torch.channels_last)
    return model


def model_inputs(
    device: torch.device, batch_size: int, size: int, precision: str
) -> torch.Tensor:
    """Random images on ``device``, channels_last for ``bf16_cl``."""
    x = torch.randn(batch_size, 3, size, size, device=device)
    if precision == "bf16_cl":
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """bf16 autocast for ``bf16_cl``, a disabled one for ``fp32``."""
    return torch.autocast(
        device_type=device.type,
        dtype=torch.bfloat16,
        enabled=precision == "bf16_cl",
    )


def resnet50_inference(device: torch.device, fig: ModelFigure) -> Dict[str, Any]:
    """Forward passes of torchvision's ResNet-50 (eval, no grad) on device-resident
    random images: the trunk's ceiling for feature extraction."""
    precision = fig.precision
    model = torchvision_resnet(device, precision).eval()
    x = model_inputs(device, fig.batch_size, fig.size, precision)

    @torch.no_grad()
    def step() -> None:
        with autocast(device, precision):
            model(x)

    return _figure(step, device, fig)


def sgd_train_step(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    precision: str,
) -> Callable[[], None]:
    """One plain SGD train step of ``model`` on the fixed batch ``(x, y)``: forward
    under ``autocast(precision)``, cross-entropy, backward, step, and the loss read back
    (``.item()``) as VISSL's loop does. A model returning a list (VISSL's) is scored
    on its first output."""
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        with autocast(device, precision):
            out = model(x)
            if isinstance(out, (list, tuple)):
                out = out[0]
            loss = torch.nn.functional.cross_entropy(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()

    return step


def resnet50_train(
    device: torch.device, fig: ModelFigure, num_classes: int = 4
) -> Dict[str, Any]:
    """SGD train steps (``sgd_train_step``) of a ResNet-50 with a ``num_classes``
    linear head (RotNet: 4) on device-resident random images: the ceiling for VISSL's
    loop."""
    precision, batch_size = fig.precision, fig.batch_size
    model = torchvision_resnet(device, precision)
    model.fc = torch.nn.Linear(model.fc.in_features, num_classes).to(device)
    x = model_inputs(device, batch_size, fig.size, precision)
    y = torch.randint(0, num_classes, (batch_size,), device=device)
    return _figure(sgd_train_step(model, x, y, device, precision), device, fig)

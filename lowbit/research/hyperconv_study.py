"""The hypernetwork-convolution study behind ``lowbit eval hyperconv`` (experiments E1–E4).

Images: scikit-image's bundled ``skimage.data`` images that load without a download, split by
image (never by patch): train on astronaut, coffee, rocket, immunohistochemistry; validate on
chelsea; test on center crops of hubble_deep_field and retina.

Tasks: ``denoise`` (Gaussian noise, σ = 25/255, RGB → RGB) and ``demosaic`` (an RGGB Bayer
mosaic plus σ = 5/255 noise, packed to 4 channels at half resolution → RGB).

Networks (:class:`RestorationNet`): a residual CNN of ``depth`` k = 3 convolutions of ``width``
channels with ReLUs, whose middle convolutions are either ``nn.Conv2d`` ("plain") or
:class:`~lowbit.research.hyperconv.HyperConv2d` ("hc") with the same width and kernel size, so
both variants have exactly the same convolution FLOPs; the HC variant adds only the MLP's FLOPs,
which do not grow with the image.

Experiments:

* **E1** quality (PSNR, SSIM) against FLOPs per pixel and against parameters: plain nets of
  growing width, HC nets at one width with the MLP width swept, several training seeds;
* **E2** amortization: FLOPs per pixel (analytic and measured by torch's ``FlopCounterMode``)
  and wall time per megapixel against image size, plain vs HC with a small and a huge MLP;
* **E3** a double-descent probe at fixed FLOPs: a tiny training set with noisy targets
  (Noise2Noise-style), full-batch training, the MLP width swept, ≥ 2 seeds;
* **E4** fixed memory: a fixed bit budget for the MLP weights, ``b`` bits per weight with the
  hidden width ``h_b = round(32·h_32 / b)`` so that weights × bits stays constant; the trained
  MLP weights are rounded to ``b`` bits with lowbit's ``nearest_even``, ``stochastic`` and
  ``diffuse`` (:func:`lowbit.research.weights.round_weights`, one grid per output neuron), or
  fine-tuned with a float shadow copy and rounded forward weights (``shadow_ste``).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lowbit.research.hyperconv import Cost, HyperConv2d, layer_cost

TRAIN_IMAGES = ("astronaut", "coffee", "rocket", "immunohistochemistry")
VAL_IMAGES = ("chelsea",)
TEST_IMAGES = ("hubble_deep_field", "retina")
#: Noise σ of each task (images in [0, 1]).
NOISE = {"denoise": 25 / 255, "demosaic": 5 / 255}
TASKS = tuple(NOISE)
#: Rounding methods of E4 (``float``: the unrounded network of that width).
E4_METHODS = ("float", "nearest_even", "stochastic", "diffuse", "shadow_ste")


@dataclass(frozen=True)
class StudyConfig:
    """Sizes of one run of the study (:data:`QUICK`, :data:`FULL`)."""

    steps: int = 800              # training steps of E1 (Adam, cosine decay)
    batch: int = 8
    patch: int = 32               # training patch (output pixels)
    lr: float = 2e-3
    seeds: int = 3                # training seeds of E1
    test_size: int = 256          # side of the test and validation center crops
    depth: int = 4
    tiles: int = 4
    descriptor: str = "both"
    tasks: tuple[str, ...] = TASKS
    e1_plain_widths: tuple[int, ...] = (8, 12, 16, 24)
    e1_hc_width: int = 8
    e1_hidden: tuple[int, ...] = (16, 128, 1024)
    #: Other descriptors tried in E1 at the largest-but-one hidden width (the switch).
    e1_other_descriptors: tuple[str, ...] = ("position", "content")
    e2_sizes: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
    e2_hidden: tuple[int, ...] = (16, 4096)
    e2_repeats: int = 3
    e3_hidden: tuple[int, ...] = (2, 6, 16, 48, 128, 384, 1024, 2048)
    e3_patches: int = 8
    e3_patch: int = 24
    e3_steps: int = 1500
    e3_seeds: int = 2
    e4_bits: tuple[int, ...] = (1, 2, 3, 4, 8, 32)
    e4_hidden_at_32: int = 8
    e4_steps: int = 500
    e4_shadow_steps: int = 200
    e4_seeds: int = 2             # training seeds of E4
    e4_stochastic_seeds: int = 4

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: The full run (measured 2026-12-03: 1575 CPU-seconds, 49 minutes wall with --jobs 2 on 2
#: shared cores at load 4-12; estimated about 15 minutes on 2 idle cores) and the quick one (measured:
#: 280 CPU-seconds, numba compilation included).
FULL = StudyConfig()
QUICK = StudyConfig(
    steps=500, batch=8, seeds=2, test_size=128, e1_plain_widths=(8, 16),
    e1_hidden=(16, 512), e1_other_descriptors=(), e2_sizes=(64, 128, 256, 512),
    e2_hidden=(16, 2048), e2_repeats=2, e3_hidden=(2, 16, 128, 1024), e3_patches=4,
    e3_patch=24, e3_steps=400, e3_seeds=2, e4_bits=(1, 2, 8, 32), e4_steps=300,
    e4_shadow_steps=100, e4_seeds=1, e4_stochastic_seeds=2,
)


# -- data -------------------------------------------------------------------------------------
@functools.cache
def load_image(name: str) -> torch.Tensor:
    """``skimage.data.<name>()`` as float32 RGB in [0, 1], shape (3, H, W)."""
    try:
        import skimage.data
    except ImportError as exc:
        raise RuntimeError("the hyperconv study needs scikit-image: pip install scikit-image") from exc
    a = np.asarray(getattr(skimage.data, name)())
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    x = torch.from_numpy(a[..., :3].astype(np.float32) / 255.0)
    return x.permute(2, 0, 1).contiguous()


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size × size`` crop (the whole side if the image is smaller); even sides."""
    h, w = x.shape[-2:]
    sh, sw = min(size, h) // 2 * 2, min(size, w) // 2 * 2
    top, left = (h - sh) // 2, (w - sw) // 2
    return x[..., top:top + sh, left:left + sw]


def random_patches(names: Sequence[str], count: int, size: int,
                   generator: torch.Generator) -> torch.Tensor:
    """``count`` random ``size × size`` crops, each from a random image of ``names``."""
    images = [load_image(n) for n in names]
    out = torch.empty(count, 3, size, size)
    for i in range(count):
        img = images[int(torch.randint(len(images), (1,), generator=generator))]
        top = int(torch.randint(img.shape[1] - size + 1, (1,), generator=generator))
        left = int(torch.randint(img.shape[2] - size + 1, (1,), generator=generator))
        out[i] = img[:, top:top + size, left:left + size]
    return out


def degrade(task: str, clean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The network input for clean RGB images (B, 3, H, W), H and W even.

    ``denoise``: clean + σ·N(0, 1). ``demosaic``: the RGGB mosaic plus σ·N(0, 1), packed as
    (R, G at R rows, G at B rows, B) at half resolution, shape (B, 4, H/2, W/2).
    """
    sigma = NOISE[task]
    if task == "denoise":
        return clean + sigma * torch.randn(clean.shape, generator=generator)
    if task != "demosaic":
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    packed = torch.stack([clean[:, 0, 0::2, 0::2], clean[:, 1, 0::2, 1::2],
                          clean[:, 1, 1::2, 0::2], clean[:, 2, 1::2, 1::2]], dim=1)
    return packed + sigma * torch.randn(packed.shape, generator=generator)


# -- networks ---------------------------------------------------------------------------------
class RestorationNet(nn.Module):
    """A residual CNN: head conv, ``depth − 2`` middle convs (plain or HC), tail conv.

    ``denoise``: output = input + net(input). ``demosaic``: the net runs at half resolution on
    the packed mosaic, its 12 output channels are pixel-shuffled to RGB and added to the
    nearest-neighbour upsampling of (R, mean of the Gs, B). The tail convolution starts at
    zero, so an untrained net outputs that residual baseline.
    """

    def __init__(self, task: str, width: int, *, depth: int = 4, hidden: int | None = None,
                 tiles: int = 4, descriptor: str = "both") -> None:
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if depth < 3:
            raise ValueError(f"depth must be >= 3, got {depth!r}")
        self.task = task
        c_in, c_out = (3, 3) if task == "denoise" else (4, 12)
        convs: list[nn.Module] = [nn.Conv2d(c_in, width, 3, padding=1)]
        for _ in range(depth - 2):
            convs.append(nn.Conv2d(width, width, 3, padding=1) if hidden is None else
                         HyperConv2d(width, width, 3, tiles=tiles, descriptor=descriptor,
                                     hidden=hidden))
        tail = nn.Conv2d(width, c_out, 3, padding=1)
        with torch.no_grad():  # the net starts as its residual baseline (the identity)
            for p in tail.parameters():
                p.zero_()
        convs.append(tail)
        self.convs = nn.ModuleList(convs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for i, conv in enumerate(self.convs):
            y = conv(y)
            if i < len(self.convs) - 1:
                y = torch.relu(y)
        if self.task == "denoise":
            return x + y
        g = 0.5 * (x[:, 1:2] + x[:, 2:3])
        base = torch.cat([x[:, 0:1], g, x[:, 3:4]], dim=1)
        return F.interpolate(base, scale_factor=2, mode="nearest") + F.pixel_shuffle(y, 2)

    def cost(self, height: int, width: int, batch: int = 1) -> Cost:
        """The analytic cost for RGB outputs of ``height × width`` (convolutions and MLPs;
        ReLUs, the residual add and the pixel shuffle are not counted); ``pixels`` = outputs."""
        h, w = (height, width) if self.task == "denoise" else (height // 2, width // 2)
        total = Cost(pixels=batch * height * width)
        for conv in self.convs:
            total = total + layer_cost(conv, h, w, batch)
        return total

    def hypernetwork_weights(self) -> list[torch.Tensor]:
        """The weight matrices of the HC layers' MLPs (what E4 rounds; biases excluded)."""
        return [m.weight for hc in self.convs if isinstance(hc, HyperConv2d)
                for m in hc.mlp if isinstance(m, nn.Linear)]


# -- training and evaluation ------------------------------------------------------------------
@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Small convolutions: one torch thread per process is faster on a shared machine."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _train(model: RestorationNet, steps: int, cfg: StudyConfig, seed: int, *, lr: float | None = None,
           batches: Callable[[int], tuple[torch.Tensor, torch.Tensor]] | None = None,
           forward_weights: Callable[[torch.Tensor], torch.Tensor] | None = None) -> float:
    """Adam with cosine decay on L2; returns the last step's loss.

    ``batches(step)`` gives (input, target); by default random training patches with fresh
    noise. ``forward_weights`` maps each hypernetwork weight to the weight used in the forward
    pass (straight-through: the gradient reaches the float shadow copy unchanged).
    """
    from torch.func import functional_call

    g = torch.Generator().manual_seed(10_007 * seed + 1)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr if lr is None else lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / max(steps, 1))))
    names = {id(p): n for n, p in model.named_parameters()}
    shadow = model.hypernetwork_weights() if forward_weights is not None else []
    loss_value = math.nan
    for step in range(steps):
        if batches is None:
            clean = random_patches(TRAIN_IMAGES, cfg.batch, cfg.patch, g)
            x, target = degrade(model.task, clean, g), clean
        else:
            x, target = batches(step)
        if forward_weights is None:
            y = model(x)
        else:
            swapped = {names[id(w)]: w + (forward_weights(w.detach()) - w).detach() for w in shadow}
            y = functional_call(model, swapped, (x,), strict=False)
        loss = F.mse_loss(y, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        loss_value = float(loss.detach())
    return loss_value


def evaluate(model: nn.Module, task: str, names: Sequence[str], size: int,
             seed: int = 12_345) -> dict[str, float]:
    """Mean PSNR (dB), SSIM and MSE over center crops of ``names`` with fixed noise."""
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(seed)
    psnr, ssim, mse = [], [], []
    with torch.no_grad():
        for name in names:
            clean = center_crop(load_image(name), size).unsqueeze(0)
            out = model(degrade(task, clean, g)).clamp(0, 1)
            err = float(F.mse_loss(out, clean))
            mse.append(err)
            psnr.append(10 * math.log10(1 / max(err, 1e-12)))
            ssim.append(float(structural_similarity(out[0].numpy(), clean[0].numpy(),
                                                    channel_axis=0, data_range=1.0)))
    return {"psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim)), "mse": float(np.mean(mse))}


def _describe(model: RestorationNet, cfg: StudyConfig, patch: int, batch: int) -> dict[str, Any]:
    train = model.cost(patch, patch, batch)
    mp = model.cost(1000, 1000)
    return {"params": train.params, "flops_per_pixel_train": train.per_pixel,
            "flops_per_pixel_1mp": mp.per_pixel,
            "conv_flops_per_pixel": (mp.conv + mp.conv_bias) / mp.pixels,
            "flops_per_pixel_12mp": model.cost(3000, 4000).per_pixel}


def _model(task: str, width: int, hidden: int | None, cfg: StudyConfig, seed: int,
           descriptor: str | None = None) -> RestorationNet:
    torch.manual_seed(seed)
    return RestorationNet(task, width, depth=cfg.depth, hidden=hidden, tiles=cfg.tiles,
                          descriptor=cfg.descriptor if descriptor is None else descriptor)


# -- jobs (one training run each; independent, so they may run in worker processes) -----------
def job_e1(cfg: StudyConfig, task: str, width: int, hidden: int | None, seed: int,
           descriptor: str | None = None) -> dict[str, Any]:
    """Train one E1 network and evaluate it on the test and validation crops."""
    model = _model(task, width, hidden, cfg, seed, descriptor)
    t0 = time.perf_counter()
    loss = _train(model, cfg.steps, cfg, seed)
    res: dict[str, Any] = {"task": task, "variant": "plain" if hidden is None else "hc", "width": width,
           "hidden": hidden, "seed": seed, "descriptor": None if hidden is None else
           (descriptor or cfg.descriptor), "train_loss": loss,
           "train_seconds": time.perf_counter() - t0}
    res.update(_describe(model, cfg, cfg.patch, cfg.batch))
    res["test"] = evaluate(model, task, TEST_IMAGES, cfg.test_size)
    res["val"] = evaluate(model, task, VAL_IMAGES, cfg.test_size)
    return res


def e3_data(cfg: StudyConfig, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The tiny E3 training set: (noisy inputs, independently noisy targets), fixed."""
    g = torch.Generator().manual_seed(777 + seed)
    clean = random_patches(TRAIN_IMAGES, cfg.e3_patches, cfg.e3_patch, g)
    sigma = NOISE["denoise"]
    return (clean + sigma * torch.randn(clean.shape, generator=g),
            clean + sigma * torch.randn(clean.shape, generator=g))


def job_e3(cfg: StudyConfig, hidden: int, seed: int) -> dict[str, Any]:
    """Train one E3 network on the tiny noisy-target set (full batch) and test it."""
    x, target = e3_data(cfg, seed)
    model = _model("denoise", cfg.e1_hc_width, hidden, cfg, seed)
    loss = _train(model, cfg.e3_steps, cfg, seed, batches=lambda step: (x, target))
    res: dict[str, Any] = {"hidden": hidden, "seed": seed, "train_loss": loss,
           "target_values": int(target.numel())}
    res.update(_describe(model, cfg, cfg.e3_patch, cfg.e3_patches))
    res["test"] = evaluate(model, "denoise", TEST_IMAGES, cfg.test_size)
    return res


def e4_hidden(bits: int, cfg: StudyConfig) -> int:
    """Hidden width at ``bits`` per weight: the MLP weights are linear in it, so
    ``h_b = round(32·h_32 / b)`` keeps weights × bits (nearly) constant."""
    return max(1, round(32 * cfg.e4_hidden_at_32 / bits))


def _rounded_copy(model: RestorationNet, bits: int, method: str, seed: int | None) -> RestorationNet:
    from lowbit.research.weights import round_weights

    out = copy.deepcopy(model)
    with torch.no_grad():
        for i, w in enumerate(out.hypernetwork_weights()):
            w.copy_(round_weights(w.detach(), bits, method,
                                  seed=None if seed is None else 1000 * seed + i))
    return out


def job_e4(cfg: StudyConfig, bits: int, seed: int) -> dict[str, Any]:
    """E4 at one code width: train the float HC net of width ``h_b``, round its MLP weights
    with each method, fine-tune a shadow copy with rounded forward weights; test PSNR each."""
    from lowbit.research.weights import round_weights

    hidden = e4_hidden(bits, cfg)
    model = _model("denoise", cfg.e1_hc_width, hidden, cfg, seed)
    _train(model, cfg.e4_steps, cfg, seed)
    weights = sum(w.numel() for w in model.hypernetwork_weights())
    res: dict[str, Any] = {"bits": bits, "hidden": hidden, "seed": seed,
                           "mlp_weights": weights, "weight_bits": weights * bits,
                           "mlp_float_biases": sum(m.bias.numel() for hc in model.convs
                                                   if isinstance(hc, HyperConv2d)
                                                   for m in hc.mlp if isinstance(m, nn.Linear)),
                           "params": sum(p.numel() for p in model.parameters())}
    test: dict[str, Any] = {"float": evaluate(model, "denoise", TEST_IMAGES, cfg.test_size)}
    if bits >= 32:  # float32 is the 32-bit code: no rounding
        for m in ("nearest_even", "diffuse"):
            test[m] = test["float"]
        test["stochastic"] = [test["float"]]
    else:
        for m in ("nearest_even", "diffuse"):
            test[m] = evaluate(_rounded_copy(model, bits, m, None), "denoise", TEST_IMAGES,
                               cfg.test_size)
        test["stochastic"] = [
            evaluate(_rounded_copy(model, bits, "stochastic", s), "denoise", TEST_IMAGES,
                     cfg.test_size) for s in range(cfg.e4_stochastic_seeds)]
    shadow = copy.deepcopy(model)
    rounder = None if bits >= 32 else (lambda w: round_weights(w, bits, "nearest_even"))
    _train(shadow, cfg.e4_shadow_steps, cfg, seed + 100, lr=cfg.lr / 4, forward_weights=rounder)
    final = shadow if bits >= 32 else _rounded_copy(shadow, bits, "nearest_even", None)
    test["shadow_ste"] = evaluate(final, "denoise", TEST_IMAGES, cfg.test_size)
    res["test"] = test
    return res


def run_job(job: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """Run one job ``(kind, kwargs)`` single-threaded (the entry point of worker processes)."""
    kind, kwargs = job
    jobs: dict[str, Callable[..., dict[str, Any]]] = {"e1": job_e1, "e3": job_e3, "e4": job_e4}
    fn = jobs[kind]
    with single_thread():
        return {"kind": kind, **fn(**kwargs)}


def plan_jobs(cfg: StudyConfig) -> list[tuple[str, dict[str, Any]]]:
    """Every training job of E1, E3 and E4 for ``cfg``, slowest kinds first."""
    jobs: list[tuple[str, dict[str, Any]]] = []
    for b in cfg.e4_bits:
        for s in range(cfg.e4_seeds):
            jobs.append(("e4", {"cfg": cfg, "bits": b, "seed": s}))
    for task in cfg.tasks:
        for s in range(cfg.seeds):
            for w in cfg.e1_plain_widths:
                jobs.append(("e1", {"cfg": cfg, "task": task, "width": w, "hidden": None, "seed": s}))
            for h in cfg.e1_hidden:
                jobs.append(("e1", {"cfg": cfg, "task": task, "width": cfg.e1_hc_width,
                                    "hidden": h, "seed": s}))
            h_other = cfg.e1_hidden[-2] if len(cfg.e1_hidden) > 1 else cfg.e1_hidden[0]
            for d in cfg.e1_other_descriptors:
                jobs.append(("e1", {"cfg": cfg, "task": task, "width": cfg.e1_hc_width,
                                    "hidden": h_other, "seed": s, "descriptor": d}))
    for h in cfg.e3_hidden:
        for s in range(cfg.e3_seeds):
            jobs.append(("e3", {"cfg": cfg, "hidden": h, "seed": s}))
    return jobs


def run_e2(cfg: StudyConfig) -> list[dict[str, Any]]:
    """E2 in this process, after the training jobs (timings want a quiet machine): per image
    size, analytic and measured FLOPs per pixel and the best-of-``e2_repeats`` wall time."""
    from torch.utils.flop_counter import FlopCounterMode

    rows = []
    variants: list[tuple[str, int | None]] = [("plain", None)] + [("hc", h) for h in cfg.e2_hidden]
    with single_thread(), torch.no_grad():
        for variant, hidden in variants:
            model = _model("denoise", cfg.e1_hc_width, hidden, cfg, 0).eval()
            for size in cfg.e2_sizes:
                x = torch.rand(1, 3, size, size)
                with FlopCounterMode(display=False) as counter:
                    model(x)
                best = math.inf
                for _ in range(cfg.e2_repeats):
                    t0 = time.perf_counter()
                    model(x)
                    best = min(best, time.perf_counter() - t0)
                c = model.cost(size, size)
                rows.append({"variant": variant, "hidden": hidden, "size": size,
                             "params": c.params, "flops_per_pixel": c.per_pixel,
                             "measured_flops_per_pixel": counter.get_total_flops() / size**2,
                             "mlp_share": (c.mlp + c.mlp_elementwise) / c.flops,
                             "seconds": best, "seconds_per_mp": best / (size * size / 1e6)})
    return rows


def run_study(cfg: StudyConfig = QUICK, *, jobs: int = 1,
              progress: bool | None = None) -> dict[str, Any]:
    """Run E1–E4; returns the results dictionary (``results.json``'s ``study``).

    ``jobs`` > 1 runs the training jobs in that many worker processes (spawned, one torch
    thread each); the results do not depend on it (every job is seeded on its own).
    """
    from tqdm.auto import tqdm

    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"jobs must be an int >= 1, got {jobs!r}")
    for name in TRAIN_IMAGES + VAL_IMAGES + TEST_IMAGES:  # fail early, before any training
        load_image(name)
    planned = plan_jobs(cfg)
    disable = None if progress is None else not progress
    t0 = time.perf_counter()
    results: list[dict[str, Any]] = []
    with tqdm(total=len(planned), desc="hyperconv study", unit="run", disable=disable) as bar:
        if jobs == 1:
            for job in planned:
                results.append(run_job(job))
                bar.update()
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
                futures = {pool.submit(run_job, job): i for i, job in enumerate(planned)}
                done: dict[int, dict[str, Any]] = {}
                for fut in as_completed(futures):
                    done[futures[fut]] = fut.result()
                    bar.update()
            results = [done[i] for i in range(len(planned))]  # the planned order
    t_train = time.perf_counter() - t0
    e2 = run_e2(cfg)
    pick = lambda kind: [{k: v for k, v in r.items() if k != "kind"}  # noqa: E731
                         for r in results if r["kind"] == kind]
    return {"config": cfg.to_json(), "e1": pick("e1"), "e2": e2, "e3": pick("e3"),
            "e4": pick("e4"), "train_seconds": t_train,
            "total_seconds": time.perf_counter() - t0, "jobs": jobs}

"""How the compute runs, beyond eager float32 PyTorch: thread settings, bf16 autocast where the
CPU has native bf16, torch.compile of the training step, and encoders folded for inference.

Each speed option is decided here from what the machine has (CPU flags, a C++ compiler, the
device), so that the training loop and the commands only ask; a choice that would be slower
or cannot work is refused with the reason, or noted in one line and left off."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
from pathlib import Path

import torch
from torch import nn

from sketchshot.errors import ConfigError

# CPU flags of native bf16 arithmetic (as /proc/cpuinfo and torch.cpu name them): AVX-512 BF16
# (Cooper Lake, Zen 4 and later) and AMX (Sapphire Rapids and later). Without them, oneDNN
# emulates bf16 and autocast runs much slower than float32.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")

# torch.compile's backend; tests swap in "eager" (dynamo alone, no C++ compiler needed)
COMPILE_BACKEND = "inductor"
# --compile auto compiles when the run's remaining time, estimated from AUTO_PROBE_STEPS eager
# steps after the first, is at least AUTO_COMPILE_SECONDS. The rule: a CPU warm-up of 10-70 s
# (conv4) to a few minutes (resnet18, swin_t) against a speed-up of 1.2-2x; at the low end
# (1.2x) the compiled rest saves a sixth of its time, which pays a 100 s warm-up from 600 s on.
AUTO_PROBE_STEPS = 5
AUTO_COMPILE_SECONDS = 600.0
# Then it times as many compiled steps and keeps them only if they are this much faster: on a
# 2-core AVX-512 EPYC (torch 2.14) the compiled conv4 step ran at 0.69x the eager channels-last
# one (0.54x with bf16) and resnet18's at 0.98-1.0x (benchmarks/README.md).
AUTO_MIN_SPEEDUP = 1.05


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags: ``torch.cpu.get_capabilities()`` where this torch has it (any
    OS; recent versions), else the flags of /proc/cpuinfo (Linux); empty where neither says."""
    capabilities = getattr(torch.cpu, "get_capabilities", None)
    if capabilities is not None:
        with contextlib.suppress(Exception):
            return frozenset(k for k, v in capabilities().items() if v is True)
    with contextlib.suppress(OSError):
        return parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    return frozenset()


def parse_cpuinfo(text: str) -> frozenset[str]:
    """The flags of the first processor in /proc/cpuinfo's ``text`` (x86 ``flags``, Arm
    ``Features``)."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (``NATIVE_BF16_FLAGS``)."""
    return any(flag in cpu_flags() for flag in NATIVE_BF16_FLAGS)


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``--amp`` (off, bf16, fp16, auto) on ``device``; None: float32.

    CUDA: bf16 or fp16 as asked; auto takes bf16 where the GPU has it. CPU: bf16 only where
    the CPU has native bf16, fp16 never (a ``ConfigError`` says why); auto takes bf16 where it
    is native. Other devices (MPS): None (the loop notes that --amp is ignored there)."""
    if amp == "off":
        return None
    if device.type == "cuda":
        if amp == "auto":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
        return torch.bfloat16 if amp == "bf16" else torch.float16
    if device.type != "cpu":
        return None
    if amp == "fp16":
        raise ConfigError(
            "--amp fp16 is for CUDA GPUs; on the CPU use --amp bf16 (CPUs with native bf16) "
            "or leave --amp off"
        )
    if native_bf16():
        return torch.bfloat16
    if amp == "auto":
        return None
    raise ConfigError(
        "--amp bf16: this CPU has no native bf16 (neither avx512_bf16 nor amx_bf16 in its "
        "flags), where bf16 runs much slower than float32; leave --amp off"
    )


def set_threads(threads: int | None) -> None:
    """Compute on ``threads`` threads (``torch.set_num_threads``, and the inter-op pool where
    it can still be set: once, before any parallel work); None: torch's default (one per
    core). On a machine that other jobs share, fewer threads than cores (often 1) run faster:
    threads that wait for each other spin while the other jobs hold the cores."""
    if threads is None:
        return
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # already set, or parallel work has started
        torch.set_num_interop_threads(threads)


def compile_problem(device: torch.device) -> str | None:
    """Why torch.compile cannot run on ``device`` here (None if nothing is known against it):
    its CPU backend builds C++ with a compiler found on the PATH ($CXX, g++, c++ or clang++),
    on CUDA Triton needs a C compiler ($CC, cc, gcc or clang)."""
    if COMPILE_BACKEND != "inductor":
        return None
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    if device.type not in ("cpu", "cuda"):
        return f"torch.compile is used on the CPU and CUDA, not on {device.type}"
    if device.type == "cpu":
        names, what = ("CXX", "g++", "c++", "clang++"), "C++ compiler (g++ or clang++)"
    else:
        names, what = ("CC", "cc", "gcc", "clang"), "C compiler (gcc or clang)"
    env = os.environ.get(names[0])
    candidates = ([env.split()[0]] if env and env.split() else []) + list(names[1:])
    if not any(shutil.which(c) for c in candidates):
        return f"no {what} on the PATH, which torch.compile needs"
    return None


def compiled(module: nn.Module) -> nn.Module:
    """``module`` wrapped by ``torch.compile`` (``COMPILE_BACKEND``); compilation happens at the
    first call. The wrapper's own state dict has ``_orig_mod.`` keys: save ``module``."""
    return torch.compile(module, backend=COMPILE_BACKEND)


def failure_reason(exc: BaseException) -> str:
    """One short line of why compiling failed: the innermost error a compiler failure wraps
    (``BackendCompilerFailed.inner_exception``, the cause), its type and first line."""
    while (inner := getattr(exc, "inner_exception", None) or exc.__cause__) is not None:
        exc = inner
    first = next((line for line in str(exc).splitlines() if line.strip()), "")
    text = f"{type(exc).__name__}: {first.strip()}" if first else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def should_compile(step_seconds: float, steps_left: int, seconds_left: float | None) -> bool:
    """``--compile auto``'s rule: compile when the rest of the run, ``steps_left`` steps of
    ``step_seconds`` (eager) and at most ``seconds_left`` (a time limit), lasts at least
    ``AUTO_COMPILE_SECONDS``."""
    rest = steps_left * step_seconds
    if seconds_left is not None:
        rest = min(rest, seconds_left)
    return rest >= AUTO_COMPILE_SECONDS


def compiled_pays(eager_seconds: float, compiled_seconds: float) -> bool:
    """Whether a compiled training step of ``compiled_seconds`` beats the eager one of
    ``eager_seconds`` by ``AUTO_MIN_SPEEDUP`` (``--compile auto`` keeps it then)."""
    return compiled_seconds * AUTO_MIN_SPEEDUP <= eager_seconds


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """A copy of ``module`` (in eval mode) in which every BatchNorm that follows a convolution
    is folded into it: ``conv(x) * s + b`` as one convolution with scaled weights and a bias,
    the same function without the BatchNorm's pass over memory. Traced with torch.fx; a module
    that cannot be traced raises (``torch.fx`` errors, ``TypeError``...)."""
    from torch.fx.experimental.optimization import fuse

    was_training = module.training
    module.eval()
    try:
        return fuse(module)  # a deep copy: ``module`` keeps its layers
    finally:
        module.train(was_training)


def inference_encoder(encoder: nn.Module, device: torch.device) -> nn.Module:
    """``encoder`` as inference runs it fastest, computing the same features (to float
    rounding): BatchNorm folded into the convolutions and, on the CPU and CUDA, channels-last
    weights (measured on conv4 at 28 px, one CPU thread: 1,600 -> 7,600 images/s). The
    encoder itself, untouched, where it cannot be traced."""
    try:
        fast = fold_batchnorm(encoder)
    except Exception:  # not traceable by torch.fx (data-dependent control flow...)
        return encoder
    if device.type in ("cpu", "cuda"):
        fast = fast.to(memory_format=torch.channels_last)
    return fast


def uncompiled(module: nn.Module) -> nn.Module:
    """The module under a ``torch.compile`` wrapper (``module`` itself if it has none)."""
    return getattr(module, "_orig_mod", module)


def copy_buffers(module: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``module``'s buffers (BatchNorm statistics), to restore after a failed step."""
    return {k: v.detach().clone() for k, v in module.named_buffers()}


def restore_buffers(module: nn.Module, saved: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for k, v in module.named_buffers():
            v.copy_(saved[k])

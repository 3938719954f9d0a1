"""What XLA is told per backend: on CPU, which library runs the convolutions.

XLA:CPU hands convolutions and reductions to YNNPACK by default, and YNNPACK runs each
convolution on one thread (the same time with one core or two), with weight gradients at
a quarter of the forward's speed. Eigen's convolutions use the intra-op thread pool and
their weight gradients are 3-4x faster; but turning YNNPACK off altogether also sends
reductions (BatchNorm statistics) to XLA's own reduce-window loops, which cost more than
the convolutions gain. So on CPU the default keeps YNNPACK for reductions only and lets
Eigen take the convolutions. Measured on the 2-core Intel Xeon (AVX-512, AMX), reference
CNN, batch 128, paired medians: train step 508 -> 952 img/s (1.87x, results/bench/cpu.md);
YNNPACK off entirely only 1.41x (results/bench/explore/conv_library.md); conv weight
gradients 3.2x faster (results/bench/conv_grad.md). Other backends get no options.
`compile.cpu_conv="ynnpack"` restores XLA's default, to compare on machines where it may win
(AVX2-only CPUs were not measured with Eigen).
"""

from __future__ import annotations

import jax

CPU_CONV = ("eigen", "ynnpack")
_YNN_FUSION = "xla_cpu_experimental_ynn_fusion_type"


def compiler_options(cpu_conv: str, backend: str | None = None) -> dict[str, str | bool]:
    """Per-jit XLA options (`jax.jit(..., compiler_options=...)`) for `backend` (default: JAX's)."""
    if cpu_conv not in CPU_CONV:
        raise ValueError(f"unknown compile.cpu_conv {cpu_conv!r}; use one of {CPU_CONV}")
    if (backend or jax.default_backend()) != "cpu" or cpu_conv == "ynnpack":
        return {}
    return {_YNN_FUSION: "LIBRARY_FUSION_TYPE_REDUCE"}

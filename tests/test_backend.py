"""Per-backend XLA options: Eigen convolutions on CPU change the speed, not the math."""

import chex
import jax
import optax
import pytest

from fmnist_jax import backend, members, steps, train


def test_compiler_options_per_library_and_backend():
    assert backend.compiler_options("eigen", "cpu") == {
        "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE"
    }
    assert backend.compiler_options("ynnpack", "cpu") == {}
    assert backend.compiler_options("eigen", "gpu") == {}
    with pytest.raises(ValueError, match="compile.cpu_conv"):
        backend.compiler_options("onednn")


def _loss_and_grads(cfg, cpu_conv):
    """Loss, gradients, batch stats and compiled HLO of one train-mode batch, compiled with `cpu_conv`'s options.

    Gradients, not parameters after an optimiser step, are compared: Adam's first step is
    lr * sign(g), which turns rounding-level differences of near-zero gradients into lr-sized ones.
    """
    cfg = cfg.copy_and_resolve_references()
    cfg.cv.folds, cfg.compile.cpu_conv = (0,), cpu_conv
    exp = train.setup(cfg)
    state = members.unstack(train.init_state(exp), 0)
    idx = jax.numpy.asarray(train.epoch_order(exp, 0)[0, 0])
    x, y = steps.normalize(steps.preprocess(exp.arrays["train_images"][idx]), cfg), exp.arrays["train_labels"][idx]

    def loss(params):
        logits, updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats}, x, train=True, mutable=["batch_stats"]
        )
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), updates

    fn = jax.jit(jax.value_and_grad(loss, has_aux=True), compiler_options=backend.compiler_options(cpu_conv))
    compiled = fn.lower(state.params).compile()
    return compiled(state.params), compiled.as_text()


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the options exist for XLA:CPU only")
def test_eigen_convolutions_equal_xla_default(tiny_config):
    tiny_config.model.widths = (32, 32)  # YNNPACK leaves convolutions of 8 or 16 channels to XLA anyway
    (eigen, eigen_hlo), (ynn, ynn_hlo) = (_loss_and_grads(tiny_config, lib) for lib in ("eigen", "ynnpack"))
    chex.assert_trees_all_close(eigen, ynn, rtol=1e-4, atol=1e-6)
    # The option took effect: convolutions leave YNNPACK's fusions, reductions stay in them.

    def ynn_fusions(hlo: str, op: str) -> list[str]:
        return [line for line in hlo.splitlines() if '"__ynn_fusion"' in line and f"/{op}" in line]

    assert ynn_fusions(ynn_hlo, "conv_general_dilated") and not ynn_fusions(eigen_hlo, "conv_general_dilated")
    assert ynn_fusions(eigen_hlo, "reduce_sum")

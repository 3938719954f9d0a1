"""The benchmark's bookkeeping: ratios taken within rounds, and verdicts against the targets."""

import pytest

from benchmarks import bench


def test_paired_ratios_and_verdicts():
    per_round = {"single": [100.0, 50.0, 90.0], "single_ynnpack": [50.0, 50.0, 30.0], "torch": [200.0, 100.0, 100.0]}
    r = bench.ratios(per_round)
    assert set(r) == {"single_vs_single_ynnpack", "single_vs_torch"}  # pairs whose variants did not run are left out
    assert r["single_vs_single_ynnpack"] == {"best": 2.0, "median": pytest.approx(1.8), "paired_median": 2.0}
    assert r["single_vs_torch"]["paired_median"] == pytest.approx(0.5)
    ideas = bench.ratios({"single": [100.0, 80.0], "distilled": [60.0, 40.0], "ema": [99.0, 80.0]})
    assert set(ideas) == {"distilled_vs_single", "ema_vs_single"}  # each idea's cost, paired with its round
    assert ideas["distilled_vs_single"]["paired_median"] == pytest.approx(0.55)
    report = {
        "time": "t",
        "command": "c",
        "settings": {"batch_size": 128, "steps": 1, "rounds": 3},
        "seconds": 1.0,
        "machine": {
            "cpu": "x",
            "isa": ["avx2"],
            "cpu_count": 2,
            "platform": "p",
            "jax_devices": ["cpu"],
            "backend": "cpu",
            "xla_flags": "",
            "versions": {"jax": "0"},
            "git": "g",
        },
        "load_average": {"start": [0], "end": [0], "per_round": []},
        "model": {
            "config": "default",
            "jax": "CNN",
            "jax_params": 1,
            "torch_params": None,
            "forward_flops_per_image": 1e6,
            "train_flops_per_image": 3e6,
        },
        "matmul_ceiling_gflops": 100.0,
        "skipped": {},
        "targets": bench.TARGETS,
        "ratios": r,
        "results": {
            n: {
                "what": n,
                "images_per_s": {"best": max(v), "median": sorted(v)[1]},
                "gflops_per_s": None,
                "train_flops_per_image": 1e6,
            }
            for n, v in per_round.items()
        },
    }
    md = bench.markdown(report)
    assert "| single_vs_single_ynnpack | 2.00 | 1.80 | 2.00 | ≥ 2.0x: met |" in md
    assert "| single_vs_torch | 0.50 | 0.90 | 0.50 | ≥ 1.0x: not met |" in md and "(ISA: avx2)" in md

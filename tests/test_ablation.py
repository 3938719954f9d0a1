"""Ablation grids: expansion, the budget check before training, resumption, paired tests, table and chart."""

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import chex
import numpy as np
import pytest
import yaml
from matplotlib.colors import to_rgba
from scipy import stats as scipy_stats

from fmnist_jax import ablation, config_lib, errors, models, plots, record, stats, tracking, train
from fmnist_jax.writers import read_jsonl
from fmnist_jax.commands import ablate as ablate_cmd

REPO = Path(__file__).resolve().parent.parent


def load(name: str):
    return config_lib.load_module(REPO / "ablations" / f"{name}.py")


def test_augmentation_grid_expands_to_full_configs():
    module = load("augmentation")
    base = module.get_config()
    base.train.epochs = 7  # an override on the base reaches every point
    points = ablation.expand(base, module.get_grid(base))
    assert [p.name for p in points] == [
        "none",
        "hflip",
        "hflip_alt",
        "vflip",
        "hflip_vflip",
        "crop",
        "crop_hflip",
        "crop_hflip_erase",
    ]
    assert {p.name: p.config.augment for p in points}["hflip_vflip"] == "flip_lr|flip_ud"
    assert all(p.config.train.epochs == 7 for p in points)
    assert len({p.config.name for p in points}) == len(points)
    assert all(p.config.wandb.group == "augmentation" and p.config.wandb.job_type == p.name for p in points)
    assert module.BASELINE in {p.name for p in points}
    assert base.augment == "flip_lr"  # expanding does not touch the base


def test_expand_refuses_unknown_keys_and_bad_names(tiny_config):
    with pytest.raises(errors.ConfigError, match="grid point a: 'model.widht'"):
        ablation.expand(tiny_config, [("a", {"model.widht": (4, 8)})])
    with pytest.raises(errors.ConfigError, match="nope.x"):
        ablation.expand(tiny_config, [("a", {"nope.x": 1})])
    with pytest.raises(errors.ConfigError, match="'train.epochs'.*cannot be cast"):  # a value of another type
        ablation.expand(tiny_config, [("a", {"train.epochs": "many"})])
    with pytest.raises(errors.ConfigError, match="repeated"):
        ablation.expand(tiny_config, [("a", {}), ("a", {})])
    with pytest.raises(errors.ConfigError, match="directory"):
        ablation.expand(tiny_config, [("../a", {})])


@pytest.mark.parametrize(
    "name,arg", [(p.stem, None) for p in sorted((REPO / "ablations").glob("*.py"))] + [("depth", "fixed")]
)
def test_every_shipped_grid_is_within_budget(name, arg):
    module = load(name)
    base = module.get_config(arg)
    points = ablation.expand(base, module.get_grid(base))
    counts = ablation.check_budgets(points)
    assert max(counts.values()) <= base.max_params == 100_000
    assert "grid" not in points[0].config  # grid options are not part of what trains
    if name == "depth" and arg is None:  # fit_width: depths compared at (nearly) equal parameter counts
        assert min(counts.values()) > 0.95 * base.max_params
    if name == "depth" and arg == "fixed":
        assert len({tuple(p.config.model.widths) for p in points}) == 1
        assert sorted(counts.values()) == list(counts.values())


def test_fit_width_fills_the_budget():
    model = models.fit_width(models.CNN(widths=(8, 16), depths=(2, 2)), 5_000)
    n = models.count_params(model)
    assert n <= 5_000 < models.count_params(model.clone(widths=tuple(w + 1 for w in model.widths)))
    assert model.depths == (2, 2)


def write_ablation(directory: Path, config, points: dict[str, dict]) -> Path:
    """An ablation file over `config` (its fields written out literally) with the given points."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "tiny_grid.py"
    path.write_text(
        "import ml_collections\n"
        f"def get_config(arg=None):\n    return ml_collections.ConfigDict({config.to_dict()!r})\n"
        f"def get_grid(config):\n    return list({points!r}.items())\n"
    )
    return path


def test_over_budget_point_refused_before_anything_trains(tiny_config, tmp_path, monkeypatch):
    tiny_config.max_params = 3_000
    path = write_ablation(
        tmp_path / "ablations", tiny_config, {"small": {"model.widths": (8, 16)}, "big": {"model.widths": (32, 64)}}
    )
    monkeypatch.setattr(train, "train_and_evaluate", lambda *a, **k: pytest.fail("trained before the budget check"))
    with pytest.raises(errors.BudgetError, match=r"1 of 2 grid points .*: big has 19,562 \(limit 3,000\)"):
        ablate_cmd.main([str(path), "--workdir", str(tmp_path / "work")])
    assert not (tmp_path / "work").exists()


def test_partial_grid_resumes_and_skips_finished_points(tiny_config, tmp_path, monkeypatch, capsys):
    tiny_config.cv.folds = (0,)  # one member: the runner is under test here, not the member axis
    tiny_config.train.epochs = 2
    tiny_config.wandb.mode = "disabled"
    path = write_ablation(tmp_path / "ablations", tiny_config, {"a": {"augment": "none"}, "b": {"augment": "flip_lr"}})
    work = tmp_path / "work"
    ablate_cmd.main([str(path), "--workdir", str(work), "--point", "a", "--progress=false"])
    assert (work / "a" / "summary.json").exists() and not (work / "b").exists()

    real_epoch = train.train_epoch

    def interrupted(exp, state, epoch, progress=True):
        if epoch == 1:
            raise KeyboardInterrupt  # b is killed in its second epoch, after the first one's checkpoint
        return real_epoch(exp, state, epoch, progress)

    monkeypatch.setattr(train, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ablate_cmd.main([str(path), "--workdir", str(work), "--progress=false"])
    assert not (work / "b" / "summary.json").exists()

    monkeypatch.setattr(train, "train_epoch", real_epoch)
    trained = []
    real = train.train_and_evaluate
    monkeypatch.setattr(train, "train_and_evaluate", lambda c, d, **k: trained.append(Path(d).name) or real(c, d, **k))
    capsys.readouterr()
    ablate_cmd.main([str(path), "--workdir", str(work), "--progress=false"])
    assert trained == ["b"]
    out = capsys.readouterr().out
    assert "[1/2] a (augment=none): finished, skipped" in out and "[2/2] b (augment=flip_lr): resuming" in out
    assert json.loads((work / "b" / "record.json").read_text())["resumed_from_epoch"] == 1
    table = list(csvrows(work / "table.csv"))
    assert [r["point"] for r in table] == ["a", "b"]
    assert int(table[1]["members"]) == 1 and not np.isnan(float(table[1]["test_delta"]))
    assert float(table[1]["wall_s"]) == pytest.approx(
        json.loads((work / "b" / "summary.json").read_text())["wall_seconds"]
    )
    assert (work / "chart.png").read_bytes()[:4] == b"\x89PNG"

    ablate_cmd.main([str(path), "--workdir", str(work), "--progress=false"])  # all done: nothing trains
    assert trained == ["b"]
    with pytest.raises(errors.ConfigError, match="unknown grid point"):
        ablate_cmd.main([str(path), "--workdir", str(work), "--point", "c"])
    with pytest.raises(errors.RunError, match="different config.*train.epochs"):  # never mixes runs in one table
        ablate_cmd.main([str(path), "--workdir", str(work), "--config.train.epochs=3"])
    # --out takes the results instead of the workdir, with the environment that decides how members pack
    for name in record.ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JAX_NUM_CPU_DEVICES", "1")
    before = (work / "command.txt").read_text()
    ablate_cmd.main([str(path), "--workdir", str(work), "--out", str(tmp_path / "results"), "--progress=false"])
    command = (tmp_path / "results" / "command.txt").read_text()
    assert command.startswith(f"JAX_NUM_CPU_DEVICES=1 fmnist-jax ablate {path} --workdir {work} --out ")
    assert (work / "command.txt").read_text() == before and (tmp_path / "results" / "table.csv").exists()
    # --baseline pairs the finished grid against another of its points, into another --out, training nothing
    ablate_cmd.main([str(path), "--workdir", str(work), "--baseline", "b", "--out", str(tmp_path / "vs_b")])
    assert trained == ["b"] and "Baseline: **b**" in (tmp_path / "vs_b" / "table.md").read_text()
    flipped = {r["point"]: float(r["test_delta"]) for r in csvrows(tmp_path / "vs_b" / "table.csv")}
    assert np.isnan(flipped["b"]) and flipped["a"] == pytest.approx(-float(table[1]["test_delta"]))
    with pytest.raises(errors.ConfigError, match="baseline 'c' is not a point of the grid"):
        ablate_cmd.main([str(path), "--workdir", str(work), "--baseline", "c", "--out", str(tmp_path / "vs_c")])
    assert not (tmp_path / "vs_c").exists()


def test_sigterm_unwinds_a_grid_like_ctrl_c(tiny_config, tmp_path):
    """A session's or a scheduler's stop (SIGTERM) ends `ablate` with one line and exit 143, after the run's
    `finally` blocks, and every step on disk is whole (a stop inside a save lands after it:
    tests/test_checkpoints.py)."""
    tiny_config.cv.folds = (0,)
    tiny_config.train.epochs = 1_000_000  # still training when the signal comes
    path = write_ablation(tmp_path / "ablations", tiny_config, {"a": {}})
    point = tmp_path / "work" / "a"
    argv = [sys.executable, "-m", "fmnist_jax.cli", "ablate", str(path), "--workdir", str(point.parent)]
    saved = point / "checkpoints"
    # Any committed save after the first: max_to_keep=2 prunes "2" within the next epochs, which take
    # milliseconds on a fast CPU, so waiting for one folder name can miss it.
    argv += ["--progress=false"]
    with subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
        try:
            deadline = time.monotonic() + 240
            # (Orbax writes a step in "N.orbax-checkpoint-tmp*" first, which the glob also finds)
            while not any(
                c.parent.name.isdigit() and int(c.parent.name) >= 2 for c in saved.glob("[0-9]*/commit_success.txt")
            ):
                assert proc.poll() is None and time.monotonic() < deadline, "ended or stalled before its second save"
                time.sleep(0.2)
            proc.terminate()
            err = proc.communicate(timeout=120)[1].decode()
        finally:
            proc.kill()
    assert proc.returncode == 143 and err.splitlines()[-1] == "fmnist-jax ablate: stopped by SIGTERM", err[-2000:]
    assert not (point / "summary.json").exists()
    assert all((d / "commit_success.txt").exists() for d in saved.iterdir() if d.is_dir())  # saves are held whole


def test_points_of_one_network_pack_into_one_program_with_the_same_table(tiny_config, tmp_path, monkeypatch, capsys):
    tiny_config.train.epochs = 1
    grid = {
        "none": {"augment": "none"},
        "crop": {"augment": "crop(2)", "optim.lr": 3e-3},
        "wide": {"model.widths": (8, 24)},
    }
    path = write_ablation(tmp_path / "ablations", tiny_config, grid)
    programs = []
    real = train.train_packed
    monkeypatch.setattr(train, "train_packed", lambda runs, *a, **k: programs.append(len(runs)) or real(runs, *a, **k))
    ablate_cmd.main([str(path), "--workdir", str(tmp_path / "on"), "--progress=false", "--pack", "on"])
    assert sorted(programs) == [1, 2]  # none + crop share the network; wide trains alone
    assert "crop (augment=crop(2) optim.lr=0.003): training, packed with 1 more" in capsys.readouterr().out
    ablate_cmd.main([str(path), "--workdir", str(tmp_path / "off"), "--progress=false", "--pack", "off"])
    on, off = (list(csvrows(tmp_path / d / "table.csv")) for d in ("on", "off"))
    program = json.loads((tmp_path / "on" / "none" / "summary.json").read_text())["wall_seconds"]
    assert [float(r["wall_s"]) for r in on[:2]] == pytest.approx([program / 2] * 2)  # each its share of one program
    for a, b in zip(on, off):
        np.testing.assert_allclose(
            [float(a[k]) for k in ("val_acc_mean", "test_acc_mean", "test_delta")],
            [float(b[k]) for k in ("val_acc_mean", "test_acc_mean", "test_delta")],
            atol=1e-5,
        )
    cpu = ablation.load(str(path)).points
    assert [len(g) for g in ablation.packs(cpu, tmp_path / "new")] == [1, 1, 1]  # auto: not on one CPU device
    monkeypatch.setattr(ablation.jax, "device_count", lambda: 2)
    assert [len(g) for g in ablation.packs(cpu, tmp_path / "new")] == [2, 1]  # but on two (1.21x measured)
    assert [len(g) for g in ablation.packs(cpu, tmp_path / "new", "off")] == [1, 1, 1]


def csvrows(path: Path):
    with open(path) as f:
        yield from csv.DictReader(f)


def members(acc: list[float], folds=(0, 1, 2)) -> list[dict]:
    return [{"fold": f, "seed": 0, "test_accuracy": a, "val_accuracy": a} for f, a in zip(folds, acc)]


def test_paired_test_matches_members_by_fold_and_seed():
    a, b = [0.80, 0.82, 0.85], [0.81, 0.84, 0.86]
    delta, p = stats.paired(members(a), list(reversed(members(b))), "test_accuracy")  # order must not matter
    chex.assert_trees_all_close(delta, np.mean(np.subtract(b, a)))
    chex.assert_trees_all_close(p, scipy_stats.ttest_rel(b, a).pvalue)
    assert all(np.isnan(stats.paired(members(a), members(b, folds=(0, 1, 3)), "test_accuracy")))


def test_one_difference_format_for_tables_reports_and_findings():
    """None (strict JSON's null) and NaN (a CSV's untestable cell) both leave their part out."""
    assert stats.difference(0.004, 0.001, 0.007, 0.03, 0.06) == "+0.40 [+0.10, +0.70] p=0.030 (adj. 0.060)"
    assert stats.difference(0.004, None, float("nan"), p_adj=0.06) == "+0.40 adj. p=0.060"
    assert stats.difference(0.004, 0.001, 0.007, 0.0004, 0.0008) == "+0.40 [+0.10, +0.70] p<0.001 (adj. <0.001)"
    assert stats.difference(0.004, p_adj=0.00049) == "+0.40 adj. p<0.001"
    assert stats.difference(-0.0123, -0.02, -0.004) == "-1.23 [-2.00, -0.40]"
    assert stats.difference(None) == stats.difference(float("nan")) == "—"


def test_confidence_interval_is_students_t_and_covers_the_mean():
    d = np.array([0.01, 0.03, 0.02, 0.00, 0.04])
    lo, hi = stats.confidence_interval(d)
    half = scipy_stats.t.ppf(0.975, 4) * d.std(ddof=1) / np.sqrt(5)  # 2.776 * 0.0158 / 2.236
    chex.assert_trees_all_close((lo, hi), (d.mean() - half, d.mean() + half))
    assert lo < d.mean() < hi and lo > 0  # this difference excludes zero
    assert all(np.isnan(stats.confidence_interval(d[:1])))


def test_benjamini_hochberg_adjustment_and_untestable_points():
    # sorted p 0.01, 0.03, 0.04 of 3 tests: 0.01 * 3/1 = 0.03; 0.03 * 3/2 = 0.045 -> monotone with 0.04 * 3/3 = 0.04
    adjusted = stats.adjust([0.04, float("nan"), 0.01, 0.03])
    chex.assert_trees_all_close(adjusted[0], 0.04)
    chex.assert_trees_all_close(adjusted[2], 0.03)
    chex.assert_trees_all_close(adjusted[3], 0.04)
    assert np.isnan(adjusted[1])
    assert all(a >= p for a, p in zip(adjusted, [0.04, 0.0, 0.01, 0.03]) if not np.isnan(a))


def test_correction_keeps_chance_level_grids_from_finding_differences():
    """The issue's case: 12 noise points against one baseline. Uncorrected, about half of such grids show some
    p < 0.05 (1 - 0.95^12 = 46%); after Benjamini-Hochberg, about 5% (its false-discovery rate under the null)."""
    rng = np.random.default_rng(0)
    raw_hits = adjusted_hits = 0
    for _ in range(200):
        base = members(list(0.1 + rng.normal(0, 0.002, 5)), folds=range(5))
        p = [
            stats.paired(base, members(list(0.1 + rng.normal(0, 0.002, 5)), folds=range(5)), "test_accuracy")[1]
            for _ in range(12)
        ]
        raw_hits += min(p) < 0.05
        adjusted_hits += min(stats.adjust(p)) < 0.05
    assert raw_hits / 200 > 0.3 and adjusted_hits / 200 < 0.12


def test_markdown_and_chart_from_a_table():
    row = dict(
        point="p",
        overrides="augment=none",
        params=1000,
        flops_per_image=2e6,
        members=3,
        val_acc_mean=0.9,
        val_acc_std=0.01,
        test_acc_mean=0.89,
        test_acc_std=0.02,
        test_delta=0.004,
        test_ci_low=0.001,
        test_ci_high=0.007,
        test_p=0.03,
        test_p_adj=0.06,
        val_delta=float("nan"),
        val_ci_low=float("nan"),
        val_ci_high=float("nan"),
        val_p=float("nan"),
        val_p_adj=float("nan"),
        wall_s=12.0,
    )
    md = ablation.to_markdown([row, dict(row, point="base", overrides="augment=flip_lr|flip_ud")], "base")
    assert "`augment=flip_lr\\|flip_ud`" in md
    assert (
        "| p | `augment=none` | 1,000 | 2.00 | 3 | 90.00 ± 1.00 | 89.00 ± 2.00 | "
        "+0.40 [+0.10, +0.70] p=0.030 (adj. 0.060) | — | 12 |" in md
    )
    assert "**base**" in md
    fig = plots.bar_chart([row, dict(row, point="base")], "t", baseline="base")
    assert len(fig.axes[0].patches) == 4
    shown = dict(row, point="shown", val_delta=0.01, val_ci_low=0.004, val_ci_high=0.016, val_p_adj=0.01)
    unsure = dict(shown, point="unsure", val_p_adj=0.2)
    ax = plots.delta_chart([dict(row, point="base"), shown, unsure, row], "t", baseline="base").axes[0]
    markers = [line for line in ax.lines if line.get_marker() == "o"]  # p has no val difference: not drawn
    assert [m.get_xdata()[0] for m in markers] == pytest.approx([1.0, 1.0])
    filled = [to_rgba(m.get_markerfacecolor()) != (1, 1, 1, 1) for m in markers]
    assert filled == [True, False]  # where the adjusted p allows
    assert [t.get_text() for t in ax.get_yticklabels()] == ["shown", "unsure", "p"]


def test_table_pairs_each_weight_average_with_its_own_weights(tiny_config, tmp_path):
    """A point that kept a weight average gets its val accuracy and the paired difference average - weights
    over its own members; a point without one gets none, and the Markdown shows a dash for it."""
    points = ablation.expand(tiny_config, [("base", {}), ("plain", {"augment": "none"})])
    weights, average = [0.90, 0.91, 0.93], [0.91, 0.93, 0.94]
    for p, ema in zip(points, (True, False)):
        s = {
            "params": 1000,
            "flops_per_image": 2e6,
            "members": members(weights),
            "val_accuracy": stats.mean_std(weights),
            "test_accuracy": stats.mean_std(weights),
        }
        if ema:
            s["ema"] = {"members": members(average), "val_accuracy": stats.mean_std(average)}
        (tmp_path / p.name).mkdir()
        (tmp_path / p.name / "summary.json").write_text(json.dumps(s))
    base, plain = ablation.build_table(points, tmp_path, "base")
    chex.assert_trees_all_close(base["ema_val_delta"], np.mean(np.subtract(average, weights)))
    chex.assert_trees_all_close(base["ema_val_p"], scipy_stats.ttest_rel(average, weights).pvalue)
    assert base["ema_val_ci_low"] < base["ema_val_delta"] < base["ema_val_ci_high"]
    assert all(np.isnan(plain[k]) for k in ablation.COLUMNS if k.startswith("ema_"))
    md = ablation.to_markdown([base, plain], "base").splitlines()
    assert "weight average val acc % | Δ val, average vs weights" in md[0]
    assert "| 92.67 ± 1.53 | +1.33 [" in md[2] and md[3].endswith("| — | — | nan |")


def test_study_findings_give_a_verdict_only_where_the_adjusted_test_allows(tiny_config, tmp_path):
    """scripts/study_findings.py reads a grid's written results: a consistent gain 'helps', a consistent loss
    'hurts', a noisy change shows no difference; a root without results is refused with exit code 2."""
    grid = [("base", {}), ("up", {"augment": "none"}), ("down", {"augment": "flip_ud"}), ("noise", {"augment": ""})]
    points = ablation.expand(tiny_config, grid)
    accs = {
        "base": [0.900, 0.910, 0.920, 0.905],
        "up": [0.920, 0.931, 0.939, 0.926],
        "down": [0.880, 0.889, 0.901, 0.884],
        "noise": [0.910, 0.900, 0.925, 0.900],
    }
    for p in points:
        s = {"params": 1000, "flops_per_image": 2e6, "members": members(accs[p.name], folds=range(4))}
        s["val_accuracy"] = s["test_accuracy"] = stats.mean_std(accs[p.name])
        (tmp_path / "work" / p.name).mkdir(parents=True)
        (tmp_path / "work" / p.name / "summary.json").write_text(json.dumps(s))
    ablation.write_results("g", points, tmp_path / "work", tmp_path / "study" / "g", "base", "cmd")
    ablation.write_results("g", points, tmp_path / "work", tmp_path / "study" / "g" / "vs_up", "up", "cmd")
    script = [sys.executable, str(REPO / "scripts/study_findings.py")]
    done = subprocess.run([*script, str(tmp_path / "study")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "study/findings.md").read_text()
    main, vs_up = text.split("## g against up (`g/vs_up/`)")  # the --baseline table follows its grid's own
    lines = {ln.split("**")[1]: ln for ln in main.splitlines() if "- **" in ln}
    assert lines["up"].endswith("**helps**") and lines["down"].endswith("**hurts**")
    assert lines["noise"].endswith("**no difference shown**") and "against base (val points): +0.00 [" in lines["noise"]
    assert "- **base** (`" in vs_up and "against up (val points): -" in vs_up.split("- **base**")[1].splitlines()[0]
    empty = subprocess.run([*script, str(tmp_path / "work")], capture_output=True, text=True, timeout=120)
    assert empty.returncode == 2 and "no grid results" in empty.stderr


def test_sweep_export_is_a_wandb_grid_over_points(tmp_path):
    out = tmp_path / "sweep.yaml"
    assert (
        ablate_cmd.main(
            [
                str(REPO / "ablations" / "width.py"),
                "--workdir",
                "runs/w",
                "--config.train.epochs=2",
                "--export_sweep",
                str(out),
            ]
        )
        == 0
    )
    spec = yaml.safe_load(out.read_text())
    assert spec["method"] == "grid" and spec["metric"] == {"name": "val/accuracy", "goal": "maximize"}
    assert Path(spec["program"]) == REPO / "fmnist_jax" / "cli.py"  # absolute: agents start anywhere
    assert spec["parameters"]["point"]["values"] == ["w0.25", "w0.5", "w0.75", "w1.0"]
    assert (
        f"--workdir={Path('runs/w').resolve()}" in spec["command"]
        and str(REPO / "ablations/width.py") in spec["command"]
    )
    assert "--config.train.epochs=2" in spec["command"] and spec["command"][-1] == "${args}"
    assert "--config.wandb.mode=online" in spec["command"]  # an agent reports to its sweep


def test_sweep_agent_run_keeps_every_members_metrics(tiny_config, tmp_path):
    """`wandb agent` as far as it can be had offline: it starts the sweep's command with `--point=...` and
    WANDB_SWEEP_ID/WANDB_RUN_ID set, under which W&B forces the agent's run id on every `wandb.init`."""
    tiny_config.train.epochs = 2
    path = write_ablation(tmp_path / "ablations", tiny_config, {"a": {"augment": "none"}, "b": {"augment": "flip_lr"}})
    sweep = tmp_path / "sweep.yaml"
    work = tmp_path / "work"
    ablate_cmd.main([str(path), "--workdir", str(work), "--config.wandb.mode=offline", "--export_sweep", str(sweep)])
    spec = yaml.safe_load(sweep.read_text())
    fill = {"${env}": [], "${interpreter}": [sys.executable], "${program}": [spec["program"]], "${args}": ["--point=b"]}
    argv = [x for part in spec["command"] for x in fill.get(part, [part])]
    env = {**os.environ, "WANDB_SWEEP_ID": "sweep01", "WANDB_RUN_ID": "agent01", "WANDB_SILENT": "true"}
    proc = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run_dir,) = (work / "b" / "wandb").glob("offline-run-*-agent01")
    history, final = tracking.offline_run(run_dir)
    epochs = [r for r in history if "val/accuracy" in r]
    rows = read_jsonl(work / "b" / "metrics.jsonl")
    assert [r["epoch"] for r in epochs] == [1, 2]
    for tag, member in (("fold0_seed0", 0), ("fold1_seed0", 1)):  # both members, none lost to a run-id clash
        mine = [r["val_accuracy"] for r in rows if r["member"] == member]
        np.testing.assert_allclose([r[f"{tag}/val/accuracy"] for r in epochs], mine, rtol=1e-6)
    np.testing.assert_allclose(  # the sweep's metric: the members' mean
        [r["val/accuracy"] for r in epochs],
        [np.mean([r["val_accuracy"] for r in rows if r["epoch"] == e]) for e in (1, 2)],
        rtol=1e-6,
    )
    summary = json.loads((work / "b" / "summary.json").read_text())
    assert final["val/accuracy"] == pytest.approx(summary["val_accuracy"]["mean"])
    assert final["fold1_seed0/test/accuracy"] == pytest.approx(summary["members"][1]["test_accuracy"])
    assert not (work / "a").exists()  # the agent trained its point only


def test_submitit_local_executor_runs_the_grid(tiny_config, tmp_path):
    """`--launch local`: the same job array SLURM would get, as local subprocesses; then the table. (Through the
    CLI in a subprocess: submitit's logging holds the streams it found at import, which pytest's capture closes.)"""
    tiny_config.train.epochs = 1
    path = write_ablation(tmp_path / "ablations", tiny_config, {"a": {"augment": "none"}, "b": {"augment": "flip_lr"}})
    work = tmp_path / "work"
    argv = [sys.executable, "-m", "fmnist_jax.cli", "ablate", str(path), "--workdir", str(work), "--progress=false"]
    argv += ["--launch", "local", "--launch_params=timeout_min=5"]
    first = subprocess.run([*argv, "--wait"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "submitted 2 point(s) to local" in first.stdout
    assert len(list((work / "submitit").glob("*/*_result.pkl"))) == 2  # each point ran as a submitit task
    table = list(csvrows(work / "table.csv"))
    assert [r["point"] for r in table] == ["a", "b"] and all(int(r["members"]) == 2 for r in table)
    again = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "submitted 0 point(s)" in again.stdout  # finished points are not resubmitted


def _summary(epochs: int, accs: list[float]) -> dict:
    return {"epochs": epochs, "val_accuracy": stats.mean_std(accs), "members": members(accs)}


def test_budget_agreement_compares_the_rankings_the_paired_tests_state():
    """Points the paired test cannot separate may swap places at the long budget; a separated pair may not, and
    neither may a pair that only one budget separates."""
    short = {
        "a": _summary(5, [0.900, 0.910, 0.920]),
        "b": _summary(5, [0.899, 0.905, 0.920]),  # 0.2 points below a, p = 0.3: not separated
        "c": _summary(5, [0.880, 0.892, 0.899]),  # 1.9 points below a, in every member
    }
    long = {"a": _summary(15, [0.930, 0.935, 0.940]), "b": _summary(15, [0.931, 0.937, 0.939])}
    checked = ablation.budget_points(short, top=3)
    assert checked == ["a", "b", "c"]
    check = ablation.budget_agreement(short, long, checked)
    assert check["same_ranking"] is None and check["same_order"] is None  # c has no long run yet
    assert [(q["better"], q["worse"]) for q in check["pairs"]] == [("a", "b"), ("a", "c"), ("b", "c")]
    ab, ac, bc = check["pairs"]
    np.testing.assert_allclose(ab["short"]["delta"], 0.006 / 3)  # a - b over the same members
    assert ab["short"]["ci"][0] < 0 < ab["short"]["ci"][1] and ab["short"]["verdict"] == "="
    assert ac["short"]["verdict"] == ">" and ac["short"]["p_adj"] < 0.05 and "long" not in ac
    np.testing.assert_allclose(ab["long"]["delta"], -0.002 / 3)
    np.testing.assert_allclose(check["gains"]["a"]["delta"], 0.025)  # the longer budget's gain, same members
    assert set(check["gains"]) == {"a", "b"} and check["gains"]["a"]["ci"][0] > 0
    for m, t in zip(long["a"]["members"], [0.90, 0.91, 0.93]):  # test moves apart from val: reported, not checked
        m["test_accuracy"] = t
    check = ablation.budget_agreement(short, long, checked)
    np.testing.assert_allclose(check["test_gains"]["a"]["delta"], 0.01 / 3)
    np.testing.assert_allclose(check["gains"]["a"]["delta"], 0.025)
    long["c"] = _summary(15, [0.910, 0.915, 0.921])  # still separated below both
    check = ablation.budget_agreement(short, long, checked)
    assert check["long_order"] == ["b", "a", "c"] and check["same_order"] is False  # a and b swapped by chance
    assert check["same_ranking"] is True
    long["c"] = _summary(15, [0.925, 0.936, 0.942])  # the long budget closes the gap: a < c no longer shown
    check = ablation.budget_agreement(short, long, checked)
    assert check["pairs"][1]["long"]["verdict"] == "=" and check["same_ranking"] is False
    # a point named in `also` is checked too, in its short-budget place: here the long budget lifts it to the top
    checked = ablation.budget_points(short, top=1, also=["c"])
    assert checked == ["a", "c"]
    long["c"] = _summary(15, [0.950, 0.955, 0.961])
    check = ablation.budget_agreement(short, long, checked)
    assert check["long_order"] == ["c", "a"] and check["pairs"][0]["long"]["verdict"] == "<"
    assert check["same_ranking"] is False
    with pytest.raises(ValueError, match="unknown point.*d"):
        ablation.budget_points(short, also=["d"])
    fig = plots.budget_chart({"a": [short["a"]["val_accuracy"], None]}, [5, 15])  # a point still missing draws
    assert fig.axes[0].get_xlabel() == "epochs"


def test_budget_check_script_plans_the_long_run_and_reports_it(tmp_path):
    """scripts/budget_check.py --points gives scripts/study.sh the long run's --point flags; then the report, and
    `--accepts`, the gate `study.sh grids` passes only once the report accepts the budget."""
    for budget, runs in (
        ("short", {"a": [0.91, 0.92, 0.93], "b": [0.90, 0.92, 0.93], "c": [0.5, 0.6, 0.55]}),
        ("long", {}),
    ):
        (tmp_path / budget / "summaries").mkdir(parents=True)
        for point, accs in runs.items():
            (tmp_path / budget / "summaries" / f"{point}.json").write_text(json.dumps(_summary(5, accs)))
    script = [sys.executable, str(REPO / "scripts/budget_check.py"), "--short", str(tmp_path / "short"), "--top", "1"]
    plan = subprocess.run([*script, "--also", "c", "--points"], capture_output=True, text=True, check=True)
    assert plan.stdout.split() == ["--point=a", "--point=c"]
    for bad in (["--also", "z", "--points"], ["--also", "c"]):  # an unknown point; no --long/--out to report to
        refused = subprocess.run([*script, *bad], capture_output=True, text=True)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    out = tmp_path / "check"
    report = [*script, "--also", "c", "--long", str(tmp_path / "long"), "--out", str(out)]
    subprocess.run(report, capture_output=True, check=True)
    check = json.loads((out / "budget_check.json").read_text())
    assert check["checked"] == ["a", "c"] and check["same_ranking"] is None  # the long run has not trained yet
    assert "not finished" in (out / "budget_check.md").read_text() and (out / "budget_check.png").is_file()
    gate = [sys.executable, str(REPO / "scripts/budget_check.py"), "--out", str(out), "--accepts"]
    for epochs, why in (("5", "is not finished"), ("7", "checked 5 epochs, not 7")):
        refused = subprocess.run([*gate, epochs], capture_output=True, text=True)
        assert refused.returncode == 2 and why in refused.stderr and refused.stderr.count("\n") == 1, refused.stderr
    for point, accs in {"a": [0.93, 0.94, 0.95], "c": [0.6, 0.7, 0.65]}.items():  # a still separated above c
        (tmp_path / "long" / "summaries" / f"{point}.json").write_text(json.dumps(_summary(15, accs)))
    subprocess.run(report, capture_output=True, check=True)
    md = (out / "budget_check.md").read_text()
    assert "**Ranking: the same.**" in md
    row = next(line for line in md.splitlines() if line.startswith("| a |")).split(" | ")
    assert row[3].startswith("+2.00 [") and row[4] == row[3] + " |"  # val and test gains (equal in these members)
    assert subprocess.run([*gate, "5"], capture_output=True).returncode == 0


def test_a_baseline_finished_under_another_grids_name_counts_as_done(tiny_config, tmp_path):
    (point,) = ablation.expand(tiny_config, [("base", {})])
    d = tmp_path / "base"
    d.mkdir()
    shared = point.config.to_dict() | {"name": "augmentation-hflip"}
    (d / "config.json").write_text(json.dumps(shared))
    assert ablation.point_status(point, tmp_path) == "partial"
    (d / "summary.json").write_text("{}")
    assert ablation.point_status(point, tmp_path) == "done"
    (d / "config.json").write_text(json.dumps(shared | {"augment": "none"}))
    with pytest.raises(errors.RunError, match="different config"):
        ablation.point_status(point, tmp_path)


def test_the_points_the_study_shares_compute_the_same():
    """`scripts/study.sh` trains the study's base once, as augmentation's hflip, and copies it into four other
    grids, and depth's d333 into depth:fixed: each copy must be the very computation its grid asks for."""

    def points(name, arg=None):
        module = load(name)
        base = module.get_config(arg)
        return {p.name: p.config.to_dict() for p in ablation.expand(base, module.get_grid(base))}

    hflip = points("augmentation")["hflip"]
    for grid, point in (("training", "base"), ("architecture", "bn_residual"), ("width", "w1.0"), ("depth", "d122")):
        assert config_lib.differences(hflip, points(grid)[point]) == [], (grid, point)
    depth, fixed = points("depth"), points("depth", "fixed")
    assert config_lib.differences(depth["d333"], fixed["d333"]) == []
    assert config_lib.differences(depth["d222"], fixed["d222"]) != []  # the other depths differ in width


def test_study_parallel_trains_each_computation_once(tmp_path):
    """scripts/study_parallel.py (the study's grids as programs side by side on an accelerator) plans each
    computation once: the study's base is trained as training's `base` and copied to width's `w1.0` once that has
    finished, depth:fixed's d333 to depth's; a finished point is not planned again; bad arguments exit 2."""
    study_parallel = config_lib.load_module(REPO / "scripts" / "study_parallel.py")
    grids = [("training", "training"), ("width", "width"), ("depth_fixed", "depth:fixed"), ("depth", "depth")]
    jobs, copies = study_parallel.plan(grids, tmp_path, 3)
    planned = [(job["name"], p) for job in jobs for p in job["points"]]
    assert len(planned) == len(set(planned)) == 8 + 3 + 5 + 3  # depth's d122 and d333, width's w1.0 are copies
    assert {(s.relative_to(tmp_path).as_posix(), d.relative_to(tmp_path).as_posix()) for s, d in copies} == {
        ("training/grid/base", "width/grid/w1.0"),
        ("training/grid/base", "depth/grid/d122"),
        ("depth_fixed/grid/d333", "depth/grid/d333"),
    }
    base = tmp_path / "training/grid/base"
    base.mkdir(parents=True)
    (base / "config.json").write_text("{}")
    assert len(study_parallel.copy_finished(copies)) == 3  # base is in flight: nothing to copy yet
    (base / "summary.json").write_text('{"epochs": 3}')
    assert [d.name for _, d in study_parallel.copy_finished(copies)] == ["d333"]
    assert json.loads((tmp_path / "width/grid/w1.0/summary.json").read_text()) == {"epochs": 3}
    jobs, copies = study_parallel.plan(grids, tmp_path, 3)
    assert ("training", "base") not in [(job["name"], p) for job in jobs for p in job["points"]]
    assert len(copies) == 1
    bad = subprocess.run(
        [sys.executable, str(REPO / "scripts/study_parallel.py"), "--dir", str(tmp_path), "--epochs", "3", "width"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr

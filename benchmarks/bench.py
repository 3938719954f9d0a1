"""The timed variants behind `benchmarks/speed.py` (imported only after XLA's flags are set).

A variant is a `step()` that trains on `images` images and blocks until done. JAX
variants use the project's own path: `train.setup` builds the K-member experiment and
its `train_step` (members over `members.over_members`); the single model is
`jax.jit(steps.make_train_step(config))`, the step that path wraps.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import importlib.metadata
import os
import platform
import shlex
import statistics
import time
from pathlib import Path
from typing import Any
from collections.abc import Callable

import jax
import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from fmnist_jax import backend, config_lib, data, distill, members, models, steps, train
from fmnist_jax.record import ISA_FLAGS, cpu, git_revision
from fmnist_jax.writers import write_json, write_text

TARGETS = {
    "together_vs_one_by_one": 2.0,
    "single_vs_torch": 1.0,
    "single_vs_torch_cl": 1.0,
    "single_vs_single_ynnpack": 2.0,
}


@dataclasses.dataclass
class Variant:
    name: str
    what: str
    images: int  # images trained per step() call
    step: Callable[[], object]
    train_flops_per_image: float | None = None


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cycle(items: list) -> Callable[[], Any]:
    it = iter(range(10**12))
    return lambda: items[next(it) % len(items)]


def _stepping(
    name: str,
    what: str,
    images: int,
    step_fn: Callable,
    state: Any,
    arrays: tuple,
    batches: list,
    flops_per_image: float | None = None,
) -> Variant:
    """A variant whose step() advances `state` by one `step_fn` call on the next batch and blocks until done."""
    nxt = _cycle(batches)

    def step():
        nonlocal state
        state, _ = step_fn(state, *arrays, nxt())
        jax.block_until_ready(state)

    return Variant(name, what, images, step, flops_per_image)


def _option(kv: str) -> tuple[str, Any]:
    key, _, val = kv.partition("=")
    if val.lower() in ("true", "false"):
        return key, val.lower() == "true"
    return key, int(val) if val.lstrip("-").isdigit() else val


def _step_flops(fn: Callable, *args) -> float:
    """FLOPs of one compiled call, from XLA's cost analysis (what XLA itself counts)."""
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    assert cost is not None, "XLA gave no cost analysis"
    return float(cost["flops"])


class JaxBench:
    """The K-member experiment of `configs/<args.config>.py`, K single-model states and index batches, built once."""

    def __init__(self, args: argparse.Namespace, dataset: data.Dataset):
        cfg = importlib.import_module(f"configs.{args.config}").get_config()
        cfg.cv.k = max(5, args.members)
        cfg.cv.folds, cfg.seeds = tuple(range(args.members)), (0,)  # K members = K folds of one seed
        cfg.cv.holdout = True  # configs/best.py's final models hold nothing out; folds need a holdout
        cfg.train.batch_size = args.batch_size
        cfg.members.strategy = args.strategy
        cfg.data.verify = False
        self.config, self.k, self.b = cfg, args.members, args.batch_size
        self.exp = train.setup(cfg, dataset)
        order = train.epoch_order(self.exp, 0)[: max(8, args.steps + 1)]  # [steps, K, B]
        self.batches = [members.place(jnp.asarray(o), self.exp.mesh, stacked=False) for o in order]
        self.single_batches = [jax.device_put(o[0]) for o in order]
        self.arrays = (self.exp.arrays["train_images"], self.exp.arrays["train_labels"])
        self.options = backend.compiler_options(cfg.compile.cpu_conv)
        self.single_step = jax.jit(steps.make_train_step(cfg), donate_argnums=(0,), compiler_options=self.options)

    def _states(self) -> list[steps.TrainState]:
        stacked = jax.device_get(train.init_state(self.exp))
        return [jax.device_put(members.unstack(stacked, i)) for i in range(self.k)]

    def _compiled_single(self, state: steps.TrainState, options: dict[str, str | bool] | None = None) -> Callable:
        """The single-model step lowered and compiled now (so module patches apply), with the product's
        XLA options, or with `options` instead."""
        return (
            jax.jit(steps.make_train_step(self.config), donate_argnums=(0,))
            .lower(state, *self.arrays, self.single_batches[0])
            .compile(self.options if options is None else options)
        )

    def single(self) -> Variant:
        state = self._states()[0]
        flops = _step_flops(steps.make_train_step(self.config), state, *self.arrays, self.single_batches[0])
        return _stepping(
            "single",
            "JAX, one model: jit(steps.make_train_step)",
            self.b,
            self.single_step,
            state,
            self.arrays,
            self.single_batches,
            flops / self.b,
        )

    def single_with_options(self, spec: str) -> Variant:
        """'NAME:key=val;...' -> the single-model step compiled with those XLA options (paired with 'single')."""
        name, _, opts = spec.partition(":")
        options = dict(_option(kv) for kv in opts.split(";") if kv)
        state = self._states()[0]
        return _stepping(
            f"single[{name}]",
            f"JAX, one model, compiled with {options}",
            self.b,
            self._compiled_single(state, self.options | options),
            state,
            self.arrays,
            self.single_batches,
        )

    def _single_of(
        self, name: str, what: str, config: Any, teachers: Callable[[jax.Array], jax.Array] | None = None
    ) -> Variant:
        """The single-model step of a variation of the benchmark's config, on the same batches as 'single'."""
        state = steps.create_state(
            models.build(config),
            steps.optimizer(config, self.exp.steps_per_epoch),
            jax.random.key(0),
            jax.random.key(1),
            config.train.ema_decay > 0,
        )
        fn = steps.make_train_step(config, (), teachers)
        flops = _step_flops(fn, state, *self.arrays, self.single_batches[0]) / self.b  # its own: teachers count
        step = jax.jit(fn, donate_argnums=(0,), compiler_options=self.options)
        return _stepping(name, what, self.b, step, state, self.arrays, self.single_batches, flops)

    def ema(self) -> Variant:
        """'single' keeping a weight average (`train.ema_decay`): one more pass over the variables per step."""
        config = self.config.copy_and_resolve_references()
        config.train.ema_decay = 0.999
        return self._single_of("ema", "JAX, one model keeping a weight average (train.ema_decay=0.999)", config)

    def se(self) -> Variant:
        """'single' with squeeze-excitation gates in every block (`model.se=16`)."""
        config = self.config.copy_and_resolve_references()
        config.model.se = 16
        return self._single_of("se", "JAX, one model with squeeze-excitation (model.se=16)", config)

    def lean(self) -> Variant:
        """'single' on `configs/best.py`'s FLOP-lean residual network (`best.NETWORK`; the study's, configs/study.py)
        with the benchmark's recipe: what choosing that network saves a step."""
        config = config_lib.with_overrides(self.config, importlib.import_module("configs.best").NETWORK)
        return self._single_of("lean", "JAX, one model, configs/best.py's lean residual network", config)

    def distilled(self) -> Variant:
        """`configs/distill.py`'s student step: 'single' of configs/best.py plus its teachers' eval-mode forward
        passes on the augmented batch (weight average off, to time the teachers alone)."""
        config = importlib.import_module("configs.distill").get_config()
        config.train.batch_size, config.train.ema_decay = self.b, 0.0
        config.compile.cpu_conv = self.config.compile.cpu_conv
        loaded = distill.load(config, self.exp.dataset.digest, members.members_of(config))
        n = sum(len(t.run.members) for t in loaded)
        return self._single_of(
            "distilled",
            f"JAX, one model learning from {n} teacher members (configs/distill.py's step)",
            config,
            distill.make_targets(loaded, config.distill.temperature),
        )

    def single_ynnpack(self) -> Variant:
        """The single step with XLA:CPU's default convolutions (YNNPACK): the product step before backend.py."""
        state = self._states()[0]
        return _stepping(
            "single_ynnpack",
            "JAX, one model, XLA's default convolutions (YNNPACK; compile.cpu_conv='ynnpack')",
            self.b,
            self._compiled_single(state, backend.compiler_options("ynnpack")),
            state,
            self.arrays,
            self.single_batches,
        )

    def single_flax_pool(self) -> Variant:
        """The single step as before the max-pool change: traced with flax's `nn.max_pool` (reduce_window)."""
        state = self._states()[0]
        product_pool = models.max_pool_2x2
        models.max_pool_2x2 = lambda x: nn.max_pool(x, (2, 2), (2, 2))
        try:
            compiled = self._compiled_single(state)
        finally:
            models.max_pool_2x2 = product_pool
        return _stepping(
            "single_flax_pool",
            "JAX, one model, with flax nn.max_pool (the step before models.max_pool_2x2)",
            self.b,
            compiled,
            state,
            self.arrays,
            self.single_batches,
        )

    def one_by_one(self) -> Variant:
        states, nxt = self._states(), _cycle(self.batches)

        def step():
            idx = nxt()
            for i in range(self.k):
                states[i], _ = self.single_step(states[i], *self.arrays, idx[i])
            jax.block_until_ready(states)

        return Variant(
            "one_by_one", f"JAX, {self.k} models one after another, same single-model step", self.k * self.b, step
        )

    def _members(self, name: str, what: str, train_step: Callable) -> Variant:
        return _stepping(name, what, self.k * self.b, train_step, train.init_state(self.exp), self.arrays, self.batches)

    def together(self) -> Variant:
        strategy = members.resolve_strategy(self.config.members.strategy)
        return self._members(
            "together",
            f"JAX, {self.k} members in one program: train.setup's train_step "
            f"(strategy {strategy}, {self.exp.mesh.size} device(s))",
            self.exp.train_step,
        )

    def _other_point(self) -> Any:
        """A second grid point of the same network: another augmentation and learning rate (packable)."""
        other = self.config.copy_and_resolve_references()
        other.name, other.augment, other.optim.lr = "other", "crop(2)|flip_lr", self.config.optim.lr * 2
        return other

    def _experiment_steps(self, exp: train.Experiment) -> Callable[[], None]:
        """One train step of `exp`'s members on its own index batches, per call."""
        state = train.init_state(exp)
        order = train.epoch_order(exp, 0)[:8]
        nxt = _cycle([members.place(jnp.asarray(o), exp.mesh, stacked=False) for o in order])
        arrays = (exp.arrays["train_images"], exp.arrays["train_labels"])

        def step():
            nonlocal state
            state, _ = exp.train_step(state, *arrays, nxt())
            jax.block_until_ready(state)

        return step

    def packed(self) -> Variant:
        """Two grid points (K members each) as one program: `train.setup(config, packed=[other])`."""
        exp = train.setup(self.config, self.exp.dataset, packed=[self._other_point()])
        what = f"JAX, 2 points x {self.k} members in one program (train.train_packed's step, {exp.mesh.size} device(s))"
        return Variant("packed", what, 2 * self.k * self.b, self._experiment_steps(exp))

    def separate(self) -> Variant:
        """The same two points as two programs, one step of each per call (what `ablate --pack off` runs)."""
        first, second = (
            self._experiment_steps(self.exp),
            self._experiment_steps(train.setup(self._other_point(), self.exp.dataset)),
        )

        def step():
            first()
            second()

        what = f"JAX, the same 2 points as 2 programs of {self.k} members, one step of each"
        return Variant("separate", what, 2 * self.k * self.b, step)

    def vmap(self) -> Variant:
        step = members.over_members(
            steps.make_train_step(self.config),
            (0, None, None, 0),
            self.exp.mesh,
            "vmap",
            donate_argnums=(0,),
            compiler_options=self.options,
        )
        return self._members("vmap", f"JAX, {self.k} members via plain vmap (grouped convolutions)", step)

    def single_dp(self) -> Variant:
        """One model with its batch split over the host CPU devices (data parallel, same math)."""
        mesh = Mesh(np.array(jax.devices()), ("batch",))
        rep, split = NamedSharding(mesh, P()), NamedSharding(mesh, P("batch"))
        state = jax.device_put(self._states()[0], rep)
        arrays = jax.device_put(self.arrays, rep)
        batches = [jax.device_put(b, split) for b in self.single_batches]
        step_fn = jax.jit(
            steps.make_train_step(self.config),
            donate_argnums=(0,),
            out_shardings=(rep, rep),
            compiler_options=self.options,
        )
        return _stepping(
            "single_dp",
            f"JAX, one model, batch split over {mesh.size} host CPU devices",
            self.b,
            step_fn,
            state,
            arrays,
            batches,
        )


class TorchBench:
    def __init__(self, args: argparse.Namespace, dataset: data.Dataset, jb: JaxBench):
        import torch
        import torch.utils.flop_counter
        from benchmarks import torch_twin

        self.torch, self.twin, self.b = torch, torch_twin, args.batch_size
        m = jb.config.model
        self.shape = dict(widths=tuple(m.widths), depths=tuple(m.depths), residual=m.residual)
        torch.set_num_threads(os.cpu_count() or 1)
        torch.manual_seed(0)
        self.images = torch.from_numpy(np.array(dataset.train_images))
        self.labels = torch.from_numpy(np.array(dataset.train_labels)).long()
        self.batches = [torch.from_numpy(np.array(b)).long() for b in jb.single_batches]

    def variant(self, channels_last: bool) -> Variant:
        model = self.twin.TorchCNN(**self.shape)
        step_fn = self.twin.make_train_step(model, self.images, self.labels, channels_last=channels_last)
        nxt = _cycle(self.batches)
        with self.torch.utils.flop_counter.FlopCounterMode(display=False) as counter:
            step_fn(nxt())
        name = "torch_cl" if channels_last else "torch"
        layout = "channels_last (NHWC)" if channels_last else "NCHW"
        return Variant(
            name,
            f"PyTorch {self.torch.__version__}, same CNN, {layout}, {self.twin.count_params(model):,} params",
            self.b,
            lambda: step_fn(nxt()),
            counter.get_total_flops() / self.b,
        )


def matmul_ceiling(n: int = 2048, repeats: int = 5) -> float:
    """Best f32 GFLOP/s of a large matmul in XLA: a measured ceiling for this machine and load."""
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def _summary(xs: list[float]) -> dict[str, float]:
    return {"best": max(xs), "median": statistics.median(xs), "worst": min(xs)}


def _ratios(per_round: dict[str, list[float]], num: str, den: str) -> dict[str, float] | None:
    if num not in per_round or den not in per_round:
        return None
    a, b = per_round[num], per_round[den]
    return {
        "best": max(a) / max(b),
        "median": statistics.median(a) / statistics.median(b),
        "paired_median": statistics.median(x / y for x, y in zip(a, b)),
    }


def ratios(per_round: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Every ratio of interest between the variants that ran (those whose variants are missing are left out)."""
    out = {
        "together_vs_one_by_one": _ratios(per_round, "together", "one_by_one"),
        "single_vs_torch": _ratios(per_round, "single", "torch"),
        "single_vs_torch_cl": _ratios(per_round, "single", "torch_cl"),
        "single_vs_single_ynnpack": _ratios(per_round, "single", "single_ynnpack"),
        "together_vs_single": _ratios(per_round, "together", "single"),
        "vmap_vs_one_by_one": _ratios(per_round, "vmap", "one_by_one"),
        "packed_vs_separate": _ratios(per_round, "packed", "separate"),
        "single_vs_single_flax_pool": _ratios(per_round, "single", "single_flax_pool"),
        "single_dp_vs_single": _ratios(per_round, "single_dp", "single"),
        **{
            f"{n}_vs_single": _ratios(per_round, n, "single")
            for n in per_round
            if n.startswith("single[") or n in ("ema", "se", "lean", "distilled")
        },
    }
    return {k: v for k, v in out.items() if v}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    t_start = time.perf_counter()
    load_start = _loadavg()
    dataset = data.load(verify=False)
    jb = JaxBench(args, dataset)
    model = jb.exp.model
    forward_flops = models.flops_per_image(model)
    variants: list[Variant] = []
    skipped: dict[str, str] = {}
    tb = None
    for name in args.variants:
        if name.startswith("torch"):
            if tb is None:
                try:
                    tb = TorchBench(args, dataset, jb)
                except ImportError as e:
                    skipped[name] = f"PyTorch not installed ({e}); pip install '.[bench]' to compare"
                    print(f"skipping {name}: {skipped[name]}")
                    continue
            variants.append(tb.variant(channels_last=name == "torch_cl"))
        elif name == "single_dp" and jax.device_count() < 2:
            skipped[name] = "needs --cpu-devices 2 or more"
            print(f"skipping {name}: {skipped[name]}")
        else:
            variants.append(getattr(jb, name)())
    variants += [jb.single_with_options(spec) for spec in args.options]
    single_flops = next((v.train_flops_per_image for v in variants if v.name == "single"), None)
    if single_flops is None:
        single_flops = (
            _step_flops(steps.make_train_step(jb.config), jb._states()[0], *jb.arrays, jb.single_batches[0]) / jb.b
        )
    for v in variants:
        if not v.name.startswith("torch") and v.train_flops_per_image is None:
            v.train_flops_per_image = single_flops
        t = time.perf_counter()
        v.step()  # compile (JAX) / allocator and thread-pool warm-up (PyTorch)
        v.step()
        print(f"{v.name}: warm-up {time.perf_counter() - t:.1f}s")
    ceiling = matmul_ceiling()

    per_round: dict[str, list[float]] = {v.name: [] for v in variants}
    loads = []
    for r in range(args.rounds):
        rotated = variants[r % len(variants) :] + variants[: r % len(variants)]
        for v in rotated:
            t = time.perf_counter()
            for _ in range(args.steps):
                v.step()
            per_round[v.name].append(args.steps * v.images / (time.perf_counter() - t))
        loads.append(_loadavg())
        print(
            f"round {r + 1}/{args.rounds} load {loads[-1]}: "
            + ", ".join(f"{n} {xs[-1]:.0f}" for n, xs in per_round.items())
        )

    results = {}
    for v in variants:
        s = _summary(per_round[v.name])
        gflops = {k: x * v.train_flops_per_image / 1e9 for k, x in s.items()} if v.train_flops_per_image else None
        results[v.name] = {
            "what": v.what,
            "images_per_call": v.images,
            "images_per_s": s,
            "per_round": per_round[v.name],
            "train_flops_per_image": v.train_flops_per_image,
            "gflops_per_s": gflops,
        }
    return {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "benchmarks/speed.py", *args.argv]),
        "settings": {k: v for k, v in vars(args).items() if k != "argv"},
        "machine": {
            "platform": platform.platform(),
            "cpu": cpu()["model"],
            "isa": cpu()["isa"],
            "cpu_count": os.cpu_count(),
            "jax_devices": [str(d) for d in jax.devices()],
            "backend": jax.default_backend(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "versions": {p: _version(p) for p in ("jax", "jaxlib", "flax", "optax", "torch", "numpy")},
            "git": git_revision(),
        },
        "load_average": {
            "start": load_start,
            "per_round": loads,
            "end": _loadavg(),
            "note": "1/5/15-minute load averages; the machine has os.cpu_count() cores",
        },
        "model": {
            "config": args.config,
            "jax": f"models.CNN(widths={model.widths}, depths={model.depths}, residual={model.residual})",
            "jax_params": jb.exp.n_params,
            "torch_params": tb and tb.twin.count_params(tb.twin.TorchCNN(**tb.shape)),
            "forward_flops_per_image": forward_flops,
            "train_flops_per_image": single_flops,
        },
        "matmul_ceiling_gflops": ceiling,
        "results": results,
        "ratios": ratios(per_round),
        "targets": TARGETS,
        "skipped": skipped,
        "seconds": time.perf_counter() - t_start,
    }


def markdown(r: dict[str, Any]) -> str:
    m, mod = r["machine"], r["model"]
    lines = [
        f"# Training throughput, {r['time']}",
        "",
        f"`{r['command']}`",
        "",
        f"- machine: {m['cpu']} (ISA: {', '.join(m['isa']) or 'none of ' + ', '.join(ISA_FLAGS)}), "
        f"{m['cpu_count']} cores, {m['platform']}; JAX devices {len(m['jax_devices'])} "
        f"({m['backend']}); XLA_FLAGS=`{m['xla_flags'] or '(none)'}`",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v) + f"; git {m['git']}",
        f"- load average (1/5/15 min) at start {r['load_average']['start']}, end {r['load_average']['end']}, "
        f"after each round {r['load_average']['per_round']}",
        f"- model (`configs/{mod['config']}.py`): `{mod['jax']}`, JAX {mod['jax_params']:,} params"
        + (f", PyTorch twin {mod['torch_params']:,} params (conv bias=False)" if mod["torch_params"] else "")
        + f"; forward {mod['forward_flops_per_image'] / 1e6:.1f} MFLOP/image, train step "
        f"{mod['train_flops_per_image'] / 1e6:.1f} MFLOP/image (XLA cost analysis)",
        f"- measured f32 matmul ceiling (XLA, 2048², best of 5): {r['matmul_ceiling_gflops']:.0f} GFLOP/s",
        f"- batch {r['settings']['batch_size']}, {r['settings']['steps']} steps per variant per round, "
        f"{r['settings']['rounds']} interleaved rounds; {r['seconds']:.0f} s in all",
        "",
        "| variant | img/s best | img/s median | GFLOP/s best | % of matmul ceiling | what |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, v in r["results"].items():
        ips, g = v["images_per_s"], v["gflops_per_s"]
        gcol = f"{g['best']:.1f} | {100 * g['best'] / r['matmul_ceiling_gflops']:.0f}%" if g else "– | –"
        lines.append(f"| {name} | {ips['best']:.0f} | {ips['median']:.0f} | {gcol} | {v['what']} |")
    lines += ["", "| ratio | best/best | median/median | paired median | target |", "|---|---:|---:|---:|---|"]
    for name, x in r["ratios"].items():
        target = r["targets"].get(name)
        verdict = "" if target is None else f"≥ {target:.1f}x: {'met' if x['paired_median'] >= target else 'not met'}"
        lines.append(f"| {name} | {x['best']:.2f} | {x['median']:.2f} | {x['paired_median']:.2f} | {verdict} |")
    if "torch" in r["results"]:
        t = r["results"]["torch"]["train_flops_per_image"]
        lines += [
            "",
            f"PyTorch's FlopCounterMode counts {t / 1e6:.1f} MFLOP/image for its train step "
            "(convolutions and matmuls only).",
        ]
    for name, why in r["skipped"].items():
        lines.append(f"\nSkipped {name}: {why}")
    return "\n".join(lines) + "\n"


def write(report: dict[str, Any], out: Path) -> None:
    write_json(out.with_suffix(".json"), report)
    write_text(out.with_suffix(".md"), markdown(report))

"""IMP rows: a whole compiled ``lottery.run`` against PyTorch with
``torch.nn.utils.prune`` doing the same steps; recompiles across IMP rounds; and the
compile time of the lottery study's one-round program.

The PyTorch side is the optional ``.[torch]`` extra (the rows are skipped, with a note,
without it). Both sides train LeNet-300-100 with Adam on 4,000 examples of MNIST's
shape (random inputs: the cost does not depend on the values), batch 60, the same
number of steps a round, prune each layer by magnitude (hidden 20%, output 10% of the
remaining weights) and rewind the survivors to their initial values.
"""

from __future__ import annotations

import time

from experiments.bench import timing

N_TRAIN, BATCH, LR = 4000, 60, 1.2e-3
RATES = {r"^output/": 0.1}


def _data(seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N_TRAIN, 784), np.float32)
    y = rng.integers(0, 10, N_TRAIN).astype(np.int32)
    return x, y


def _jax_imp(rounds: int, steps: int, x, y, repeats: int = 1):
    """Seconds of one cold ``lax.scan`` over ``rounds`` IMP rounds (trace, compile, run)
    and of the run alone (median of ``repeats`` further calls), and the program's
    compile seconds."""
    import jax
    import jax.numpy as jnp
    import optax

    import jaxsparse as js
    from experiments.models import LeNet300

    model = LeNet300()
    data = {"x": jnp.asarray(x), "y": jnp.asarray(y)}

    def loss_fn(p, batch):
        logits = model.apply({"params": p}, batch["x"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

    train_fn = js.make_train_fn(loss_fn, data, batch_size=BATCH, steps=steps)

    def program(key):
        params = model.init(key, jnp.zeros((1, 784)))["params"]
        state = js.SparseTrainState.create(apply_fn=model.apply, params=params, tx=optax.adam(LR))
        state, hist = js.lottery.run(
            state, train_fn, key, rounds=rounds, fraction=0.2, scope="layerwise", rates=RATES
        )
        return state.params, hist["density"]

    key = jax.random.key(0)
    t0 = time.perf_counter()
    compiled = jax.jit(program).lower(key).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(key))
    cold_s = time.perf_counter() - t0
    warm = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(key))
        warm.append(time.perf_counter() - t0)
    return cold_s, timing.median(warm), compile_s


def _torch_device() -> str:
    """PyTorch runs where JAX runs: on the GPU when JAX's backend is one and torch sees
    it, else on the CPU."""
    import jax
    import torch

    return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"


def _torch_imp(rounds: int, steps: int, x, y, device: str = "cpu") -> float:
    import torch
    import torch.nn.utils.prune as tprune

    torch.manual_seed(0)
    layers = [torch.nn.Linear(784, 300), torch.nn.Linear(300, 100), torch.nn.Linear(100, 10)]
    net = torch.nn.Sequential(layers[0], torch.nn.ReLU(), layers[1], torch.nn.ReLU(), layers[2])
    net = net.to(device)
    init = [lin.weight.detach().clone() for lin in layers]
    xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).long().to(device)
    per_epoch = N_TRAIN // BATCH
    gen = torch.Generator().manual_seed(0)
    net(xt[:BATCH]).sum().backward()  # load torch's kernels before the clock starts
    net.zero_grad()
    t0 = time.perf_counter()
    for r in range(rounds):
        opt = torch.optim.Adam(net.parameters(), lr=LR)
        for step in range(steps):
            if step % per_epoch == 0:
                perm = torch.randperm(N_TRAIN, generator=gen).to(device)
            idx = perm[(step % per_epoch) * BATCH : (step % per_epoch + 1) * BATCH]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
        if r < rounds - 1 or rounds == 1:
            for lin, w0, amount in zip(layers, init, (0.2, 0.2, 0.1)):
                tprune.l1_unstructured(lin, "weight", amount=amount)
                with torch.no_grad():  # rewind the survivors to their initial values
                    lin.weight_orig.copy_(w0)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def imp_vs_torch(quick: bool) -> list[dict]:
    rounds, epochs = (2, 0) if quick else (13, 8)
    steps = 20 if quick else epochs * (N_TRAIN // BATCH)
    x, y = _data()
    repeats = 1 if quick else 3  # the whole IMP run, each side; wall time, medians
    cold, warm, compile_s = _jax_imp(rounds, steps, x, y, repeats)
    what = f"IMP, {rounds} rounds x {steps} steps, one compiled lottery.run / PyTorch"
    extra = {
        "rounds": rounds,
        "steps_per_round": steps,
        "compile_s": compile_s,
        "repeats": repeats,
    }
    try:
        import torch
    except ImportError:
        return [
            skipped(what, 'PyTorch not installed (pip install -e ".[torch]")', cold, warm, extra)
        ]
    device = _torch_device()
    torch_s = timing.median([_torch_imp(rounds, steps, x, y, device) for _ in range(repeats)])
    return [
        timing.row(
            what + " (cold: trace + compile + run)",
            cold,
            torch_s,
            f"torch {torch.__version__} ({device}) + torch.nn.utils.prune",
            goal=0.5,
            **extra,
        ),
        timing.row(
            what + " (compiled: run only)",
            warm,
            torch_s,
            f"torch {torch.__version__} ({device}) + torch.nn.utils.prune",
            goal=0.4,
            **extra,
        ),
    ]


def skipped(what, note, cold, warm, extra):
    return {**timing.skipped(what, note), "ours_ms": cold * 1e3, "warm_ms": warm * 1e3, **extra}


def recompiles(quick: bool) -> list[dict]:
    """Backend compiles while 10 IMP rounds run through one jitted train-and-prune step
    (new masks and new rounds every call): should be exactly the first call's one."""
    import jax
    import jax.numpy as jnp
    import optax

    import jaxsparse as js
    from experiments.models import LeNet300

    model = LeNet300()
    x, y = _data()
    data = {"x": jnp.asarray(x[:600]), "y": jnp.asarray(y[:600])}

    def loss_fn(p, batch):
        logits = model.apply({"params": p}, batch["x"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

    train_fn = js.make_train_fn(loss_fn, data, batch_size=BATCH, steps=5 if quick else 20)

    @jax.jit
    def one_round(state, key):
        state, _ = train_fn(state, key)
        return js.imp_round(state, fraction=0.2, scope="layerwise", rates=RATES)

    params = model.init(jax.random.key(0), jnp.zeros((1, 784)))["params"]
    state = js.SparseTrainState.create(apply_fn=model.apply, params=params, tx=optax.adam(LR))
    compiles = []
    listener = _compile_listener(compiles)
    try:
        for r in range(10):
            state = one_round(state, jax.random.key(r))
        jax.block_until_ready(state)
    finally:
        _remove_listener(listener)
    density = float(js.sparsity(state.mask))
    return [
        {
            "what": "backend compiles across 10 IMP rounds (one jitted train + imp_round)",
            "compiles": len(compiles),
            "goal": "1",
            "met": len(compiles) == 1,
            "final_sparsity": density,
        }
    ]


def _compile_listener(sink: list):
    import jax

    def listen(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            sink.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listen)
    return listen


def _remove_listener(listen) -> None:
    from jax._src import monitoring

    monitoring.unregister_event_duration_listener(listen)


def study_compile(quick: bool) -> list[dict]:
    """Seconds to trace and compile the lottery study's one-round program (LeNet on
    MNIST, three arms and two seeds vmapped), as ``jaxsparse lottery`` reports it."""
    import re
    import tempfile

    from experiments.lottery.config import LotteryConfig
    from experiments.lottery.run import run_study

    logged = []
    with tempfile.TemporaryDirectory() as out:
        cfg = LotteryConfig(rounds=1, steps=20, eval_every=10, seeds=2, out=out)
        run_study(cfg, log=logged.append)
    found = [re.search(r"compiled one round in ([0-9.]+) s", line) for line in logged]
    seconds = next(float(m.group(1)) for m in found if m)
    return [
        {
            "what": "compile the lottery study's one-round program (LeNet-300-100, "
            "2 seeds x 3 arms)",
            "seconds": seconds,
        }
    ]


def prune_compile(quick: bool) -> list[dict]:
    """Seconds (process CPU time) to trace and compile one jitted ``js.prune`` of L
    equal conv kernels: how the compiled selection grows with the number of leaves."""
    import jax
    import jax.numpy as jnp

    import jaxsparse as js

    rows = []
    for n_leaves in (2, 4) if quick else (4, 16, 48):
        params = {f"conv{i}": {"kernel": jnp.ones((3, 3, 32, 32))} for i in range(n_leaves)}
        mask = js.mask_like(params)
        for scope in ("layerwise", "global"):
            fn = jax.jit(
                lambda p, m, scope=scope: js.prune(js.scores.magnitude(p), m, 0.2, scope=scope)
            )
            t0 = time.process_time()
            fn.lower(params, mask).compile()
            rows.append(
                {
                    "what": f"compile one {scope} js.prune of {n_leaves} (3, 3, 32, 32) kernels",
                    "seconds": time.process_time() - t0,
                    "leaves": n_leaves,
                }
            )
    return rows


def measure(quick: bool) -> dict:
    rows = imp_vs_torch(quick) + recompiles(quick) + prune_compile(quick)
    if quick:
        rows.append(
            {
                "what": "compile the lottery study's one-round program",
                "seconds": None,
                "skipped": True,
                "ratio": None,
                "note": "full run only",
            }
        )
    else:
        rows += study_compile(quick)
    note = (
        "IMP of LeNet-300-100 (Adam, batch 60, 4,000 examples; hidden layers 20%, output "
        "10% a round, rewind to init): jaxsparse's whole `lottery.run` jitted as one "
        "program, cold (trace + compile + run, once) and compiled (run only, median of 3), "
        "against PyTorch with `torch.nn.utils.prune` in eager mode doing the same steps "
        "(median of 3 whole runs); wall time. Compiles are "
        "counted with jax's `/jax/core/compile/backend_compile_duration` event."
    )
    cols = [
        *timing.RATIO_COLUMNS[:5],
        ("compile_s", "compile s"),
        ("compiles", "compiles"),
        ("seconds", "seconds"),
        ("goal", "goal"),
        ("met", "met"),
    ]
    return timing.section("Iterative magnitude pruning", rows, note, cols)

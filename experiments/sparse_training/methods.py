"""The methods of the sparse-training study as pure functions of one seed's initial
weights and key, each jitted and ``vmap``-ed over seeds by :mod:`.run`.

* Mask finders (before training): ``erk`` (random positions, ERK layer densities),
  ``snip``, ``grasp``, ``synflow`` (global selection, as in their papers), ``imp``
  (:func:`jaxsparse.lottery.run`: ``imp_rounds`` full trainings, global magnitude,
  rewinding to init).
* Trainers, all ``steps`` Adam updates on the same data order a seed: ``static`` (a
  fixed mask; dense is the all-True mask) shared by every found mask, and ``set``,
  ``rigl``, ``gmp`` (Zhu & Gupta's cubic schedule, layerwise magnitude) and ``ste``
  (dense weights, the forward pass masked to the ERK densities by magnitude, recomputed
  every step, :func:`jaxsparse.straight_through`).

Mask updates run between chunks of ``update_every`` steps, outside the per-step scan:
under ``vmap`` over seeds the step counter is batched, so a ``lax.cond`` inside the
step would run both branches every step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

import jaxsparse as js
from experiments import models


class Methods:
    """Closures over the model, the data and the configuration."""

    def __init__(self, cfg, arrays, probe):
        self.cfg = cfg
        self.model = models.LeNet300()
        self.arrays = arrays
        self.probe = probe  # SNIP's / GraSP's batch: per_class examples of each digit
        self.tx = optax.adam(cfg.lr)
        self.end = int(cfg.update_end * cfg.steps)

    # --- pieces -------------------------------------------------------------------------

    def init(self, key):
        return self.model.init(key, jnp.zeros((1, 784), jnp.float32))["params"]

    def logits(self, params, x):
        return self.model.apply({"params": params}, x)

    def loss(self, params, batch, temperature=1.0):
        z = self.logits(params, batch["x"]) / temperature
        return optax.softmax_cross_entropy_with_integer_labels(z, batch["y"]).mean()

    def erk_targets(self, params):
        return js.distributions.erk(params, self.cfg.sparsity)  # shapes only

    def evaluate(self, params, mask):
        a = self.arrays

        def acc(x, y):
            return jnp.mean(jnp.argmax(self.logits(params, x), -1) == y)

        return {
            "test_acc": acc(a["x_test"], a["y_test"]),
            "val_acc": acc(a["x_val"], a["y_val"]),
            "sparsity": js.sparsity(mask),
        }

    def batches(self, key):
        n, b, steps = self.arrays["x_train"].shape[0], self.cfg.batch_size, self.cfg.steps
        per_epoch = n // b
        epochs = -(-steps // per_epoch)
        perms = jax.vmap(lambda k: jax.random.permutation(k, n))(jax.random.split(key, epochs))
        return perms[:, : per_epoch * b].reshape(-1, b)[:steps]

    def train(self, state, idx, loss=None, update=None):
        """``steps`` updates on the minibatches ``idx`` (``(steps, batch_size)`` indices,
        from :meth:`batches`); ``update(state, batch)`` after every ``update_every``."""
        loss = loss or self.loss
        data = {"x": self.arrays["x_train"], "y": self.arrays["y_train"]}

        def step(st, i):
            batch = jax.tree.map(lambda x: x[i], data)
            return st.apply_gradients(grads=jax.grad(loss)(st.params, batch)), None

        if update is None:
            return jax.lax.scan(step, state, idx)[0]
        every = self.cfg.update_every

        def chunk(st, ic):
            st = jax.lax.scan(step, st, ic)[0]
            return update(st, jax.tree.map(lambda x: x[ic[-1]], data)), None

        return jax.lax.scan(chunk, state, idx.reshape(-1, every, idx.shape[-1]))[0]

    def state(self, params, mask=None):
        return js.SparseTrainState.create(
            apply_fn=self.model.apply, params=params, tx=self.tx, mask=mask
        )

    # --- mask finders -------------------------------------------------------------------

    def find_erk(self, params, key):
        return js.prune(
            js.scores.random(key, params), js.mask_like(params), self.erk_targets(params)
        )

    def find_snip(self, params, key):
        scores = js.scores.snip(self.loss, params, self.probe)
        return js.prune(scores, js.mask_like(params), self.cfg.sparsity, scope="global")

    def find_grasp(self, params, key):
        t = self.cfg.grasp_temperature
        scores = js.scores.grasp(lambda p, b: self.loss(p, b, t), params, self.probe)
        return js.prune(scores, js.mask_like(params), self.cfg.sparsity, scope="global")

    def find_synflow(self, params, key):
        return js.scores.iterative_synflow(
            self.logits, params, (1, 784), 1.0 - self.cfg.sparsity,
            rounds=self.cfg.synflow_rounds, scope="global",
        )  # fmt: skip

    def find_imp(self, params, key):
        """The ticket after ``imp_rounds`` rounds of train -> prune p -> rewind, with
        ``(1 - p) ** rounds = 1 - sparsity``: (mask, initial weights under it)."""
        p = 1.0 - (1.0 - self.cfg.sparsity) ** (1.0 / self.cfg.imp_rounds)
        ticket, _ = js.lottery.run(
            self.state(params),
            lambda s, k: (self.train(s, self.batches(k)), {}),
            key,
            rounds=self.cfg.imp_rounds,
            fraction=p,
            scope="global",
        )
        return ticket.mask

    # --- trainers (params, mask, key, order) -> metrics ---------------------------------
    # ``order`` is the seed's minibatch order (:meth:`batches` of its data key), drawn
    # once by the caller: every trainer of a seed sees the same order, and the
    # permutation is compiled once instead of into every trainer's program.

    def run_static(self, params, mask, key, order):
        st = self.train(self.state(params, mask), order)
        return self.evaluate(st.params, st.mask)

    def run_set(self, params, mask, key, order):
        c, k_set = self.cfg, jax.random.fold_in(key, 1)

        def update(st, _):
            return js.dst.set(st, k_set, every=c.update_every, end=self.end, zeta=c.drop_fraction)

        st = self.train(self.state(params, mask), order, update=update)
        return self.evaluate(st.params, st.mask)

    def run_rigl(self, params, mask, key, order):
        c = self.cfg

        def update(st, batch):
            grads = jax.grad(self.loss)(st.params, batch)  # dense: dead weights get one too
            return js.dst.rigl(st, grads, every=c.update_every, end=self.end, alpha=c.drop_fraction)

        st = self.train(self.state(params, mask), order, update=update)
        return self.evaluate(st.params, st.mask)

    def run_gmp(self, params, mask, key, order):
        schedule = js.schedules.polynomial(self.cfg.sparsity, begin=0, end=self.end)

        def update(st, _):
            return js.schedules.gradual_prune(st, schedule, self.cfg.update_every)

        st = self.train(self.state(params), order, update=update)
        return self.evaluate(st.params, st.mask)

    def ste_mask(self, params):
        return js.prune(js.scores.magnitude(params), js.mask_like(params), self.erk_targets(params))

    def run_ste(self, params, mask, key, order):
        def loss(p, batch):
            return self.loss(js.straight_through(p, self.ste_mask(p)), batch)

        st = self.train(self.state(params), order, loss=loss)
        m = self.ste_mask(st.params)
        return self.evaluate(js.apply_mask(st.params, m), m)

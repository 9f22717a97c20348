#!/bin/bash
# Runs bench sections one process each, with a time limit each, as on a lent GPU machine:
#   RUNS="name:sections:trees:timeout_s[:skip] ..." OUT=dir bash experiments/bench/per_tree.sh
# e.g. RUNS="bert:models:bert_base:150 training:training::100
#            gpt13:models:gpt_1p3b:150:adam,masked,SparseTrainState,gradual,rigl,dispatch"
# (on an H200 a full tree took 80-110 s, compile included). Writes $OUT/all.log and
# $OUT/<name>.json. JAX_PLATFORMS defaults to cuda; EXTRA passes flags to the bench.
export JAX_PLATFORMS=${JAX_PLATFORMS:-cuda} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/bench-out}
mkdir -p "$OUT"
git log --oneline -1 2>/dev/null | tee -a "$OUT/all.log"
python3 -c "import jax, flax, optax; print(jax.__version__, flax.__version__, optax.__version__, jax.devices())" 2>&1 | tee -a "$OUT/all.log"
for spec in $RUNS; do
  IFS=: read -r name sec trees tmo skip <<< "$spec"
  d=/tmp/bench-$name
  rm -rf "$d"
  t0=$SECONDS
  echo "=== $name sections=$sec trees=$trees skip=$skip" | tee -a "$OUT/all.log"
  # shellcheck disable=SC2086
  JAXSPARSE_BENCH_TREES=$trees JAXSPARSE_BENCH_SKIP=$skip timeout "$tmo" \
    python3 -m experiments.cli --compile-cache off bench $EXTRA --sections "$sec" --out "$d" >> "$OUT/all.log" 2>&1
  echo "=== $name rc=$? $((SECONDS - t0)) s" | tee -a "$OUT/all.log"
  cp "$d"/*/bench.json "$OUT/$name.json" 2>/dev/null
done
tail -c 11000 "$OUT/all.log"

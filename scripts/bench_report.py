#!/usr/bin/env python3
"""Summarise a `cargo bench -p shardgate-core -p shardgate-pipeline` run.

Reads criterion's estimates (median) under $CARGO_TARGET_DIR/criterion (or
target/criterion), prints every benchmark in GB/s, then the pipeline's
throughput as a ratio of its kernel-chain limit on this machine's cores:

  write chain per core = 1 / (1/aead + 1/rs_encode + ((k+m)/k)/blake3 + 2/memcpy)
  read chain per core  = 1 / (1/aead + 1/blake3 + 2/memcpy)      (healthy: no decode)
  limit = cores x chain;   ratio = pipeline / limit

and as a ratio of the same chain measured on all cores at once
(`stripe/encode_parallel`; for reads `stripe/decode_parallel` plus blake3
verification on all cores), which includes what two cores lose to sharing
caches and memory bandwidth.

Run from the repository root after the benches; the output is what
BENCHMARKS.md quotes.
"""
import json
import os
import sys
from pathlib import Path


def load(root: Path):
    out = {}
    for est in root.rglob("new/estimates.json"):
        bench = json.loads((est.parent / "benchmark.json").read_text())
        tp = bench.get("throughput") or {}
        nbytes = tp.get("Bytes") or tp.get("BytesDecimal")
        if not nbytes:
            continue
        ns = json.loads(est.read_text())["median"]["point_estimate"]
        out[bench["full_id"]] = nbytes / ns  # bytes per ns == GB/s
    return out


def main():
    target = Path(os.environ.get("CARGO_TARGET_DIR", "target"))
    root = target / "criterion"
    if not root.is_dir():
        sys.exit(f"no criterion results under {root}: run the benches first")
    gbs = load(root)
    cores = os.cpu_count() or 1
    print(f"| benchmark | GB/s |\n|---|---|")
    for name in sorted(gbs):
        print(f"| {name} | {gbs[name]:.2f} |")

    def get(name):
        if name not in gbs:
            sys.exit(f"missing benchmark {name}")
        return gbs[name]

    aead, blake3, memcpy = get("aead/ring"), get("kernel/blake3"), get("kernel/memcpy")
    print(f"\ncores: {cores}\n")
    print("| pipeline | GB/s | chain limit (cores x one core) | ratio | chain measured on all cores | ratio |")
    print("|---|---|---|---|---|---|")
    for code in ("4+2", "10+4"):
        k, m = (int(x) for x in code.split("+"))
        rs = get(f"rs_encode/erasure/{code}")  # the codec chosen for k + m <= 32
        write_chain = 1 / (1 / aead + 1 / rs + ((k + m) / k) / blake3 + 2 / memcpy)
        read_chain = 1 / (1 / aead + 1 / blake3 + 2 / memcpy)
        write_par = get(f"stripe/encode_parallel/{code}")
        read_par = 1 / (1 / get(f"stripe/decode_parallel/{code}") + 1 / (cores * blake3))
        for kind, chain, par in (("write", write_chain, write_par), ("read", read_chain, read_par)):
            got = get(f"pipeline/{kind}/{code}")
            limit = cores * chain
            print(f"| {kind} {code} | {got:.2f} | {limit:.2f} | {got / limit:.0%} | {par:.2f} | {got / par:.0%} |")
    for extra in ("pipeline/write_md5/4+2", "pipeline/read_degraded/4+2"):
        if extra in gbs:
            print(f"| {extra.split('/', 1)[1]} | {gbs[extra]:.2f} | (information) | | | |")


if __name__ == "__main__":
    main()

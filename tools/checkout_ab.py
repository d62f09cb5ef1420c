"""Eager inference of one network from two checkouts (git worktrees, each built with tools/dev_build.sh), in
alternating fresh processes, each with a fresh kernel cache: the A/B of a change that a single tree cannot
switch off. Eval, no_grad, channels_last model and input, 224x224, kernels="auto" (its races run first).

    git worktree add /tmp/base <commit> && (cd /tmp/base && bash tools/dev_build.sh)
    python tools/checkout_ab.py /tmp/base . --network regnetx_400mf --batch 1 [--rounds 2] [--repeats 100]

Prints each process's median and, per round, B's speedup over A (A / B).
"""
import argparse
import os
import subprocess
import sys
import tempfile

ARCHS = {"regnetx_400mf": ("regnet.arch", "regnetx_400mf"), "mobilenet_v2": ("mobilenet_v2.arch", "mobilenet_v2"),
         "efficientnet_b0": ("efficientnet.arch", "efficientnet_b0"), "regnetx32": ("regnetx32.arch", None)}


def worker(tree: str, network: str, batch: int, repeats: int, threads: int) -> None:
    sys.path.insert(0, tree)
    import time

    import torch

    import pycnn
    assert os.path.dirname(os.path.abspath(pycnn.__file__)) == os.path.join(tree, "pycnn"), pycnn.__file__
    torch.set_num_threads(threads)
    arch, name = ARCHS[network]
    model = pycnn.compile(os.path.join(tree, "archs", arch), name, input=(3, 224, 224), kernels="auto")
    model = model.eval().to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    times = []
    with torch.no_grad():
        for _ in range(5):  # the races, then warm
            model(x)
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    print(sorted(times)[len(times) // 2] * 1e3)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", help="checkout A (the baseline)")
    ap.add_argument("b", help="checkout B")
    ap.add_argument("--network", choices=sorted(ARCHS), default="regnetx_400mf")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    trees = [os.path.abspath(args.a), os.path.abspath(args.b)]
    if args.worker:
        worker(trees[0], args.network, args.batch, args.repeats, args.threads)
        return 0
    for tree in trees:
        if not os.path.isfile(os.path.join(tree, "pycnn", "__init__.py")):
            ap.error(f"{tree} is not a pycnn checkout")
    common = ["--network", args.network, "--batch", str(args.batch), "--repeats", str(args.repeats),
              "--threads", str(args.threads), "--worker"]
    for r in range(args.rounds):
        ms = []
        for tree in trees:
            with tempfile.TemporaryDirectory(prefix="pycnn-ab-") as cache:
                env = dict(os.environ, PYCNN_CACHE_DIR=cache, PYTHONPATH=tree)
                out = subprocess.run([sys.executable, os.path.abspath(__file__), tree, tree, *common], env=env,
                                     capture_output=True, text=True, cwd=tree)
            if out.returncode != 0:
                sys.stderr.write(out.stderr)
                print(f"checkout_ab: the run of {tree} failed (exit status {out.returncode})", file=sys.stderr)
                return 1
            ms.append(float(out.stdout.strip().splitlines()[-1]))
        print(f"round {r + 1}: {args.network} batch {args.batch}: A {ms[0]:.2f} ms, B {ms[1]:.2f} ms, "
              f"B {ms[0] / ms[1]:.3f}x A", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

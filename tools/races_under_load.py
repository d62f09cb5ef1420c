"""Kernel races timed on a busy machine, then looked up on an idle one: how many the cache measures again.

    PYTHONPATH=$PWD python tools/races_under_load.py [--arch archs/regnetx32.arch] [--batch 1] [--threads 2]
                                                     [--hogs 1]

A fresh kernel cache (a temporary folder) is filled while --hogs other torch processes (matrix products on as many
threads: what a test suite or a benchmark beside it does) share the cores, then a second process, with the cores
idle, runs the same network: entries whose reference workload ran pycnn.dispatch.LOADED times slower than it runs
in that process are measured again. Prints the references (the fixed workload's time in each race) and the
choices of both runs.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RUN = """
import json, sys, torch, pycnn
from pycnn import dispatch
torch.set_num_threads({threads})
model = pycnn.compile({arch!r}).eval().to(memory_format=torch.channels_last)
x = torch.randn({batch}, *{shape}).to(memory_format=torch.channels_last)
before = dict(dispatch.kernel_cache().entries)
with torch.no_grad():
    model(x)
dispatch.flush_measurements()
after = dispatch.kernel_cache().entries
print(json.dumps(dict(measured=[k for k in after if after[k] is not before.get(k)], entries=after)))
"""


def run(args, env) -> dict:
    code = RUN.format(threads=args.threads, arch=args.arch, batch=args.batch, shape=tuple(args.input))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def summary(name: str, result: dict) -> None:
    entries = result["entries"]
    refs = sorted(e["reference_ms"] * 1e3 for k, e in entries.items() if k in result["measured"])
    choices = {}
    for e in entries.values():
        choices[e["choice"]] = choices.get(e["choice"], 0) + 1
    spread = f"{refs[0]:.0f}-{refs[-1]:.0f} us" if refs else "-"
    print(f"{name:5s} races measured {len(result['measured']):3d} of {len(entries):3d}, reference {spread:>16s}, "
          f"choices {choices}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="archs/regnetx32.arch")
    parser.add_argument("--input", type=int, nargs=3, default=(1, 96, 96), metavar=("C", "H", "W"))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--hogs", type=int, default=1,
                        help="processes multiplying matrices on --threads threads during the first run")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pycnn-races-") as cache:
        env = {**os.environ, "PYCNN_CACHE_DIR": cache, "PYTHONPATH": ROOT}
        hog = f"import torch\ntorch.set_num_threads({args.threads})\na = torch.randn(256, 256)\nwhile True:\n    a @ a"
        hogs = [subprocess.Popen([sys.executable, "-c", hog]) for _ in range(args.hogs)]
        try:
            busy = run(args, env)
        finally:
            for h in hogs:
                h.kill()
                h.wait()
        summary("busy", busy)
        summary("idle", run(args, env))


if __name__ == "__main__":
    main()

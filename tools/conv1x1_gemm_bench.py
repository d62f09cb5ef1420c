"""A 1x1 convolution in training, forward and backward (input and weight gradients), interleaved: PyTorch's conv
(oneDNN) against pycnn.fused.conv1x1_as_gemm (matrix products over the channels_last pixels, MKL), on
RegNetX-400MF's stride-1 1x1 shapes at batch 8, channels_last. --cpu-cache: with pycnn's caching CPU allocator;
without it the largest shapes' times are mostly glibc's page faults on fresh outputs (~1 us a 4 KiB page),
which vary from run to run with the heap's history.

    PYTHONPATH=$PWD python tools/conv1x1_gemm_bench.py [--threads 2] [--batch 8] [--repeats 20] [--cpu-cache]
    PYTHONPATH=$PWD python tools/conv1x1_gemm_bench.py --network regnet_x_400mf [--repeats 12] [--eval]

--network: a whole training step (forward, loss, backward, SGD) of the network at 224x224 in channels_last, as
kernels="auto" chose its kernels, against a copy that runs, wherever the choice was "gemm", the race's runner-up
(the faster of "pycnn" and "torch" in the kernel cache: what auto would run without the candidate), interleaved
in one process. --eval: the same for inference (eval, no_grad): the product on the folded weight in
pycnn::eval_conv_bn_act's plans against the runner-up.
"""
import argparse

import torch
from torch import nn

from pycnn.bench import add_cpu_cache_argument, apply_cpu_cache
from pycnn.fused import conv1x1_as_gemm, gemm_applies
from pycnn.timing import compare

SHAPES = [(32, 32, 112), (32, 64, 56), (64, 64, 28), (64, 160, 28), (160, 160, 14), (160, 400, 14), (400, 400, 7)]


def network_step(name: str, batch: int, repeats: int, train: bool = True) -> None:
    import copy

    import torch.nn.functional as F

    from pycnn import dispatch, runtime
    from pycnn.bench.train_step import _models
    model = _models(name, 224)[0].to(memory_format=torch.channels_last).train(train)
    x = torch.randn(batch, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, 1000, (batch,))
    if train:
        F.cross_entropy(model(x), target).backward()  # the kernel choices
    else:
        with torch.no_grad():
            model(x)
    without = copy.deepcopy(model)
    mode = "|train|" if train else "|eval|"
    entries = dispatch.kernel_cache().entries
    switched = {}
    for m in without.modules():
        for steps in runtime.step_lists(m):
            for s in steps:
                if isinstance(s, runtime.FusedStep) and "gemm" in s.kernel_by_token.values():
                    entry = next(e for k, e in entries.items() if k.startswith(s.signature + "|")
                                 and mode in k and e["choice"] == "gemm")
                    runner_up = min(("pycnn", "torch"), key=lambda k: entry[f"{k}_ms"])
                    switched[runner_up] = switched.get(runner_up, 0) + 1
                    s.kernel_by_token = {t: runner_up if k == "gemm" else k for t, k in s.kernel_by_token.items()}
    models = {"with gemm": model, "without": without}
    opts = {k: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for k, m in models.items()}

    def step(k):
        if not train:
            with torch.no_grad():
                models[k](x)
            return
        opts[k].zero_grad(set_to_none=True)
        F.cross_entropy(models[k](x), target).backward()
        opts[k].step()
    t = compare({k: (lambda k=k: step(k)) for k in models}, torch.device("cpu"), repeats=repeats, warmup=2)
    a, b = t["without"].median_s * 1e3, t["with gemm"].median_s * 1e3
    print(f"{name} {'training step' if train else 'inference'}, batch {batch}: {sum(switched.values())} layers chose "
          f"gemm (runner-up: {switched}); without {a:.2f} ms, with {b:.2f} ms, {a / b:.3f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--network", choices=["regnet_x_400mf", "mobilenet_v2", "efficientnet_b0"])
    ap.add_argument("--eval", action="store_true", help="with --network: inference instead of a training step")
    add_cpu_cache_argument(ap)
    args = ap.parse_args()
    if args.eval and not args.network:
        ap.error("--eval goes with --network")
    allocator = apply_cpu_cache(args)
    torch.set_num_threads(args.threads)
    if args.network:
        network_step(args.network, args.batch, args.repeats, train=not args.eval)
        return
    torch.manual_seed(0)
    print(f"{'shape':>22} {'oneDNN ms':>10} {'gemm ms':>8} {'speedup':>8}  "
          f"(forward + backward, {args.threads} threads, {allocator})")
    for c_in, c_out, hw in SHAPES:
        conv = nn.Conv2d(c_in, c_out, 1, bias=False)
        x = torch.randn(args.batch, c_in, hw, hw).contiguous(memory_format=torch.channels_last).requires_grad_()
        assert gemm_applies(conv, x)
        grad = torch.randn(args.batch, c_out, hw, hw).contiguous(memory_format=torch.channels_last)

        def step(forward):
            return lambda: torch.autograd.grad(forward(), [x, conv.weight], grad)
        t = compare({"onednn": step(lambda: conv(x)), "gemm": step(lambda: conv1x1_as_gemm(conv, x))},
                    torch.device("cpu"), repeats=args.repeats, warmup=2)
        a, b = t["onednn"].median_s * 1e3, t["gemm"].median_s * 1e3
        print(f"{f'{args.batch}x{c_in}->{c_out} {hw}x{hw}':>22} {a:10.3f} {b:8.3f} {a / b:7.2f}x")


if __name__ == "__main__":
    main()

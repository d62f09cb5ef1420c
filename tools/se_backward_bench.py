# se_backward per CPU kernel variant (baseline, avx2, avx512), interleaved, 1 thread, EfficientNet-like SE shapes:
#   PYTHONPATH=$PWD python tools/se_backward_bench.py   (prints the baseline time and each variant's speedup over it)
import time, torch, pycnn, pycnn.ops
from pycnn import _C
torch.manual_seed(0); torch.set_num_threads(1)
cases=[(8,96,56,56,4),(8,240,28,28,10),(8,672,14,14,28)]
for (N,C,H,W,CR) in cases:
  for layout in ["nchw","channels_last"]:
    x=torch.randn(N,C,H,W); 
    if layout!="nchw": x=x.contiguous(memory_format=torch.channels_last)
    dy=torch.randn_like(x); w1=torch.randn(CR,C)*0.1; w2=torch.randn(C,CR)*0.1
    y,p,h,g=torch.ops.pycnn.se_forward(x,w1,None,w2,None,None,"silu","none")
    ts={v:[] for v in ["baseline","avx2","avx512"]}
    for rep in range(7):
      for v in ts:
        _C._set_cpu_isa(v); torch.ops.pycnn.se_backward(dy,x,w1,w2,None,p,h,g,"silu","none")
        t=time.perf_counter()
        for _ in range(3): torch.ops.pycnn.se_backward(dy,x,w1,w2,None,p,h,g,"silu","none")
        ts[v].append((time.perf_counter()-t)/3)
    med={v:sorted(t)[len(t)//2]*1e3 for v,t in ts.items()}
    print(f"{N}x{C}x{H}x{W} {layout:13s} baseline {med['baseline']:.2f} ms  avx2 {med['baseline']/med['avx2']:.2f}x  avx512 {med['baseline']/med['avx512']:.2f}x")

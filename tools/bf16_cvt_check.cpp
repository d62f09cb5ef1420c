// Does AVX512-BF16's vcvtneps2bf16 round float32 to bfloat16 as PyTorch does (c10::BFloat16: round to nearest
// even, subnormals kept, NaN -> 0x7FC0)? Random bit patterns, a quarter of them subnormal. Needs a CPU with
// avx512_bf16:  g++ -O2 -include cmath tools/bf16_cvt_check.cpp -o /tmp/bf16chk && /tmp/bf16chk
// 2026-12-03 (AMD EPYC, GCC 12): normal/inf/zero 0 mismatches of 23813070; subnormal 8061671 of 8093336 (flushed
// to zero); NaNs stay NaN (payloads kept, not 0x7FC0). So the kernels' bf16 stores stay in software.
#include <immintrin.h>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <random>
// c10::BFloat16's round_to_nearest_even: NaN -> 0x7FC0, else RNE on the upper 16 bits (keeps subnormals)
static uint16_t rne(float f){ uint32_t u; memcpy(&u,&f,4); if (f!=f) return 0x7FC0; u += 0x7FFF + ((u>>16)&1); return u>>16; }
__attribute__((target("avx512f,avx512bf16"))) static void cvt(const float* in, uint16_t* out){
  __m256bh r = _mm512_cvtneps_pbh(_mm512_loadu_ps(in)); memcpy(out,&r,32); }
int main(){
  std::mt19937 g(0); std::uniform_int_distribution<uint32_t> d;
  long normal_mis=0, normal=0, sub_mis=0, sub=0, nan_mis=0;
  float in[16]; uint16_t out[16];
  for (long it=0; it<2000000; ++it){
    for(int t=0;t<16;++t){ uint32_t u=d(g); if (t<4) u &= 0x807FFFFF; /* subnormals */ memcpy(&in[t],&u,4);}
    cvt(in,out);
    for(int t=0;t<16;++t){ float f=in[t]; uint16_t a=out[t], b=rne(f);
      if (f!=f) { nan_mis += ((a&0x7FFF) <= 0x7F80); continue; }
      bool s = std::fpclassify(f)==FP_SUBNORMAL;
      if (s){ sub++; sub_mis += a!=b; } else { normal++; normal_mis += a!=b; } } }
  printf("normal/inf/zero: %ld mismatches of %ld; subnormal: %ld of %ld; NaN kept NaN failures %ld\n", normal_mis, normal, sub_mis, sub, nan_mis);
}

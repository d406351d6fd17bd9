"""CUDA C sources of the CUDA backend's fused kernels (compiled by CuPy's NVRTC on first use).

Raw kernels are written once for a type ``T`` that a one-line prefix defines (``float`` or
``__half``): ``raw_source(name, dtype)``. Statistics and softmax sums are kept in float32 for
both. Elementwise bodies (``ELEMENTWISE``) are CuPy ``ElementwiseKernel`` operations over named
parameters; ``elementwise_check_source`` wraps one in a plain kernel so ``nvcc -ptx`` can check
it on a machine without a GPU (tests/backends/test_cuda_compile.py).
"""

from __future__ import annotations

import numpy as np

_PRELUDE = r"""
__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(__half* p, float v) { *p = __float2half_rn(v); }

// Sum of one float per thread over the block (blockDim.x a power of two, <= 1024).
__device__ float block_sum(float v, float* sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    float r = sh[0];
    __syncthreads();
    return r;
}

__device__ float block_max(float v, float* sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) sh[threadIdx.x] = fmaxf(sh[threadIdx.x], sh[threadIdx.x + s]);
        __syncthreads();
    }
    float r = sh[0];
    __syncthreads();
    return r;
}
"""

# y = LayerNorm(a (+ b)) * gamma (+ beta) over rows of `cols`; one block per row. The sum a + b
# is written to `sum_out` when `write_sum` (SkipLayerNorm's second output). Two-pass variance.
SKIP_LAYER_NORM = r"""
extern "C" __global__ void skip_layer_norm(
    const T* a, const T* b, const T* gamma, const T* beta, T* y, T* sum_out,
    int cols, float eps, int has_b, int has_beta, int write_sum)
{
    extern __shared__ float sh[];
    const size_t base = (size_t)blockIdx.x * cols;
    float s = 0.f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float v = to_f(a[base + c]) + (has_b ? to_f(b[base + c]) : 0.f);
        if (write_sum) store(&sum_out[base + c], v);
        s += v;
    }
    const float mean = block_sum(s, sh) / cols;
    float q = 0.f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float d = to_f(a[base + c]) + (has_b ? to_f(b[base + c]) : 0.f) - mean;
        q += d * d;
    }
    const float inv = rsqrtf(block_sum(q, sh) / cols + eps);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float v = to_f(a[base + c]) + (has_b ? to_f(b[base + c]) : 0.f);
        float r = (v - mean) * inv * to_f(gamma[c]) + (has_beta ? to_f(beta[c]) : 0.f);
        store(&y[base + c], r);
    }
}
"""

# y = softmax(scale * x + mask) over rows of `cols`; one block per row. Rows are indexed
# (b, h, s) with H heads and S rows per head; the mask element of (b, h, s, c) is
# mask[b * mb + h * mh + s * ms + c * mc] (strides 0 where the mask broadcasts). A row whose
# every entry is -inf gives NaN, or 0 with `nan_to_zero` (the exporters' Where(IsNaN) form).
SCALED_MASKED_SOFTMAX = r"""
extern "C" __global__ void scaled_masked_softmax(
    const T* x, const T* mask, T* y, int cols, int H, int S,
    long long mb, long long mh, long long ms, long long mc,
    float scale, int has_mask, int nan_to_zero)
{
    extern __shared__ float sh[];
    const int row = blockIdx.x;
    const size_t base = (size_t)row * cols;
    const int b = row / (H * S), h = (row / S) % H, s = row % S;
    const long long mbase = b * mb + h * mh + s * ms;
    float m = -INFINITY;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float v = to_f(x[base + c]) * scale + (has_mask ? to_f(mask[mbase + c * mc]) : 0.f);
        m = fmaxf(m, v);
    }
    m = block_max(m, sh);
    float total = 0.f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float v = to_f(x[base + c]) * scale + (has_mask ? to_f(mask[mbase + c * mc]) : 0.f);
        total += __expf(v - m);
    }
    total = block_sum(total, sh);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float v = to_f(x[base + c]) * scale + (has_mask ? to_f(mask[mbase + c * mc]) : 0.f);
        float p = __expf(v - m) / total;
        if (nan_to_zero && isnan(p)) p = 0.f;
        store(&y[base + c], p);
    }
}
"""

RAW = {"skip_layer_norm": SKIP_LAYER_NORM, "scaled_masked_softmax": SCALED_MASKED_SOFTMAX}
_CTYPE = {np.dtype(np.float32): "float", np.dtype(np.float16): "__half"}


def raw_source(name: str, dtype: np.dtype) -> str:
    """The full CUDA C source of raw kernel ``name`` for ``dtype`` (float32 or float16)."""
    return f"#include <cuda_fp16.h>\ntypedef {_CTYPE[np.dtype(dtype)]} T;\n{_PRELUDE}\n{RAW[name]}"


# ElementwiseKernel operations: (in params, out params, body). Computed in float32.
_GELU = "0.5f * v * (1.0f + erff(v * 0.70710678118654752f))"
ELEMENTWISE = {
    "gelu": ("T x", "T y", f"float v = (float)x; y = (T)({_GELU});"),
    "bias_gelu": ("T x, T b", "T y", f"float v = (float)x + (float)b; y = (T)({_GELU});"),
    "bias_relu": ("T x, T b", "T y", "float v = (float)x + (float)b; y = (T)(v > 0.f ? v : 0.f);"),
}


def elementwise_check_source(name: str, dtype: np.dtype) -> str:
    """A plain CUDA kernel around elementwise op ``name`` (same body, one element per thread)
    for compile checks with nvcc; CuPy generates the real wrapper itself."""
    ins, outs, body = ELEMENTWISE[name]
    params = [p.split()[1] for p in ins.split(", ")]
    out = outs.split()[1]
    args = ", ".join([f"const T* {p}_" for p in params] + [f"T* {out}_", "int n"])
    loads = " ".join(f"T {p} = {p}_[i];" for p in params)
    return (
        f"#include <cuda_fp16.h>\ntypedef {_CTYPE[np.dtype(dtype)]} T;\n"
        f'extern "C" __global__ void check_{name}({args}) {{\n'
        f"  int i = blockIdx.x * blockDim.x + threadIdx.x; if (i >= n) return;\n"
        f"  {loads} T {out}; {body} {out}_[i] = {out};\n}}\n"
    )

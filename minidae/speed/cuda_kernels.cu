// minidae's CUDA kernels, compiled at run time by CuPy (minidae/cuda.py loads this file).
// Each kernel does in one launch what the NumPy code does in several passes; the maths is
// the NumPy code's, operation for operation, so float32 results match it to the last bit
// where the order of operations is the same (the *_rn intrinsics stop the compiler from
// fusing a multiply and an add into one FMA, which NumPy never does).

typedef long long i64;

// ---------------------------------------------------------------------------------------
// im2col: one thread per element of cols (C, KH, KW, OH, OW, N), N fastest.
//   cols[c, kh, kw, oh, ow, n] = x[n, c, SH*oh - PH + DH*kh, SW*ow - PW + DW*kw]   (fill outside)
// x is read through its element strides (sn, sc, sh, sw), so any layout works without a copy;
// with minidae's (C, H, W, N) memory, neighbouring threads read neighbouring addresses.
template <typename T>
__device__ void im2col_impl(const T* x, T* cols, int N, int C, int H, int W, i64 sn, i64 sc, i64 sh, i64 sw,
                            int KH, int KW, int SH, int SW, int PH, int PW, int DH, int DW, int OH, int OW,
                            T fill, i64 total) {
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < total; i += (i64)blockDim.x * gridDim.x) {
        i64 r = i;
        int n = r % N; r /= N;
        int ow = r % OW; r /= OW;
        int oh = r % OH; r /= OH;
        int kw = r % KW; r /= KW;
        int kh = r % KH; r /= KH;
        int c = (int)r;
        int y = oh * SH - PH + kh * DH;
        int z = ow * SW - PW + kw * DW;
        T value = fill;
        if (y >= 0 && y < H && z >= 0 && z < W) value = x[n * sn + c * sc + y * sh + z * sw];
        cols[i] = value;
    }
}

// col2im as a gather: one thread per element of dx, stored (C, H, W, N), N fastest. Each
// thread sums, in the order (kh, kw) of the NumPy loop, the column entries whose window tap
// lands on its pixel: no atomics, so the result is deterministic.
template <typename T>
__device__ void col2im_impl(const T* cols, T* dx, int N, int C, int H, int W, int KH, int KW, int SH, int SW,
                            int PH, int PW, int DH, int DW, int OH, int OW, i64 total) {
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < total; i += (i64)blockDim.x * gridDim.x) {
        i64 r = i;
        int n = r % N; r /= N;
        int w = r % W; r /= W;
        int h = r % H; r /= H;
        int c = (int)r;
        T sum = 0;
        for (int kh = 0; kh < KH; ++kh) {
            int y = h + PH - kh * DH;
            if (y < 0 || y % SH != 0 || y / SH >= OH) continue;
            int oh = y / SH;
            for (int kw = 0; kw < KW; ++kw) {
                int z = w + PW - kw * DW;
                if (z < 0 || z % SW != 0 || z / SW >= OW) continue;
                int ow = z / SW;
                sum += cols[((((i64)c * KH + kh) * KW + kw) * OH + oh) * (i64)OW * N + (i64)ow * N + n];
            }
        }
        dx[i] = sum;
    }
}

// ---------------------------------------------------------------------------------------
// Adam over flat buffers: minidae.optim.adam, operation for operation, in NumPy's float rounding:
//   (AdamW: p = p (1 - lr wd));  g = grad + wd p (Adam's L2);  m = b1 m + (1 - b1) g;  v = b2 v + ((1 - b2) g) g
//   m_hat = m / (1 - b1^t);  v_hat = v / (1 - b2^t);  p -= (lr m_hat) / (sqrt(v_hat) + eps)
// NumPy casts each Python float (b1, 1 - b1, 1 - b1^t, lr, ...) to the arrays' dtype before using it, so
// the kernel does too. The step count t and the hyperparameters (lr, b1, b2, eps, wd) are read from device
// memory, so a captured CUDA graph uses the current ones at every replay.
__device__ inline float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ inline float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ inline float sub_rn(float a, float b) { return __fsub_rn(a, b); }
__device__ inline float div_rn(float a, float b) { return __fdiv_rn(a, b); }
__device__ inline float sqrt_rn(float a) { return __fsqrt_rn(a); }
__device__ inline double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ inline double add_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ inline double sub_rn(double a, double b) { return __dsub_rn(a, b); }
__device__ inline double div_rn(double a, double b) { return __ddiv_rn(a, b); }
__device__ inline double sqrt_rn(double a) { return __dsqrt_rn(a); }

template <typename T>
__device__ void adam_impl(T* p, const T* grad, T* m, T* v, const i64* step, const double* hyper, i64 total) {
    double t = (double)step[0];
    double lr = hyper[0], b1 = hyper[1], b2 = hyper[2], eps = hyper[3], wd = hyper[4];
    bool decoupled = hyper[5] != 0.0;  // AdamW: p *= 1 - lr wd, and no L2 term in g
    T b1_t = (T)b1, b2_t = (T)b2, one_minus_b1 = (T)(1.0 - b1), one_minus_b2 = (T)(1.0 - b2);
    T bias1 = (T)(1.0 - pow(b1, t)), bias2 = (T)(1.0 - pow(b2, t)), lr_t = (T)lr, eps_t = (T)eps, wd_t = (T)wd;
    T decay = (T)(1.0 - lr * wd);
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < total; i += (i64)blockDim.x * gridDim.x) {
        T pi = p[i], g = grad[i];
        if (wd != 0.0 && decoupled) pi = mul_rn(pi, decay);
        if (wd != 0.0 && !decoupled) g = add_rn(g, mul_rn(wd_t, pi));
        T mi = add_rn(mul_rn(b1_t, m[i]), mul_rn(one_minus_b1, g));
        T vi = add_rn(mul_rn(b2_t, v[i]), mul_rn(mul_rn(one_minus_b2, g), g));
        T m_hat = div_rn(mi, bias1), v_hat = div_rn(vi, bias2);
        p[i] = sub_rn(pi, div_rn(mul_rn(lr_t, m_hat), add_rn(sqrt_rn(v_hat), eps_t)));
        m[i] = mi;
        v[i] = vi;
    }
}

// ---------------------------------------------------------------------------------------
extern "C" {
#define MINIDAE_KERNELS(T)                                                                                     \
__global__ void im2col_##T(const T* x, T* cols, int N, int C, int H, int W, i64 sn, i64 sc, i64 sh, i64 sw,   \
                           int KH, int KW, int SH, int SW, int PH, int PW, int DH, int DW, int OH, int OW,    \
                           T fill, i64 total) {                                                                \
    im2col_impl<T>(x, cols, N, C, H, W, sn, sc, sh, sw, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, fill, total);  \
}                                                                                                              \
__global__ void col2im_##T(const T* cols, T* dx, int N, int C, int H, int W, int KH, int KW, int SH, int SW,  \
                           int PH, int PW, int DH, int DW, int OH, int OW, i64 total) {                        \
    col2im_impl<T>(cols, dx, N, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, total);                       \
}                                                                                                              \
__global__ void adam_##T(T* p, const T* grad, T* m, T* v, const i64* step, const double* hyper, i64 total) {  \
    adam_impl<T>(p, grad, m, v, step, hyper, total);                                                           \
}
MINIDAE_KERNELS(float)
MINIDAE_KERNELS(double)
}

// cuvae's conv-VAE CUDA kernels (float32): im2col and col2im for NHWC activations, the packing
// gather, and the pixel likelihoods with their gradients in one pass. The conv step
// (cuvae/backends/gpu_conv_step.py) uses these beside step.cu's (noise, data, bias + ReLU, ReLU
// mask + bias gradient, the latent, the loss sums, Adam).
//
// The same contract as the CPU kernels of cuvae/backends/cpu_conv.py: activations are NHWC rows,
// column matrices are (N*Ho*Wo, k*k*C) with columns (u, v, c), and col2im is a gather (one thread
// per output value, so no atomics and no zeroing).
// Every kernel has a NumPy twin of the same name and arguments in conv_twins.py (the
// specification); tests/test_conv_twins.py checks the twins against the CPU kernels, and
// tests/test_emulated_conv.py each kernel against its twin on the emulated device.
//
// 4-D arrays are passed with element strides (n, h, w, c), so an NCHW image (the first layer's
// input) or NCHW logits (the last layer's output) are read and written in place.

// Block size of the likelihood kernels (cuvae/backends/cuda_conv_ops.py reads this line): a power of two.
#define PIXEL_THREADS 128
#define HALF_BIN (0.5f / 255.0f)  // half a pixel level, as in cuvae/nn/conv_model.py

// cols[(n*Ho + i)*Wo + j, (u*k + v)*C + c] = x[n, i*s - p + u, j*s - p + v, c] (0 outside).
extern "C" __global__ void im2col_nhwc(const float* __restrict__ x, long long sN, long long sH, long long sW,
                                       long long sC, int N, int H, int W, int C, int k, int s, int p, int Ho,
                                       int Wo, float* __restrict__ cols) {
    long long total = (long long)N * Ho * Wo * k * k * C;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        long long t = e;
        int c = (int)(t % C); t /= C;  // consecutive threads: consecutive c, so reads of an NHWC x coalesce
        int v = (int)(t % k); t /= k;
        int u = (int)(t % k); t /= k;
        int j = (int)(t % Wo); t /= Wo;
        int i = (int)(t % Ho);
        int n = (int)(t / Ho);
        int h = i * s - p + u, w = j * s - p + v;
        cols[e] = (h >= 0 && h < H && w >= 0 && w < W) ? x[n * sN + h * sH + w * sW + c * sC] : 0.0f;
    }
}

// The adjoint of im2col_nhwc, as a gather: out[n, h, w, c] = sum of the cols entries whose window
// covers (h, w), then the epilogue: mode 0: the sum; 1: + bias[c]; 2: relu(sum + bias[c]);
// 3: sum where mask > 0, else 0 (mask has out's strides). Unused pointers may be null.
extern "C" __global__ void col2im_nhwc(const float* __restrict__ cols, int N, int H, int W, int C, int k, int s,
                                       int p, int Ho, int Wo, const float* __restrict__ bias, int mode,
                                       const float* __restrict__ mask, float* __restrict__ out, long long oN,
                                       long long oH, long long oW, long long oC) {
    long long total = (long long)N * H * W * C;
    long long width = (long long)k * k * C;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        long long t = e;
        int c = (int)(t % C); t /= C;
        int w = (int)(t % W); t /= W;
        int h = (int)(t % H);
        int n = (int)(t / H);
        float acc = (mode == 1 || mode == 2) ? bias[c] : 0.0f;
        for (int u = (h + p) % s; u < k; u += s) {
            int i = (h + p - u) / s;  // exact: h + p - u is a multiple of s
            if (i < 0 || i >= Ho) continue;
            for (int v = (w + p) % s; v < k; v += s) {
                int j = (w + p - v) / s;
                if (j < 0 || j >= Wo) continue;
                acc += cols[((long long)(n * Ho + i) * Wo + j) * width + (u * k + v) * C + c];
            }
        }
        long long o = n * oN + h * oH + w * oW + c * oC;
        if (mode == 2) acc = fmaxf(acc, 0.0f);
        if (mode == 3) acc = mask[o] > 0.0f ? acc : 0.0f;
        out[o] = acc;
    }
}

// dst[i] = src[idx[i]]: the step's one permutation, parameters into the packed layout (conv weights
// with (u, v, c) columns, head.W's rows and fc's columns in NHWC flatten order) and gradients back.
extern "C" __global__ void gather_index(const float* __restrict__ src, const long long* __restrict__ idx,
                                        float* __restrict__ dst, long long n) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i >= n) return;
    dst[i] = src[idx[i]];
}

__device__ __forceinline__ float sigmoidf_(float a) { return 0.5f * tanhf(0.5f * a) + 0.5f; }
__device__ __forceinline__ float softplusf_(float a) { return fmaxf(a, 0.0f) + log1pf(expf(-fabsf(a))); }

// The likelihood of the pixels of one (row, channel) and its gradient, one block of PIXEL_THREADS
// threads each (grid rows * C). logits, x, dlogits: (rows, C * D) NCHW. dlogits = scale * d/dl;
// part[(row * C + c) * 3 + q] = q 0: the nll summed over the D pixels, 1: scale * their d/dlogscale[c],
// 2: the sum of their dlogits (the last transposed convolution's bias gradient).
// likelihood 0 = Bernoulli, softplus(l) - x l; 1 = Gaussian (SSE), (sigmoid(l) - x)^2;
// 2 = discretised logistic, mu = sigmoid(l), scale exp(logscale[c]), bins of width 2 HALF_BIN
// (open end bins); logscale is read only then (may be NULL otherwise).
extern "C" __global__ void pixel_nll_grad(const float* __restrict__ logits, const float* __restrict__ x,
                                          const float* __restrict__ logscale, float* __restrict__ dlogits,
                                          float* __restrict__ part, int C, int D, int likelihood, float scale) {
    __shared__ float red[3][PIXEL_THREADS];
    int rc = blockIdx.x, c = rc % C;
    long long base = (long long)rc * D;
    float s_nll = 0.0f, s_ls = 0.0f, s_b = 0.0f;
    float inv_s = 0.0f, d = 0.0f, log_mass = 0.0f, inner = 0.0f;
    if (likelihood == 2) {
        inv_s = expf(-logscale[c]);
        d = (2.0f * HALF_BIN) * inv_s;
        log_mass = logf(-expm1f(-d));  // log(1 - e^-d): the inner bins' log(sigmoid(b) - sigmoid(a)) part
        inner = d / expm1f(d);
    }
    for (int q = threadIdx.x; q < D; q += PIXEL_THREADS) {
        float l = logits[base + q], xv = x[base + q], g;
        float y = sigmoidf_(l);
        if (likelihood == 0) {
            s_nll += softplusf_(l) - xv * l;
            g = scale * (y - xv);
        } else if (likelihood == 1) {
            float e = y - xv;
            s_nll += e * e;
            g = (2.0f * scale) * (e * (1.0f - y) * y);
        } else {
            float a = (xv - HALF_BIN - y) * inv_s, b = a + d;
            float lo = xv > HALF_BIN ? 1.0f : 0.0f, hi = xv < 1.0f - HALF_BIN ? 1.0f : 0.0f;
            s_nll += lo * softplusf_(a) + hi * softplusf_(-b) - (lo * hi) * log_mass;
            float sa = sigmoidf_(a) * lo, snb = sigmoidf_(-b) * hi;
            g = scale * ((snb - sa) * inv_s) * (y * (1.0f - y));
            s_ls += b * snb - a * sa + (lo * hi) * inner;
        }
        dlogits[base + q] = g;
        s_b += g;
    }
    red[0][threadIdx.x] = s_nll;
    red[1][threadIdx.x] = s_ls;
    red[2][threadIdx.x] = s_b;
    __syncthreads();
    for (int w = PIXEL_THREADS / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w)
            for (int q = 0; q < 3; ++q) red[q][threadIdx.x] += red[q][threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        part[rc * 3 + 0] = red[0][0];
        part[rc * 3 + 1] = scale * red[1][0];
        part[rc * 3 + 2] = red[2][0];
    }
}

// pixel_nll_grad's sums, one block of PIXEL_THREADS threads: rowloss[r] = sum_c part[r, c, 0];
// dlogscale[c] = sum_r part[r, c, 1] (when not NULL), db[c] = sum_r part[r, c, 2].
extern "C" __global__ void pixel_finish(const float* __restrict__ part, float* __restrict__ rowloss,
                                        float* __restrict__ dlogscale, float* __restrict__ db, int rows, int C) {
    __shared__ float red[PIXEL_THREADS];
    for (int r = threadIdx.x; r < rows; r += PIXEL_THREADS) {
        float t = 0.0f;
        for (int c = 0; c < C; ++c) t += part[(r * C + c) * 3];
        rowloss[r] = t;
    }
    for (int cq = 0; cq < 2 * C; ++cq) {
        int c = cq / 2, q = 1 + cq % 2;
        float s = 0.0f;
        for (int r = threadIdx.x; r < rows; r += PIXEL_THREADS) s += part[(r * C + c) * 3 + q];
        red[threadIdx.x] = s;
        __syncthreads();
        for (int w = PIXEL_THREADS / 2; w > 0; w >>= 1) {
            if (threadIdx.x < w) red[threadIdx.x] += red[threadIdx.x + w];
            __syncthreads();
        }
        if (threadIdx.x == 0) {
            if (q == 2) db[c] = red[0];
            else if (dlogscale != nullptr) dlogscale[c] = red[0];
        }
        __syncthreads();  // red is rewritten by the next (channel, sum)
    }
}

// cuvae's conv-layer CUDA kernels (float32): im2col and col2im for NHWC activations.
//
// The same contract as the CPU kernels of cuvae/backends/cpu_conv.py, which the GPU conv step is
// meant to share: activations are NHWC rows, column matrices are (N*Ho*Wo, k*k*C) with columns
// (u, v, c), and col2im is a gather (one thread per output value, so no atomics and no zeroing).
// Every kernel has a NumPy twin of the same name and arguments in conv_twins.py (the
// specification); tests/test_conv_twins.py checks the twins against the CPU kernels.
// NOT YET RUN ON A DEVICE: the emulated-GPU harness (tests/emulated_gpu/) is on another branch.
//
// 4-D arrays are passed with element strides (n, h, w, c), so an NCHW image (the first layer's
// input) or NCHW logits (the last layer's output) are read and written in place.

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

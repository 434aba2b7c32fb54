// cuvae's fused CUDA kernels for the MLP VAE training step (float32).
//
// Every kernel has a NumPy twin of the same name in cuvae/backends/kernels/twins.py: the twin is the
// specification, and tests/test_gpu.py (on a GPU) and tests/test_emulated_gpu.py (anywhere)
// compare the two. Kernels that train k models at once take `k` and per-model strides; a single
// model is k = 1.
//
// Per-step scalars live in device memory (`state`, int64) so that a captured CUDA graph can
// advance them: state[0] = step within the epoch, state[1] = batch offset into the permutation,
// state[2] = Adam's step count (before this step); state[3] is unused (zero). The `advance`
// kernel, the step's last, moves them on. The epoch's Philox key is in device memory too
// (`key`, two uint32), so one captured graph serves every epoch.

#define STEP_IN_EPOCH 0
#define BATCH_OFFSET 1
#define ADAM_STEP 2

// Block sizes the kernels below are written for; cuvae/backends/cuda_ops.py reads these lines
// (kernels.constants) and launches with them. RECON_THREADS and FINISH_THREADS: powers of two.
#define RECON_THREADS 256
#define BIAS_COLS 32
#define BIAS_ROWS 8
#define FINISH_THREADS 256

// ---------------------------------------------------------------------------------------------
// Philox4x32-10 (Salmon et al., 2011): counter-based, so noise is a pure function of
// (key, counter) and needs no state beyond a counter in device memory.
__device__ __forceinline__ uint4 philox4x32_10(uint4 c, uint2 k) {
    const unsigned int M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
    #pragma unroll
    for (int r = 0; r < 10; ++r) {
        unsigned int hi0 = __umulhi(M0, c.x), lo0 = M0 * c.x;
        unsigned int hi1 = __umulhi(M1, c.z), lo1 = M1 * c.z;
        c = make_uint4(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
        k.x += W0; k.y += W1;
    }
    return c;
}

// uint32 -> uniform in (0, 1]: (u + 1) * 2^-32, never 0 (log is safe)
__device__ __forceinline__ float u01(unsigned int u) { return ((float)u + 1.0f) * 2.3283064365386963e-10f; }

// Standard normals, n of them: element i uses counter (i / 4, stream, ctr_lo, ctr_hi) where
// ctr = *counter and key = (key[0], key[1]) (both device) and draws two Box-Muller pairs from one Philox block.
extern "C" __global__ void normal_philox(float* __restrict__ out, long long n, const long long* __restrict__ counter,
                                         const unsigned int* __restrict__ key, unsigned int stream) {
    long long block = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    long long i = block * 4;
    if (i >= n) return;
    unsigned long long ctr = (unsigned long long)(*counter);
    uint4 r = philox4x32_10(make_uint4((unsigned int)block, stream, (unsigned int)ctr, (unsigned int)(ctr >> 32)),
                            make_uint2(key[0], key[1]));
    float r0 = sqrtf(-2.0f * logf(u01(r.x))), r1 = sqrtf(-2.0f * logf(u01(r.z)));
    // angle 2 pi u through sincospif: no slow-path argument reduction, so no local memory
    float s0, c0, s1, c1;
    sincospif(2.0f * u01(r.y), &s0, &c0);
    sincospif(2.0f * u01(r.w), &s1, &c1);
    out[i] = r0 * c0;  // element by element: an indexed array would live in local memory
    if (i + 1 < n) out[i + 1] = r0 * s0;
    if (i + 2 < n) out[i + 2] = r1 * c1;
    if (i + 3 < n) out[i + 3] = r1 * s1;
}

// Random 32-bit sort keys for the epoch's shuffle: out[i] = Philox(i, stream, 0, 0; key).x
extern "C" __global__ void philox_keys(unsigned int* __restrict__ out, long long n, unsigned int key0,
                                       unsigned int key1, unsigned int stream) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i >= n) return;
    out[i] = philox4x32_10(make_uint4((unsigned int)i, stream, (unsigned int)(i >> 32), 0u), make_uint2(key0, key1)).x;
}

// ---------------------------------------------------------------------------------------------
// Batch gather (+ dynamic binarisation): x[r, :] = data[perm[offset + r], :] for r < rows,
// with offset = state[BATCH_OFFSET]. binarize: x = (u < p) with u uniform from Philox (key in device memory).
extern "C" __global__ void gather_rows(const float* __restrict__ data, const long long* __restrict__ perm,
                                       const long long* __restrict__ state, float* __restrict__ x,
                                       int rows, int dim, int binarize, const unsigned int* __restrict__ key) {
    long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (idx >= (long long)rows * dim) return;
    int r = (int)(idx / dim), c = (int)(idx % dim);
    long long src = perm[state[BATCH_OFFSET] + r];
    float p = data[src * dim + c];
    if (binarize) {
        unsigned long long s = (unsigned long long)state[STEP_IN_EPOCH];
        uint4 u = philox4x32_10(make_uint4((unsigned int)idx, 0xB1A5u, (unsigned int)s, (unsigned int)(s >> 32)),
                                make_uint2(key[0], key[1]));
        p = (u01(u.x) - 2.3283064365386963e-10f < p) ? 1.0f : 0.0f;  // u in [0, 1)
    }
    x[idx] = p;
}

// ---------------------------------------------------------------------------------------------
// Linear forward epilogue: y += b (per model), then ReLU when relu != 0.
// y is (k, rows, n) contiguous; b of model m is at b + m * b_stride.
extern "C" __global__ void bias_act(float* __restrict__ y, const float* __restrict__ b, long long b_stride,
                                    int k, int rows, int n, int relu) {
    long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    long long total = (long long)k * rows * n;
    if (idx >= total) return;
    int m = (int)(idx / ((long long)rows * n));
    float v = y[idx] + b[m * b_stride + idx % n];
    y[idx] = relu ? fmaxf(v, 0.0f) : v;
}

// Bias gradient, optionally fused with the ReLU backward of the same tensor:
// if h != NULL: dy *= (h > 0) (in place); then db[m, j] = sum_r dy[m, r, j].
// Grid (ceil(n / BIAS_COLS), k, S), block (BIAS_COLS, BIAS_ROWS): block z sums rows [z*chunk, (z+1)*chunk); with S == 1 it
// writes db, else partial[(m*S + z)*n + j] and col_reduce adds the S partials (fixed order: deterministic).
extern "C" __global__ void relu_back_bias_grad(float* __restrict__ dy, const float* __restrict__ h,
                                               float* __restrict__ db, long long db_stride, int rows, int n,
                                               float* __restrict__ partial, int chunk) {
    __shared__ float part[BIAS_ROWS][BIAS_COLS + 1];  // +1: no bank conflicts
    int j = blockIdx.x * BIAS_COLS + threadIdx.x, m = blockIdx.y, z = blockIdx.z, S = gridDim.z;
    int r0 = z * chunk, r1 = min(rows, r0 + chunk);
    float s = 0.0f;
    if (j < n) {
        long long base = (long long)m * rows * n;
        #pragma unroll 4
        for (int r = r0 + threadIdx.y; r < r1; r += BIAS_ROWS) {
            long long q = base + (long long)r * n + j;
            float g = dy[q];
            if (h != nullptr) {
                g = h[q] > 0.0f ? g : 0.0f;
                dy[q] = g;
            }
            s += g;
        }
    }
    part[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && j < n) {
        float t = 0.0f;
        for (int q = 0; q < BIAS_ROWS; ++q) t += part[q][threadIdx.x];
        if (S == 1) db[m * db_stride + j] = t;
        else partial[((long long)m * S + z) * n + j] = t;
    }
}

// db[m, j] = sum_z partial[m, z, j] (the second stage of relu_back_bias_grad when S > 1).
extern "C" __global__ void col_reduce(const float* __restrict__ partial, float* __restrict__ db, long long db_stride,
                                      int k, int S, int n) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= k * n) return;
    int m = idx / n, j = idx % n;
    float t = 0.0f;
    for (int z = 0; z < S; ++z) t += partial[((long long)m * S + z) * n + j];
    db[m * db_stride + j] = t;
}

// ---------------------------------------------------------------------------------------------
// Likelihood, one pass: per (model, row) the reconstruction sum, and the gradient w.r.t. logits.
// logits, dlogits: (k, rows, n); x: (rows, n), shared by the k models; rowloss: (k, rows).
// likelihood 0 = Bernoulli: softplus(l) - x l, grad scale (sigmoid(l) - x)
// likelihood 1 = Gaussian (SSE): (y - x)^2, grad 2 scale (y - x) y (1 - y), y = sigmoid(l).
// One block of RECON_THREADS threads per (model, row); scale = 1 / rows.
extern "C" __global__ void recon_fwd_grad(const float* __restrict__ logits, const float* __restrict__ x,
                                          float* __restrict__ dlogits, float* __restrict__ rowloss,
                                          int rows, int n, int likelihood) {
    __shared__ float part[RECON_THREADS];
    int row = blockIdx.x;  // over k * rows
    const float* l = logits + (long long)row * n;
    const float* xr = x + (long long)(row % rows) * n;
    float* d = dlogits + (long long)row * n;
    float scale = 1.0f / rows, s = 0.0f;
    for (int j = threadIdx.x; j < n; j += RECON_THREADS) {
        float lv = l[j], xv = xr[j];
        float y = 0.5f * tanhf(0.5f * lv) + 0.5f;
        if (likelihood == 0) {
            s += fmaxf(lv, 0.0f) + log1pf(expf(-fabsf(lv))) - xv * lv;
            d[j] = scale * (y - xv);
        } else {
            float e = y - xv;
            s += e * e;
            d[j] = (2.0f * scale) * (e * (1.0f - y) * y);
        }
    }
    part[threadIdx.x] = s;
    __syncthreads();
    for (int w = RECON_THREADS / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) rowloss[row] = part[0];
}

// ---------------------------------------------------------------------------------------------
// Reparameterisation: z = mean + exp(0.5 logvar) eps, head = [mean | logvar] (k*rows, 2L).
extern "C" __global__ void reparam(const float* __restrict__ head, const float* __restrict__ eps,
                                   float* __restrict__ z, int krows, int L) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= krows * L) return;
    int r = idx / L, c = idx % L;
    float mean = head[r * 2 * L + c], logvar = head[r * 2 * L + L + c];
    z[idx] = mean + expf(0.5f * logvar) * eps[idx];
}

// Latent backward, one thread per (model, row): the reparameterisation's gradient plus
// beta/rows times KL's, written into dhead = [dmean | dlogvar]; klrow = per-row KL.
// beta = betas[state[STEP_IN_EPOCH]] (the KL warm-up schedule lives on the device).
extern "C" __global__ void latent_backward(const float* __restrict__ head, const float* __restrict__ eps,
                                           const float* __restrict__ dz, float* __restrict__ dhead,
                                           float* __restrict__ klrow, const float* __restrict__ betas,
                                           const long long* __restrict__ state, int krows, int rows, int L) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= krows) return;
    float bs = betas[state[STEP_IN_EPOCH]] / rows, kl = 0.0f;
    for (int c = 0; c < L; ++c) {
        float mean = head[r * 2 * L + c], logvar = head[r * 2 * L + L + c];
        float g = dz[r * L + c], ev = expf(logvar);
        dhead[r * 2 * L + c] = g + bs * mean;
        dhead[r * 2 * L + L + c] = 0.5f * (g * eps[r * L + c] * expf(0.5f * logvar)) + (0.5f * bs) * (ev - 1.0f);
        kl += mean * mean + ev - 1.0f - logvar;
    }
    klrow[r] = 0.5f * kl;
}

// ---------------------------------------------------------------------------------------------
// End of step, one block of FINISH_THREADS threads per model: sums[m] += (recon + beta kl, recon, kl)
// summed over the batch (float64, fixed order), loss[m] = those batch means. klrow may be NULL
// (autoencoder). The counters are moved on later, by `advance`, after Adam has read them.
extern "C" __global__ void finish_step(const float* __restrict__ rowloss, const float* __restrict__ klrow,
                                       const float* __restrict__ betas, long long* __restrict__ state,
                                       double* __restrict__ sums, float* __restrict__ loss, int rows) {
    __shared__ double pr[FINISH_THREADS], pk[FINISH_THREADS];
    int m = blockIdx.x;
    double r = 0.0, kk = 0.0;
    for (int i = threadIdx.x; i < rows; i += FINISH_THREADS) {
        r += rowloss[m * rows + i];
        if (klrow != nullptr) kk += klrow[m * rows + i];
    }
    pr[threadIdx.x] = r; pk[threadIdx.x] = kk;
    __syncthreads();
    for (int w = FINISH_THREADS / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) { pr[threadIdx.x] += pr[threadIdx.x + w]; pk[threadIdx.x] += pk[threadIdx.x + w]; }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        double beta = betas[state[STEP_IN_EPOCH]];
        sums[3 * m + 0] += pr[0] + beta * pk[0];
        sums[3 * m + 1] += pr[0];
        sums[3 * m + 2] += pk[0];
        loss[3 * m + 0] = (float)((pr[0] + beta * pk[0]) / rows);
        loss[3 * m + 1] = (float)(pr[0] / rows);
        loss[3 * m + 2] = (float)(pk[0] / rows);
    }
}

// Advance the per-step counters: the last kernel of the step, after Adam (one thread).
extern "C" __global__ void advance(long long* __restrict__ state, long long* __restrict__ rng_counter, int rows) {
    if (threadIdx.x == 0 && blockIdx.x == 0) {
        state[STEP_IN_EPOCH] += 1;
        state[BATCH_OFFSET] += rows;
        state[ADAM_STEP] += 1;
        rng_counter[0] += 1;
    }
}

// ---------------------------------------------------------------------------------------------
// Adam over the flat buffer (all k models at once), PyTorch's formulation; the step count is
// read from the device (state[ADAM_STEP] + 1), bias corrections in double as the host does.
extern "C" __global__ void adam_flat(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
                                     float* __restrict__ v, long long n, const long long* __restrict__ state,
                                     float lr, double beta1, double beta2, float eps) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i >= n) return;
    double t = (double)(state[ADAM_STEP] + 1);
    float inv_sqrt_bc2 = (float)(1.0 / sqrt(1.0 - pow(beta2, t)));
    float step_size = (float)(lr / (1.0 - pow(beta1, t)));
    float b1 = (float)beta1, b2 = (float)beta2;
    float gi = g[i];
    float mi = b1 * m[i] + (1.0f - b1) * gi;
    float vi = b2 * v[i] + (1.0f - b2) * (gi * gi);
    m[i] = mi;
    v[i] = vi;
    p[i] -= step_size * (mi / (sqrtf(vi) * inv_sqrt_bc2 + eps));
}

/* A reference cuBLAS for the emulated device: the entry points cuvae's CublasGemm calls, column-major
 * as cuBLAS is, with cuBLAS's argument checks. Built as libcublas.so.12 in a temporary folder and loaded
 * before CublasGemm looks for a cuBLAS, so cuvae's own ctypes code runs unchanged against it.
 *
 * Streams: a GEMM issued while its handle's stream is being captured is handed to the emulator's
 * recorder (a Python callback) instead of running; the graph replays it through cuvae_emu_gemm_run. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { OK = 0, NOT_INITIALIZED = 1, INVALID_VALUE = 7 };

typedef struct { uint64_t stream; int math_mode; void* workspace; size_t workspace_size; int magic; } Handle;
#define MAGIC 0x5ca1ab1e

typedef struct {
    int ta, tb, m, n, k;
    float alpha, beta;
    const float *A, *B;
    float* C;
    int lda, ldb, ldc;
    long long sa, sb, sc;
    int batch;
} Gemm;

/* returns nonzero when the call was recorded (stream under capture) and must not run now */
typedef int (*recorder_t)(uint64_t stream, const Gemm* call);
static recorder_t recorder = 0;
void cuvae_emu_set_recorder(recorder_t r) { recorder = r; }
static int calls = 0;
int cuvae_emu_gemm_calls(void) { return calls; }

int cublasCreate_v2(Handle** h) {
    if (!h) return INVALID_VALUE;
    *h = calloc(1, sizeof(Handle));
    (*h)->magic = MAGIC;
    return OK;
}
int cublasDestroy_v2(Handle* h) {
    if (!h || h->magic != MAGIC) return NOT_INITIALIZED;
    h->magic = 0;
    free(h);
    return OK;
}
int cublasSetStream_v2(Handle* h, uint64_t stream) {
    if (!h || h->magic != MAGIC) return NOT_INITIALIZED;
    h->stream = stream;
    return OK;
}
int cublasSetMathMode(Handle* h, int mode) {
    if (!h || h->magic != MAGIC) return NOT_INITIALIZED;
    if (mode != 0 && mode != 1 && mode != 2 && mode != 3) return INVALID_VALUE;
    h->math_mode = mode;
    return OK;
}
int cublasSetWorkspace_v2(Handle* h, void* ws, size_t size) {
    if (!h || h->magic != MAGIC) return NOT_INITIALIZED;
    if (size && !ws) return INVALID_VALUE;
    h->workspace = ws;
    h->workspace_size = size;
    return OK;
}

void cuvae_emu_gemm_run(const Gemm* g) {
    for (int b = 0; b < g->batch; ++b) {
        const float* A = g->A + b * g->sa;
        const float* B = g->B + b * g->sb;
        float* C = g->C + b * g->sc;
        for (int j = 0; j < g->n; ++j)
            for (int i = 0; i < g->m; ++i) {
                double s = 0.0;  /* op(A)[i, p] * op(B)[p, j], column-major */
                for (int p = 0; p < g->k; ++p) {
                    float a = g->ta ? A[p + (long long)i * g->lda] : A[i + (long long)p * g->lda];
                    float bb = g->tb ? B[j + (long long)p * g->ldb] : B[p + (long long)j * g->ldb];
                    s += (double)a * bb;
                }
                float* c = C + i + (long long)j * g->ldc;
                *c = (float)(g->alpha * s + (g->beta == 0.0f ? 0.0 : (double)g->beta * *c));  /* beta 0: C not read */
            }
    }
}

static int submit(Handle* h, Gemm* g) {
    if (!h || h->magic != MAGIC) return NOT_INITIALIZED;
    if ((g->ta != 0 && g->ta != 1) || (g->tb != 0 && g->tb != 1)) return INVALID_VALUE;  /* N or T only here */
    if (g->m < 0 || g->n < 0 || g->k < 0 || g->batch < 0) return INVALID_VALUE;
    int rows_a = g->ta ? g->k : g->m, rows_b = g->tb ? g->n : g->k;
    if (g->lda < (rows_a > 1 ? rows_a : 1) || g->ldb < (rows_b > 1 ? rows_b : 1) || g->ldc < (g->m > 1 ? g->m : 1))
        return INVALID_VALUE;
    ++calls;
    if (recorder && recorder(h->stream, g)) return OK;
    cuvae_emu_gemm_run(g);
    return OK;
}

int cublasSgemm_v2(Handle* h, int ta, int tb, int m, int n, int k, const float* alpha, const float* A, int lda,
                   const float* B, int ldb, const float* beta, float* C, int ldc) {
    if (!alpha || !beta) return INVALID_VALUE;
    Gemm g = {ta, tb, m, n, k, *alpha, *beta, A, B, C, lda, ldb, ldc, 0, 0, 0, 1};
    return submit(h, &g);
}

int cublasSgemmStridedBatched(Handle* h, int ta, int tb, int m, int n, int k, const float* alpha, const float* A,
                              int lda, long long sa, const float* B, int ldb, long long sb, const float* beta, float* C,
                              int ldc, long long sc, int batch) {
    if (!alpha || !beta) return INVALID_VALUE;
    Gemm g = {ta, tb, m, n, k, *alpha, *beta, A, B, C, lda, ldb, ldc, sa, sb, sc, batch};
    return submit(h, &g);
}

// A CPU emulation of the CUDA C subset used by cuvae/backends/kernels/step.cu, so the kernels can be
// compiled unchanged by g++ and run under tests (see tests/emulated_gpu/cupy_shim.py).
//
// Model: a launch runs its blocks one after another. In a kernel that calls __syncthreads every
// CUDA thread of a block has its own stack and a barrier completes only when every thread of the
// block has reached the same __syncthreads; threads that reach different barriers, or that exit
// while others wait, are reported as an error. Two schedulers (cuvae_emu_set_mode):
//  - FIBERS (default): the threads are ucontext fibers taking turns in threadIdx order (or the
//    reverse, cuvae_emu_set_reverse) between barriers. Deterministic, so a missing barrier reads
//    stale or poisoned shared memory every time, not once in a while; and fast (a switch is ~0.3 us,
//    an OS thread's ~10 us on a busy machine).
//  - THREADS: each CUDA thread is a std::thread, all running at once; __syncthreads is a
//    std::barrier whose completion step checks that every thread arrived at the same line.
// Kernels without a barrier run their threads in order on the caller's thread.
// __shared__ arrays are statics in one section, filled with NaN bytes before each block.
// This header is what a kernel's translation unit sees; the schedulers live in emu_runtime.cpp
// (built once, shared by every build of the kernels).
#pragma once
#include <math.h>
#include <stdint.h>

struct uint3 { unsigned int x, y, z; };
struct dim3 { unsigned int x = 1, y = 1, z = 1; };
struct uint2 { unsigned int x, y; };
struct uint4 { unsigned int x, y, z, w; };
inline uint2 make_uint2(unsigned int x, unsigned int y) { return {x, y}; }
inline uint4 make_uint4(unsigned int x, unsigned int y, unsigned int z, unsigned int w) { return {x, y, z, w}; }
inline unsigned int __umulhi(unsigned int a, unsigned int b) {
    return (unsigned int)(((unsigned long long)a * b) >> 32);
}
inline void sincospif(float x, float* s, float* c) {  // CUDA's is within 1 ulp; this rounds the double result
    *s = (float)sin(M_PI * (double)x);
    *c = (float)cos(M_PI * (double)x);
}
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }

extern thread_local uint3 threadIdx;  // defined in emu_runtime.cpp
extern uint3 blockIdx;                // blocks run one at a time: one value for all their threads
extern dim3 blockDim, gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline

// Every __shared__ array is a static in one ELF section, poisoned (NaN bytes) before each block.
#define __shared__ static __attribute__((section("cuvae_shared")))
extern "C" char __start_cuvae_shared[] __attribute__((weak));
extern "C" char __stop_cuvae_shared[] __attribute__((weak));

extern "C" void cuvae_emu_syncthreads(int line);
extern "C" int cuvae_emu_launch(const unsigned* grid, const unsigned* block, int threaded, void (*body)(void**),
                                void** args, char* shared_begin, char* shared_end);
#define __syncthreads() cuvae_emu_syncthreads(__LINE__)

// The emulated device's schedulers (see cuda_emu.h for the model). Built once per test session as a
// shared library; every build of the kernels links against it.
#include <string.h>
#include <ucontext.h>
#include <xmmintrin.h>

#include <barrier>
#include <latch>
#include <memory>
#include <mutex>
#include <semaphore>
#include <string>
#include <thread>
#include <vector>

struct uint3 { unsigned int x, y, z; };
struct dim3 { unsigned int x = 1, y = 1, z = 1; };
thread_local uint3 threadIdx;
uint3 blockIdx;
dim3 blockDim, gridDim;

namespace cuvae_emu {

struct Abort {};  // unwinds a thread's kernel body when its block failed

enum { EXITED = -1 };
enum Mode { FIBERS = 0, THREADS = 1 };
inline int mode = FIBERS;
inline bool ftz = false;
inline bool reverse = false;  // FIBERS: turns in descending threadIdx order (a missing barrier shows either way)

inline std::string& last_error() { static std::string s; return s; }
inline thread_local int my_tid = -1;  // -1: not one of a block's threads (the direct, barrier-free mode)

inline void set_fp_mode() {
    if (ftz) _mm_setcsr(_mm_getcsr() | 0x8040);  // flush-to-zero and denormals-are-zero, as --ftz=true on a GPU
}

inline std::string thread_name(int t) {
    unsigned bx = blockDim.x, by = blockDim.y;
    return "(" + std::to_string(t % bx) + "," + std::to_string((t / bx) % by) + "," + std::to_string(t / (bx * by)) + ")";
}
inline void set_thread_idx(int t) {
    unsigned bx = blockDim.x, by = blockDim.y;
    threadIdx = {t % bx, (t / bx) % by, t / (bx * by)};
}

// After every thread of the block reached a barrier or exited: "" if that is legal, else the error.
inline std::string check_tags(const std::vector<int>& tag, int T) {
    for (int i = 1; i < T; ++i) {
        if (tag[i] != tag[0]) {
            auto what = [](int t) { return t == EXITED ? std::string("has exited") : "waits at the __syncthreads on line " + std::to_string(t); };
            return "divergent barrier in block (" + std::to_string(blockIdx.x) + "," + std::to_string(blockIdx.y) + "," +
                   std::to_string(blockIdx.z) + "): thread " + thread_name(0) + " " + what(tag[0]) + " but thread " +
                   thread_name(i) + " " + what(tag[i]);
        }
    }
    return "";
}

struct Block {
    int T = 0;
    std::vector<int> tag;  // the line of the barrier each thread waits at, or EXITED
    void (*body)(void**) = nullptr;
    void** args = nullptr;
    std::string error;
    bool abort = false;
    // FIBERS: one ucontext per thread, resumed in threadIdx order until each reaches a barrier or exits
    std::vector<ucontext_t> ctx;
    std::vector<std::unique_ptr<char[]>> stacks;
    ucontext_t scheduler;
    // THREADS: one std::thread per CUDA thread (kept for later launches), a std::barrier per block
    struct Check { void operator()() noexcept; };
    std::unique_ptr<std::barrier<Check>> bar;
    std::unique_ptr<std::latch> finished;
    std::vector<std::unique_ptr<std::binary_semaphore>> go;
    int workers = 0;
};

inline Block& block() { static Block* b = new Block; return *b; }  // never destroyed: workers outlive main

inline void Block::Check::operator()() noexcept {
    Block& b = block();
    std::string e = check_tags(b.tag, b.T);
    if (!e.empty()) { b.error = e; b.abort = true; }
}

constexpr size_t STACK = 256 << 10;

inline void fiber_entry() {
    Block& b = block();
    int t = my_tid;
    b.body(b.args);
    b.tag[t] = EXITED;
    // returning resumes uc_link: the scheduler
}

inline void worker(int t) {
    Block& b = block();
    for (;;) {
        b.go[t]->acquire();
        my_tid = t;
        set_fp_mode();
        set_thread_idx(t);
        try {
            b.body(b.args);
            b.tag[t] = EXITED;
            b.bar->arrive_and_drop();
        } catch (Abort&) {
        }
        b.finished->count_down();
    }
}

inline void syncthreads(int line) {
    Block& b = block();
    int t = my_tid;
    if (t < 0) {
        b.error = "__syncthreads in a kernel the emulator ran without threads (line " + std::to_string(line) + ")";
        throw Abort{};
    }
    b.tag[t] = line;
    if (mode == FIBERS) {
        swapcontext(&b.ctx[t], &b.scheduler);  // the scheduler resumes us when every thread got here
    } else {
        b.bar->arrive_and_wait();
        if (b.abort) throw Abort{};
    }
}

inline int run_block_fibers(Block& b) {
    int T = b.T;
    if ((int)b.ctx.size() < T) { b.ctx.resize(T); }
    while ((int)b.stacks.size() < T) b.stacks.emplace_back(new char[STACK]);
    for (int t = 0; t < T; ++t) {
        b.tag[t] = EXITED;
        getcontext(&b.ctx[t]);
        b.ctx[t].uc_stack.ss_sp = b.stacks[t].get();
        b.ctx[t].uc_stack.ss_size = STACK;
        b.ctx[t].uc_link = &b.scheduler;
        makecontext(&b.ctx[t], fiber_entry, 0);
    }
    for (;;) {
        for (int i = 0; i < T; ++i) {
            int t = reverse ? T - 1 - i : i;
            my_tid = t;
            set_thread_idx(t);
            swapcontext(&b.scheduler, &b.ctx[t]);
        }
        my_tid = -1;
        std::string e = check_tags(b.tag, T);
        if (!e.empty()) { b.error = e; return -1; }  // the waiting fibers are abandoned (re-made next block)
        if (b.tag[0] == EXITED) return 0;
    }
}

inline int run_block_threads(Block& b) {
    int T = b.T;
    while (b.workers < T) {
        b.go.push_back(std::make_unique<std::binary_semaphore>(0));
        std::thread(worker, b.workers++).detach();
    }
    b.abort = false;
    b.bar = std::make_unique<std::barrier<Block::Check>>(T, Block::Check{});
    b.finished = std::make_unique<std::latch>(T);
    for (int t = 0; t < T; ++t) b.tag[t] = EXITED;
    for (int t = 0; t < T; ++t) b.go[t]->release();
    b.finished->wait();
    return b.abort ? -1 : 0;
}

inline std::mutex& launch_lock() { static std::mutex* m = new std::mutex; return *m; }

// Run body once per thread of every block; returns 0 or -1 (message in last_error()).
inline int launch(const unsigned* grid, const unsigned* blk, bool threaded, void (*body)(void**), void** args,
                  char* shared_begin, char* shared_end) {
    std::lock_guard<std::mutex> lock(launch_lock());
    gridDim = {grid[0], grid[1], grid[2]};
    blockDim = {blk[0], blk[1], blk[2]};
    int T = (int)(blk[0] * blk[1] * blk[2]);
    Block& b = block();
    last_error().clear();
    if ((int)b.tag.size() < T) b.tag.resize(T, EXITED);
    b.T = T;
    b.body = body;
    b.args = args;
    unsigned int saved_csr = _mm_getcsr();
    set_fp_mode();
    int rc = 0;
    for (unsigned z = 0; z < grid[2] && rc == 0; ++z)
        for (unsigned y = 0; y < grid[1] && rc == 0; ++y)
            for (unsigned x = 0; x < grid[0] && rc == 0; ++x) {
                blockIdx = {x, y, z};
                if (shared_begin) memset(shared_begin, 0xFF, shared_end - shared_begin);  // NaN: unwritten shared memory shows
                b.error.clear();
                if (threaded) {
                    rc = mode == FIBERS ? run_block_fibers(b) : run_block_threads(b);
                } else {
                    my_tid = -1;
                    try {
                        for (int t = 0; t < T; ++t) {
                            set_thread_idx(t);
                            body(args);
                        }
                    } catch (Abort&) {
                        rc = -1;
                    }
                }
                if (rc) last_error() = b.error;
            }
    _mm_setcsr(saved_csr);
    return rc;
}

}  // namespace cuvae_emu

extern "C" {
const char* cuvae_emu_last_error() { return ::cuvae_emu::last_error().c_str(); }
void cuvae_emu_set_mode(int m) { ::cuvae_emu::mode = m; }
void cuvae_emu_set_ftz(int on) { ::cuvae_emu::ftz = on != 0; }
void cuvae_emu_set_reverse(int on) { ::cuvae_emu::reverse = on != 0; }
void cuvae_emu_syncthreads(int line) { ::cuvae_emu::syncthreads(line); }
int cuvae_emu_launch(const unsigned* grid, const unsigned* block, int threaded, void (*body)(void**), void** args,
                     char* shared_begin, char* shared_end) {
    return ::cuvae_emu::launch(grid, block, threaded != 0, body, args, shared_begin, shared_end);
}
}

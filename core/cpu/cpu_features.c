/* core/cpu/cpu_features.c - CPUID feature detection and the instruction-set
 * levels (am_cpu_isa) that kernel dispatch follows.
 *
 * An instruction set is usable only if the CPU has it (CPUID) AND the OS saves
 * its register state on context switches (XCR0 via XGETBV): a hypervisor can
 * expose AVX-512 in CPUID while leaving the ZMM state disabled. AMX tile data
 * additionally needs a per-process permission from Linux (arch_prctl
 * ARCH_REQ_XCOMP_PERM), without which the first tile instruction faults.
 */
#include "core/cpu_backend.h"

#include "core/error.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#define AM_ARCH_REQ_XCOMP_PERM 0x1023 /* asm/prctl.h */
#define AM_XFEATURE_XTILEDATA  18

/* XCR0 state components. */
#define AM_XCR0_SSE       (1u << 1)
#define AM_XCR0_AVX       (1u << 2)
#define AM_XCR0_OPMASK    (1u << 5)
#define AM_XCR0_ZMM_HI256 (1u << 6)
#define AM_XCR0_HI16_ZMM  (1u << 7)
#define AM_XCR0_TILECFG   (1u << 17)
#define AM_XCR0_TILEDATA  (1u << 18)

static uint64_t xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ __volatile__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static void detect(am_cpu_features *f) {
    unsigned a, b, c, d;
    memset(f, 0, sizeof *f);
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    int fma = (c >> 12) & 1, f16c = (c >> 29) & 1;
    if (!osxsave || !avx) return; /* no XGETBV, or no AVX: only the generic path */
    uint64_t xcr0 = xgetbv0();
    int os_avx = (xcr0 & (AM_XCR0_SSE | AM_XCR0_AVX)) == (AM_XCR0_SSE | AM_XCR0_AVX);
    uint64_t zmm = AM_XCR0_OPMASK | AM_XCR0_ZMM_HI256 | AM_XCR0_HI16_ZMM;
    int os_avx512 = os_avx && (xcr0 & zmm) == zmm;
    if (!os_avx) return;
    f->fma = fma;
    f->f16c = f16c;

    unsigned max_leaf = __get_cpuid_max(0, NULL);
    if (max_leaf < 7) return;
    __cpuid_count(7, 0, a, b, c, d);
    f->avx2 = (b >> 5) & 1;
    if (os_avx512) {
        f->avx512f = (b >> 16) & 1;
        f->avx512bw = (b >> 30) & 1;
        f->avx512vl = (b >> 31) & 1;
        f->avx512vnni = (c >> 11) & 1;
        f->avx512fp16 = (d >> 23) & 1;
        unsigned a1, b1, c1, d1;
        __cpuid_count(7, 1, a1, b1, c1, d1);
        f->avx512bf16 = (a1 >> 5) & 1;
        (void)b1, (void)c1, (void)d1;
    }
    int amx_tile = (d >> 24) & 1, amx_bf16 = (d >> 22) & 1, amx_int8 = (d >> 25) & 1;
    uint64_t tiles = AM_XCR0_TILECFG | AM_XCR0_TILEDATA;
    if (amx_tile && (xcr0 & tiles) == tiles) {
#if defined(__linux__) && defined(SYS_arch_prctl)
        /* Linux keeps the 8 KiB tile state off until a process asks for it. */
        if (syscall(SYS_arch_prctl, AM_ARCH_REQ_XCOMP_PERM, AM_XFEATURE_XTILEDATA) == 0) {
            f->amx_tile = 1;
            f->amx_bf16 = amx_bf16;
            f->amx_int8 = amx_int8;
        }
#else
        (void)amx_bf16, (void)amx_int8;
#endif
    }
}
#else
static void detect(am_cpu_features *f) { memset(f, 0, sizeof *f); }
#endif

static am_cpu_features g_features;
static pthread_once_t g_features_once = PTHREAD_ONCE_INIT;

static void detect_once(void) { detect(&g_features); }

const am_cpu_features *am_cpu_get_features(void) {
    pthread_once(&g_features_once, detect_once);
    return &g_features;
}

/* ---- instruction-set levels ---- */

static const char *const g_isa_names[AM_CPU_ISA_COUNT] = {"generic", "avx2", "avx512", "amx"};

const char *am_cpu_isa_name(am_cpu_isa level) {
    return (unsigned)level < AM_CPU_ISA_COUNT ? g_isa_names[level] : "?";
}

static int isa_supported(am_cpu_isa level, const am_cpu_features *f) {
    switch (level) {
    case AM_CPU_ISA_GENERIC: return 1;
    case AM_CPU_ISA_AVX2: return f->avx2 && f->fma && f->f16c;
    case AM_CPU_ISA_AVX512:
        return isa_supported(AM_CPU_ISA_AVX2, f) && f->avx512f && f->avx512bw && f->avx512vl;
    case AM_CPU_ISA_AMX: return isa_supported(AM_CPU_ISA_AVX512, f) && f->amx_tile && f->amx_bf16;
    default: return 0;
    }
}

am_cpu_isa am_cpu_isa_best(void) {
    const am_cpu_features *f = am_cpu_get_features();
    am_cpu_isa best = AM_CPU_ISA_GENERIC;
    while (best + 1 < AM_CPU_ISA_COUNT && isa_supported(best + 1, f))
        best++;
    return best;
}

int am_cpu_isa_parse(const char *name, am_cpu_isa *out) {
    for (int i = 0; name && i < AM_CPU_ISA_COUNT; i++)
        if (strcasecmp(name, g_isa_names[i]) == 0) {
            *out = (am_cpu_isa)i;
            return 0;
        }
    return AM_EINVAL;
}

int am_cpu_isa_active(am_cpu_isa *out) {
    *out = am_cpu_isa_best();
    const char *cap = getenv("AM_CPU_ISA");
    if (!cap || !cap[0] || strcasecmp(cap, "auto") == 0) return 0;
    am_cpu_isa level;
    if (am_cpu_isa_parse(cap, &level) != 0)
        return am_err_set(AM_EINVAL, "AM_CPU_ISA='%s': expected generic, avx2, avx512, amx or auto",
                          cap);
    if (level < *out) *out = level;
    return 0;
}

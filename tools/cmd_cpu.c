/* tools/cmd_cpu.c - `anymal cpu`: what this CPU offers the CPU backend.
 *
 *   anymal cpu               the model name, the features the kernels dispatch
 *                            on, the instruction-set levels and the one in force
 *   anymal cpu --levels      the supported levels, one per line, lowest first
 *   anymal cpu --has LEVEL   exit 0 if the CPU supports LEVEL, 1 if not
 *
 * The test command runs the decoder, scheduler and TP tests once per level
 * `--levels` prints (AM_CPU_ISA caps the level, core/cpu_backend.h).
 */
#include "tools/cli.h"

#include "core/cpu_backend.h"

#include <stdio.h>
#include <string.h>

/* The "model name" line of /proc/cpuinfo, or "unknown". */
static void cpu_model(char *out, size_t cap) {
    snprintf(out, cap, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0) continue;
        const char *v = strchr(line, ':');
        if (v) {
            v += 1 + (v[1] == ' ');
            snprintf(out, cap, "%.*s", (int)strcspn(v, "\n"), v);
        }
        break;
    }
    fclose(f);
}

static void usage(FILE *f) {
    fprintf(f, "usage: anymal cpu [--levels | --has generic|avx2|avx512|amx]\n"
               "Prints the CPU's model, the features the CPU backend dispatches on and its\n"
               "instruction-set levels (AM_CPU_ISA=LEVEL caps the level in force).\n");
}

int am_cmd_cpu(int argc, char **argv) {
    am_cli c;
    am_cli_init(&c, "cpu", argc, argv);
    int levels_only = 0;
    const char *has = NULL, *opt;
    while ((opt = am_cli_next(&c))) {
        if (!strcmp(opt, "--help") || !strcmp(opt, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(opt, "--levels")) {
            levels_only = 1;
        } else if (!strcmp(opt, "--has")) {
            if (!(has = am_cli_value(&c))) return AM_EXIT_USAGE;
        } else {
            return am_cli_fail(&c, "unknown option '%s' (see --help)", opt);
        }
    }
    const am_cpu_isa best = am_cpu_isa_best();
    if (has) {
        am_cpu_isa level;
        if (am_cpu_isa_parse(has, &level) != 0)
            return am_cli_fail(&c, "--has: '%s' is not a level (generic, avx2, avx512, amx)", has);
        return level <= best ? 0 : 1;
    }
    if (levels_only) {
        for (int l = 0; l <= (int)best; l++)
            printf("%s\n", am_cpu_isa_name((am_cpu_isa)l));
        return 0;
    }
    am_cpu_isa active;
    int rc = am_cpu_isa_active(&active);
    if (rc != 0) return am_cli_error("cpu", rc);
    char model[256];
    cpu_model(model, sizeof model);
    const am_cpu_features *f = am_cpu_get_features();
    printf("cpu: %s\n", model);
    printf("features: avx2=%d fma=%d f16c=%d avx512f=%d avx512bw=%d avx512vl=%d avx512vnni=%d "
           "avx512bf16=%d avx512fp16=%d amx_tile=%d amx_bf16=%d amx_int8=%d\n",
           f->avx2, f->fma, f->f16c, f->avx512f, f->avx512bw, f->avx512vl, f->avx512vnni,
           f->avx512bf16, f->avx512fp16, f->amx_tile, f->amx_bf16, f->amx_int8);
    printf("levels:");
    for (int l = 0; l <= (int)best; l++)
        printf(" %s", am_cpu_isa_name((am_cpu_isa)l));
    printf("\nin force: %s\n", am_cpu_isa_name(active));
    return 0;
}

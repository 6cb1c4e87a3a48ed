/* tools/cmd_generate.c - `anymal generate`: one prompt through the decoder.
 *
 * In process by default (--tp 1); --tp P hands the same options to P
 * `anymal-shard` ranks under mpirun (tools/tp_launch.h), whose leader prints
 * the same output.
 */
#include "core/alloc.h"
#include "core/backend_open.h"
#include "core/error.h"
#include "llm_shards/generate.h"
#include "llm_shards/model_files.h"
#include "llm_shards/tp.h"
#include "tools/cli.h"
#include "tools/cli_compute.h"
#include "tools/gen_cli.h"
#include "tools/tp_launch.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* The single-process engine reports memory in the shard groups' format (rank 0 of 1). */
static void mem_report(const am_llama_model *m, const char *label) {
    am_proc_mem mem;
    if (am_proc_mem_read(&mem)) return;
    fprintf(stderr,
            "anymal shard-mem %s rank=0/1 vm_rss=%lld vm_hwm=%lld rss_anon=%lld rss_file=%lld "
            "weight_bytes=%zu "
            "slices_bytes=0\n",
            label, (long long)mem.vm_rss, (long long)mem.vm_hwm, (long long)mem.rss_anon,
            (long long)mem.rss_file, am_llama_weight_bytes(m));
}

int am_cmd_generate(int argc, char **argv) {
    am_gen_cli o;
    int rc = am_gen_cli_parse(&o, "generate", 0, argc, argv);
    if (rc) return rc < 0 ? 0 : rc;
    if (o.tp > 1) {
        char **args = am_calloc((size_t)argc, sizeof *args);
        if (!args) return am_cli_error("generate", AM_ENOMEM);
        int n = am_tp_strip_args(argc, argv, args);
        int status = am_tp_launch("generate", o.tp, o.n_threads, args, n);
        am_free(args);
        return status;
    }
    int n_threads = o.n_threads ? o.n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    am_cli_process_setup(n_threads);
    am_model_files mf = {0};
    am_backend *be = NULL;
    am_llama_ctx *ctx = NULL;
    int32_t *ids = NULL;
    int64_t n_ids = 0;
    am_gen_result res = {0};
    FILE *dump = NULL;
    int status = 1;
    /* Token ids printed as ids need no tokenizer; everything else does. */
    int need_tok = o.prompt || !o.print_ids || o.gp.n_stop;
    if ((rc = am_model_files_open(&mf, o.model_path, o.tok_path, need_tok))) goto fail;
    if (o.mem_report) mem_report(mf.model, "load");
    const am_llama_config *cfg = &mf.model->cfg;
    if ((status = am_gen_cli_prompt(&o, "generate", mf.tok, cfg->vocab_size, cfg->max_seq_len, &ids,
                                    &n_ids)))
        goto out;
    status = 1;
    if (am_gen_cli_dump_open(&o, "generate", &dump)) goto out;
    if ((rc = am_backend_open(o.device, n_threads, &be))) goto fail;
    int32_t n_ctx = (int32_t)n_ids + o.gp.max_tokens;
    if ((rc = am_llama_ctx_new(mf.model, be, n_ctx, n_ids < 512 ? (int32_t)n_ids : 512, &ctx)))
        goto fail;
    if (o.idle_ms) am_gen_cli_sleep_ms(o.idle_ms);
    if ((rc = am_generate(ctx, mf.tok, ids, n_ids, &o.gp, am_gen_cli_print_text, &o, &res)))
        goto fail;
    am_gen_cli_report(&o, "generate", &res);
    if (o.mem_report) mem_report(mf.model, "end");
    status = 0;
    goto out;
fail:
    status = am_cli_error("generate", rc);
out:
    if (dump && fclose(dump) != 0 && status == 0)
        status = am_cli_error("generate",
                              am_err_set(AM_EIO, "--dump-logits %s: write failed", o.dump_logits));
    am_gen_result_fini(&res);
    am_free(ids);
    am_llama_ctx_destroy(&ctx);
    am_backend_destroy(&be);
    am_model_files_close(&mf);
    return status;
}

# The decoder: golden comparisons against HF transformers and llama2.c, formats, dtypes, errors.
am_add_test(NAME test_llama SOURCES test_llama.c LABELS golden unit LIBS am_mkmodel TIMEOUT 600)
am_add_test(NAME test_sampler SOURCES test_sampler.c LABELS unit LIBS am_mkmodel)
# Continuous batching (llm_shards/sched.h, kv_blocks.h): mixed workloads vs each request
# alone, chunked prefill, preemption with a tiny cache, a 2-rank thread group.
am_add_test(NAME test_sched SOURCES test_sched.c LABELS unit LIBS am_mkmodel Threads::Threads TIMEOUT 300)
# The decoder and the scheduler at every instruction-set level the CPU has.
am_add_isa_variants(test_llama COMMAND $<TARGET_FILE:test_llama> LABELS golden unit TIMEOUT 600)
# test_sched@generic is the slowest test in the sanitizer build (~150 s at ctest -j2 on
# 2 cores: scalar kernels under ASan): 600 s leaves a slower CI machine room.
am_add_isa_variants(test_sched COMMAND $<TARGET_FILE:test_sched> LABELS unit TIMEOUT 600)

# The decoder: golden comparisons against HF transformers and llama2.c, formats, dtypes, errors.
am_add_test(NAME test_llama SOURCES test_llama.c LABELS golden unit LIBS am_llm TIMEOUT 600)
am_add_test(NAME test_sampler SOURCES test_sampler.c LABELS unit LIBS am_llm)

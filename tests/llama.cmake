# The decoder: golden comparisons against HF transformers and llama2.c, formats, dtypes, errors.
am_add_test(NAME test_llama SOURCES test_llama.c LABELS golden unit LIBS am_llm TIMEOUT 600)

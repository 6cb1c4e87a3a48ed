# Tokenizer (llm_shards/tokenizer.h): golden checks against python sentencepiece
# fixtures (tests/golden/tokenizer/) and LLaMA-2's tokenizer files in ../shared.
am_add_test(NAME test_tokenizer SOURCES test_tokenizer.c LABELS unit golden LIBS am_mkmodel)

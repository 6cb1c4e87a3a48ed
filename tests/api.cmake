# The OpenAI request/response library (api/openai.h): no socket, every refusal named.
# Links the tokenizer too, to check the chat template against am_chat_encode.
am_add_test(NAME test_api SOURCES test_api.c LABELS unit LIBS am_api am_mkmodel TIMEOUT 60)

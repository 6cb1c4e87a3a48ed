# Vision encoders (encoders/): golden comparisons against HF transformers (CLIPVisionModel,
# LLaVA, CLIPImageProcessorPil), Pillow and a PyTorch Perceiver Resampler (fixtures made by
# tests/golden/vision/gen_vision_golden.py); hostile images and videos.
am_add_test(NAME test_vision SOURCES test_vision.c LABELS unit golden LIBS am_encoders TIMEOUT 300)
# `anymal mkmodel --with-encoders` and `anymal encode` end to end.
add_test(NAME test_encode_cli COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_encode_cli.sh)
set_tests_properties(test_encode_cli PROPERTIES LABELS "integration" TIMEOUT 300
  ENVIRONMENT "AM_BIN_DIR=${CMAKE_BINARY_DIR}/bin;AM_SOURCE_DIR=${CMAKE_SOURCE_DIR}")

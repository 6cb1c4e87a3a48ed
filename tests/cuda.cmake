# CUDA backend (core/cuda/) against the reference ops, the CPU backend and the
# host sampler (llm_shards/sampler.c, compiled in: the test needs nothing else of
# am_llm). Label gpu. Registered in every build: without CUDA or without a
# device it prints "SKIP test_cuda_backend: <reason>" and exits 77, which ctest
# reports as skipped (SKIP_RETURN_CODE).
am_add_test(NAME test_cuda_backend SOURCES test_cuda_backend.c ${CMAKE_SOURCE_DIR}/llm_shards/sampler.c
            LABELS gpu LIBS am_backends TIMEOUT 300)
set_tests_properties(test_cuda_backend PROPERTIES SKIP_RETURN_CODE 77)
if(AM_SANITIZE AND AM_CUDA)
  # The CUDA driver maps memory where ASan's shadow gap would be, and keeps
  # process-lifetime allocations (suppressed by library; ours are still checked).
  set_property(TEST test_cuda_backend APPEND PROPERTY ENVIRONMENT
    "ASAN_OPTIONS=protect_shadow_gap=0:detect_leaks=1:abort_on_error=1"
    "LSAN_OPTIONS=suppressions=${CMAKE_CURRENT_SOURCE_DIR}/lsan_cuda.supp:print_suppressions=0")
endif()
# `anymal encode --device cuda` for image, audio and IMU against the CPU (label gpu; exits 77
# without CUDA or a GPU, like test_cuda_backend).
add_test(NAME test_encode_cuda COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_encode_cuda.sh)
set_tests_properties(test_encode_cuda PROPERTIES LABELS "gpu" TIMEOUT 300 SKIP_RETURN_CODE 77
  ENVIRONMENT "AM_BIN_DIR=${CMAKE_BINARY_DIR}/bin;AM_SOURCE_DIR=${CMAKE_SOURCE_DIR}")

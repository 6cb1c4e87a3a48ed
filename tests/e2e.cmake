# End-to-end accuracy of the trained embedded default (models/default, train/README.md).
# test_e2e: 500 held-out examples generated now by train/gen.py (seed 1000; needs python3-numpy,
# python3-pil, espeak-ng) through a coordinator, 2 encoder workers and shard groups P = 2 and
# P = 1: exact-answer accuracy floors per kind (tests/e2e/ask.py), ids equal to the committed
# PyTorch reference.
# Under ASan+UBSan the serving path is 2-3x slower: 20 examples per modality there.
if(TARGET anymal-shard-worker)
  if(AM_SANITIZE)
    set(AM_E2E_PER_MODALITY 20)
  else()
    set(AM_E2E_PER_MODALITY 100)
  endif()
  add_test(NAME test_e2e COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_e2e.sh)
  set_tests_properties(test_e2e PROPERTIES LABELS "e2e" TIMEOUT 300 RUN_SERIAL TRUE ENVIRONMENT
    "AM_E2E_PER_MODALITY=${AM_E2E_PER_MODALITY};AM_SRC_DIR=${CMAKE_SOURCE_DIR};AM_BIN_DIR=${CMAKE_BINARY_DIR}/bin;OMPI_MCA_rmaps_base_oversubscribe=1;ASAN_OPTIONS=detect_leaks=1:fast_unwind_on_malloc=0;LSAN_OPTIONS=suppressions=${CMAKE_CURRENT_SOURCE_DIR}/lsan_mpi.supp:print_suppressions=0;OMPI_MCA_mca_base_component_disable_dlclose=1")
endif()

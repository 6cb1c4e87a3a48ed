# anymal-supervise keeping a real cluster's actors running (label reliability).
add_test(NAME test_supervise COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_supervise.sh)
set_tests_properties(test_supervise PROPERTIES LABELS "reliability;integration" TIMEOUT 300
  ENVIRONMENT "AM_BIN_DIR=${CMAKE_BINARY_DIR}/bin;OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1")

# The `anymal` command end to end (real processes, real files).
add_test(NAME test_cli COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_cli.sh)
set_tests_properties(test_cli PROPERTIES LABELS "integration" TIMEOUT 300
  ENVIRONMENT "AM_BIN_DIR=${CMAKE_BINARY_DIR}/bin")

# `anymal batch` (tools/cmd_batch.c) against a real cluster: bad input, SIGKILL + resume
# exactly once, killed workers (real processes on loopback TCP, an mpirun -np 2 group).
# 2,000 lines in the release build (25-36 s on 2 cores); 200 under ASan+UBSan, whose
# cluster computes ~6x slower (2,000 lines took 190 s there; 400 lines 36-97 s, at load
# averages from 6 to 19).
if(AM_SANITIZE)
  set(AM_TEST_BATCH_LINES 200)
else()
  set(AM_TEST_BATCH_LINES 2000)
endif()
if(TARGET anymal-shard-worker)
  am_add_test(NAME test_batch SOURCES test_batch.c LABELS integration
              LIBS am_client PkgConfig::CJSON TIMEOUT 300)
  set_tests_properties(test_batch PROPERTIES RUN_SERIAL TRUE ENVIRONMENT
    "AM_TEST_BATCH_LINES=${AM_TEST_BATCH_LINES};AM_SOURCE_DIR=${CMAKE_SOURCE_DIR};AM_BIN_DIR=${CMAKE_BINARY_DIR}/bin;OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMPI_MCA_rmaps_base_oversubscribe=1;ASAN_OPTIONS=detect_leaks=1:fast_unwind_on_malloc=0;LSAN_OPTIONS=suppressions=${CMAKE_CURRENT_SOURCE_DIR}/lsan_mpi.supp:print_suppressions=0;OMPI_MCA_mca_base_component_disable_dlclose=1")
endif()
# The input pass alone (tools/batch_input.c compiled in): reader, identity, custom_id index.
am_add_test(NAME test_batch_input SOURCES test_batch_input.c ${CMAKE_SOURCE_DIR}/tools/batch_input.c
            LABELS unit LIBS am_base PkgConfig::CJSON TIMEOUT 60)

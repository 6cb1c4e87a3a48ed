# Tensor-parallel shard groups (llm_shards/tp.h, comm.h, shard_group.h; tools/anymal_shard.c).
# test_tp: the slicing and the step protocol with thread ranks (no MPI; runs everywhere).
am_add_test(NAME test_tp SOURCES test_tp.c LABELS unit LIBS am_mkmodel Threads::Threads TIMEOUT 300)
am_add_isa_variants(test_tp COMMAND $<TARGET_FILE:test_tp> LABELS unit)
if(TARGET anymal-shard)
  # Real Open MPI groups through mpirun: P = 1, 2, 4 vs the single-process engine,
  # idle CPU, killed and failing ranks, `anymal generate --tp`. Test-only: mpirun as
  # root is allowed through Open MPI's own variables (never outside tests).
  add_executable(tp_logits_cmp tp_logits_cmp.c)
  target_link_libraries(tp_logits_cmp PRIVATE m)
  set(AM_MPI_TEST_ENV "AM_BIN_DIR=${CMAKE_BINARY_DIR}/bin;OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMPI_MCA_rmaps_base_oversubscribe=1")
  if(AM_SANITIZE)
    # Open MPI keeps allocations for the process's life: suppress those (full stacks need
    # the slow unwinder, Open MPI has no frame pointers), keep checking ours.
    list(APPEND AM_MPI_TEST_ENV
      "ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:fast_unwind_on_malloc=0"
      "LSAN_OPTIONS=suppressions=${CMAKE_CURRENT_SOURCE_DIR}/lsan_mpi.supp:print_suppressions=0"
      "OMPI_MCA_mca_base_component_disable_dlclose=1")
  endif()
  add_test(NAME test_mpi COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_mpi.sh small)
  set_tests_properties(test_mpi PROPERTIES LABELS "mpi;integration" TIMEOUT 300 ENVIRONMENT "${AM_MPI_TEST_ENV}")
  am_add_isa_variants(test_mpi COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_mpi.sh small
                      LABELS mpi integration ENVIRONMENT "${AM_MPI_TEST_ENV}")
  # A 70B-shaped checkpoint with 2 layers (bf16, ~4.4 GB, made and deleted by the test):
  # P = 2 and 4 vs P = 1, and memory per rank against 1/P of the weights. Not in
  # sanitizer builds: unoptimised kernels over 4 GB per token, and ASan's shadow memory
  # would distort the resident-memory check.
  if(NOT AM_SANITIZE)
    add_test(NAME test_mpi_70b COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_mpi.sh 70b)
    set_tests_properties(test_mpi_70b PROPERTIES LABELS "mpi;integration" TIMEOUT 600 RUN_SERIAL TRUE
      ENVIRONMENT "${AM_MPI_TEST_ENV}")
  endif()
endif()
if(TARGET anymal-shard-worker)
  # What each actor program links (ldd): the shard worker no media library, the encoder worker
  # the media stack.
  add_test(NAME test_role_links COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_role_links.sh)
  set_tests_properties(test_role_links PROPERTIES LABELS "integration" TIMEOUT 60
    ENVIRONMENT "AM_BIN_DIR=${CMAKE_BINARY_DIR}/bin")
endif()

# The actor system (proto/, coordinator/, workers/).
# test_proto: codec round trips, hostile bodies, ZeroMQ framing (inproc).
am_add_test(NAME test_proto SOURCES test_proto.c LABELS unit LIBS am_transport TIMEOUT 60)
# test_actors: real processes on loopback TCP (coordinator, 2 encoders, mpirun -np 2 shard
# group): 50 requests vs the in-process engine, SIGKILL/SIGSTOP of an encoder, hostile input.
if(TARGET anymal-shard-worker)
  am_add_test(NAME test_actors SOURCES test_actors.c LABELS integration
              LIBS am_client am_encoders am_llm TIMEOUT 240)
  set_tests_properties(test_actors PROPERTIES RUN_SERIAL TRUE ENVIRONMENT
    "AM_SOURCE_DIR=${CMAKE_SOURCE_DIR};AM_BIN_DIR=${CMAKE_BINARY_DIR}/bin;OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMPI_MCA_rmaps_base_oversubscribe=1;ASAN_OPTIONS=detect_leaks=1:fast_unwind_on_malloc=0;LSAN_OPTIONS=suppressions=${CMAKE_CURRENT_SOURCE_DIR}/lsan_mpi.supp:print_suppressions=0;OMPI_MCA_mca_base_component_disable_dlclose=1")
endif()
# fuzz_proto: libFuzzer on the message decoder, 30 s, when the compiler is clang
# (deploy/test.sh also builds it with clang directly when the build uses gcc).
if(CMAKE_C_COMPILER_ID STREQUAL "Clang")
  add_executable(fuzz_proto fuzz_proto.c ${CMAKE_SOURCE_DIR}/proto/proto.c ${CMAKE_SOURCE_DIR}/core/error.c
                 ${CMAKE_SOURCE_DIR}/core/log.c ${CMAKE_SOURCE_DIR}/core/alloc.c)
  target_compile_options(fuzz_proto PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_options(fuzz_proto PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(fuzz_proto PRIVATE PkgConfig::MSGPACK m Threads::Threads)
  add_test(NAME fuzz_proto COMMAND fuzz_proto -max_total_time=30 -rss_limit_mb=1024)
  set_tests_properties(fuzz_proto PROPERTIES LABELS fuzz TIMEOUT 120)
endif()
# test_security: CURVE + ZAP on every link with real processes (issue 18 item 1): keygen,
# a prompt absent from a capture of the encrypted links (present without keys), workers
# and clients without a listed key refused, rogue READYs get no request, the bind check.
if(TARGET anymal-shard-worker)
  am_add_test(NAME test_security SOURCES test_security.c LABELS integration security
              LIBS am_client TIMEOUT 120)
  set_tests_properties(test_security PROPERTIES RUN_SERIAL TRUE ENVIRONMENT
    "AM_SOURCE_DIR=${CMAKE_SOURCE_DIR};AM_BIN_DIR=${CMAKE_BINARY_DIR}/bin;OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMPI_MCA_rmaps_base_oversubscribe=1;ASAN_OPTIONS=detect_leaks=1:fast_unwind_on_malloc=0;LSAN_OPTIONS=suppressions=${CMAKE_CURRENT_SOURCE_DIR}/lsan_mpi.supp:print_suppressions=0;OMPI_MCA_mca_base_component_disable_dlclose=1")
endif()
# test_curve: proto/curve.h in one process (key files, allow-lists, endpoints, the log
# limiter, CURVE links through the ZAP handler with roles read back).
am_add_test(NAME test_curve SOURCES test_curve.c LABELS unit security LIBS am_transport TIMEOUT 60)

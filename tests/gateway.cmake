# anymal-gateway (gateway/): the HTTP front door over real sockets, in front of a real cluster.
# test_gateway: curl (SSE framing, every error code) and hostile raw-socket clients
# (tests/gateway_robust.py); test_gateway_openai: the real openai SDK (PyPI, in a venv under
# the build dir); test_gateway_page: the status page in headless Chromium.
if(TARGET anymal-gateway AND TARGET anymal-shard-worker)
  set(AM_GW_ENV "AM_BIN_DIR=${CMAKE_BINARY_DIR}/bin;OMPI_MCA_rmaps_base_oversubscribe=1;ASAN_OPTIONS=detect_leaks=1:fast_unwind_on_malloc=0;LSAN_OPTIONS=suppressions=${CMAKE_CURRENT_SOURCE_DIR}/lsan_mpi.supp:print_suppressions=0;OMPI_MCA_mca_base_component_disable_dlclose=1")
  foreach(t test_gateway test_gateway_openai test_gateway_page)
    add_test(NAME ${t} COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/${t}.sh)
    set_tests_properties(${t} PROPERTIES LABELS integration TIMEOUT 180 RUN_SERIAL TRUE
      SKIP_RETURN_CODE 77 ENVIRONMENT "${AM_GW_ENV}")
  endforeach()
endif()

# CPU backend, reference ops and thread pool (core/cpu/).
am_add_test(NAME test_cpu_backend SOURCES test_cpu_backend.c LABELS unit LIBS am_cpu TIMEOUT 120)
am_add_test(NAME test_threadpool SOURCES test_threadpool.c LABELS unit LIBS am_cpu TIMEOUT 60)

# CPU backend, reference ops and thread pool (core/cpu/).
am_add_test(NAME test_cpu_backend SOURCES test_cpu_backend.c LABELS unit LIBS am_cpu TIMEOUT 120)
# Capped: the kernels of each level up to the cap, with oneDNN's ISA capped from the start.
am_add_isa_variants(test_cpu_backend COMMAND $<TARGET_FILE:test_cpu_backend> LABELS unit TIMEOUT 120)
am_add_test(NAME test_threadpool SOURCES test_threadpool.c LABELS unit LIBS am_cpu TIMEOUT 60)

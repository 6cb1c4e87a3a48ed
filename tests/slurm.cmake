# deploy/slurm on a real Slurm: munged, slurmctld and four slurmd nodes in network namespaces
# (tests/slurm_cluster.sh; fallbacks said in its output), the serving job, requests from
# outside it (ZeroMQ and HTTP), scale, scancel, gres binding, the plain-job fallback, the
# batch job's requeue. About 60 s. Root only (skipped, with the reason, otherwise).
# RUN_SERIAL: its four nodes share the machine's cores.
add_test(NAME test_slurm COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_slurm.sh)
set_tests_properties(test_slurm PROPERTIES LABELS "slurm;integration" TIMEOUT 400 RUN_SERIAL TRUE
  SKIP_RETURN_CODE 77 ENVIRONMENT "AM_SOURCE_DIR=${CMAKE_SOURCE_DIR};AM_BIN_DIR=${CMAKE_BINARY_DIR}/bin")

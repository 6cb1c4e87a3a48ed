# Audio encoder (encoders/): golden comparisons against HF transformers (ClapFeatureExtractor,
# ClapAudioModelWithProjection) on espeak-ng/sox-made clips (fixtures made by
# tests/golden/audio/gen_audio_golden.py); hostile audio files.
am_add_test(NAME test_audio SOURCES test_audio.c LABELS unit golden LIBS am_encoders TIMEOUT 300)
# `anymal mkmodel --with-encoders` and `anymal encode --modality audio|imu` end to end.
add_test(NAME test_encode_audio_imu_cli COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_encode_audio_imu_cli.sh)
set_tests_properties(test_encode_audio_imu_cli PROPERTIES LABELS "integration" TIMEOUT 300
  ENVIRONMENT "AM_BIN_DIR=${CMAKE_BINARY_DIR}/bin;AM_SOURCE_DIR=${CMAKE_SOURCE_DIR}")

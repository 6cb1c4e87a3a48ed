# The modality list and table (core/modality.h, encoders/modality.h).
am_add_test(NAME test_modality SOURCES test_modality.c LABELS unit LIBS am_encoders TIMEOUT 120)

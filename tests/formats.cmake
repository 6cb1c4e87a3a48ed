# Checkpoint readers and writers (core/ckpt.h, core/formats/).
am_add_test(NAME test_formats SOURCES test_formats.c LABELS unit LIBS am_formats)

# Device-clean code paths without a GPU: the decoder (eval, scheduler steps, a 2-rank
# thread group) and the vision encoder on tests/strict_device.h, a CPU backend that
# checks every pointer like a device, bit-identical to the CPU backend.
am_add_test(NAME test_device_clean SOURCES test_device_clean.c strict_device.c LABELS unit
            LIBS am_mkmodel am_encoders Threads::Threads TIMEOUT 300)

# IMU motion encoder (encoders/): golden comparisons against a PyTorch MW2StackRNNPooling
# (facebookresearch/imu2clip) and torchaudio's resampling algorithm (fixtures made by
# tests/golden/imu/gen_imu_golden.py); hostile CSV / .npy / raw inputs.
am_add_test(NAME test_imu SOURCES test_imu.c LABELS unit golden LIBS am_encoders TIMEOUT 300)

/* encoders/imu2clip.h - the IMU2CLIP motion encoder (MW2StackRNNPooling) for any config.
 *
 * Computation (docs/model-spec.md 6; facebookresearch/imu2clip lib/imu_models.py) on
 * one window x (6, T) channel-major, T = 1000 (5 s at 200 Hz):
 *   GroupNorm(2, 6)                                  (eps 1e-5, affine)
 *   Block(6 -> D, k 10), Block(D -> D, k 5), Block(D -> D, k 5), each
 *     Conv1d(dilation 2, no bias, no padding) + MaxPool1d(3)   1000 -> 327 -> 106 -> 32
 *   GroupNorm(4, D)
 *   GRU(input D, hidden H, batch_first) over the (N, D, 32) tensor as it lies:
 *     the CHANNEL axis is the sequence (D steps) and the 32 time positions are
 *     the features. This is the reference's quirk, reproduced on purpose (it
 *     only type-checks because the pooled length equals D = 32); the output is
 *     the last hidden state h_D (H = 512).
 * Conv1d runs as im2col + backend GEMM on time-major activations, one GEMM per
 * window; the GRU's input products for all D steps are one GEMM per window. The
 * recurrent product h W_hh^T runs for AM_IMU2CLIP_GRU_ROWS windows at a time as
 * one backend matrix-vector call with M = AM_IMU2CLIP_GRU_ROWS (the backend's
 * largest matrix-vector M, core/cpu_backend.h), the last group padded with zero
 * rows: W_hh (3 MB in f32) is read once per four windows, and since the
 * matrix-vector kernels compute each of their rows with the same code whatever
 * the other rows hold, a window gives the same bits alone or in any batch
 * (tests/test_imu.c checks it; encoders/README.md, "Determinism of batching").
 *
 * Tensor names under a prefix ("" for the bare module, "imu_encoder." for
 * IMU2CLIP's Lightning checkpoints): net.0.{weight,bias} (6), net.1.net.0.weight
 * (D, 6, 10), net.2.net.0.weight (D, D, 5), net.3.net.0.weight (D, D, 5),
 * net.4.{weight,bias} (D), net.5.{weight_ih_l0 (3H, D), weight_hh_l0 (3H, H),
 * bias_ih_l0 (3H), bias_hh_l0 (3H)} with PyTorch's gate order r, z, n.
 */
#ifndef AM_IMU2CLIP_H
#define AM_IMU2CLIP_H

#include "core/ckpt.h"
#include "encoders/nn_ops.h"

#include <stdint.h>

/* Windows per recurrent matrix-vector call (AM__MATVEC_MAX_M of the CPU backend). */
#define AM_IMU2CLIP_GRU_ROWS 4

typedef struct am_imu2clip_config {
    int32_t in_channels; /* 6 */
    int32_t conv_dim;    /* D: 32 (input_dim) */
    int32_t hidden;      /* H: 512 (size_embeddings) */
    int32_t window;      /* T: 1000 samples */
    int32_t kernels[3];  /* 10, 5, 5 */
    int32_t dilation;    /* 2 */
    int32_t pool;        /* 3 */
    int32_t in_groups;   /* 2: GroupNorm over the input channels */
    int32_t conv_groups; /* 4: GroupNorm over the conv channels */
    float eps;           /* 1e-5 */
} am_imu2clip_config;

/* Named shapes: "imu2clip" (H = 512, 0.85M parameters) and "tiny" (H = 32). */
int am_imu2clip_shape(const char *name, am_imu2clip_config *out);
const char *am_imu2clip_shape_names(void);
/* Validates sizes; the time length after the three blocks must equal D (the
 * GRU reads time as features). AM_EINVAL naming the field. */
int am_imu2clip_config_check(const am_imu2clip_config *c);
/* Time length after block i (0..2); block -1 = the input window. */
int64_t am_imu2clip_len(const am_imu2clip_config *c, int block);
/* Matmul FLOPs of one window. */
double am_imu2clip_flops(const am_imu2clip_config *c);

typedef struct am_imu2clip {
    am_imu2clip_config cfg;
    float *gn0_w, *gn0_b; /* (6) */
    am_matrix conv[3];    /* (D, C_in * k) views of the conv weights */
    float *gn1_w, *gn1_b; /* (D) */
    am_linear ih;         /* (3H, D) + (3H) */
    am_linear hh;         /* (3H, H) + (3H) */
    float *vecs;          /* owns the f32 vectors */
} am_imu2clip;

int am_imu2clip_load(const am_ckpt *ck, const char *prefix, const am_imu2clip_config *cfg,
                     am_imu2clip **out);
void am_imu2clip_destroy(am_imu2clip **p);

/* The encoder's weights as backend be sees them (matrices through
 * upload_matrix, vectors in one allocation of be's memory); on a host-memory
 * backend views of m's own. m must outlive it; release with
 * am_imu2clip_release on the same backend. AM_ENOMEM or upload errors. */
int am_imu2clip_upload(const am_imu2clip *m, am_backend *be, am_imu2clip **out);
void am_imu2clip_release(am_imu2clip **p, am_backend *be);

size_t am_imu2clip_scratch_floats(const am_imu2clip_config *c, int64_t b);
/* out (B, H) = the encoder over b windows x (B, C_in, T); m (am_imu2clip_upload's
 * copy on a device), x, out and scratch in the backend's memory. Errors from the
 * backend's matmul. */
int am_imu2clip_forward(const am_imu2clip *m, am_nn *nn, const float *x, int64_t b, float *out,
                        float *scratch);

#endif

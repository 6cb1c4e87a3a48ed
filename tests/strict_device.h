/* tests/strict_device.h - a test backend that behaves like a device, on the CPU.
 *
 * Proves that a code path is device-clean without a GPU: the backend wraps the
 * CPU backend (same arithmetic, so results are bit-identical to it) but says
 * host_memory = 0 and hands out memory only from its own tracked allocations
 * (poisoned with NaN, as device memory holds garbage). upload/download check
 * that the device side lies inside one live allocation and the host side
 * inside none; upload_matrix copies into a tracked allocation that the backend
 * owns until destroy. Every op checks that each pointer it gets that the
 * vtable says is backend memory (activations, weights' data, KV pools, ids of
 * get_rows, pos of rope) lies inside one live allocation with room for what
 * the op touches, then forwards to the CPU op. A violation aborts with a
 * message naming the op and the argument: a host pointer handed to a device
 * op is the bug this catches (on a GPU it would be an illegal address).
 *
 * Host memory per vtable: am_attn_seq arrays and their block tables.
 */
#ifndef AM_TESTS_STRICT_DEVICE_H
#define AM_TESTS_STRICT_DEVICE_H

#include "core/backend.h"

#include <stddef.h>
#include <stdint.h>

/* A strict device over a CPU backend of n_threads. Destroy with
 * am_backend_destroy (frees the upload_matrix copies; the allocations that
 * alloc handed out must have been freed by then, see am_strict_device_live). */
int am_strict_device_new(int n_threads, am_backend **out);

/* Live allocations made by alloc and not yet freed (upload_matrix copies not counted). */
int64_t am_strict_device_live(const am_backend *b);
/* Ops forwarded so far, and bytes copied by upload / download. */
int64_t am_strict_device_n_ops(const am_backend *b);
int64_t am_strict_device_uploaded(const am_backend *b);
int64_t am_strict_device_downloaded(const am_backend *b);

#endif

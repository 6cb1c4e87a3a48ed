/* encoders/video.h - decoding video files (mp4, webm, mkv, ...) and sampling frames.
 *
 * FFmpeg's libavformat/libavcodec demux and decode from memory (the bytes of
 * a request, or a file read whole); libswscale converts frames to 8-bit RGB.
 * Frames are sampled uniformly as Video-LLaVA does: with N decodable frames,
 * frame indices floor(i * (N - 1) / (F - 1)) for i < F (index 0 when F = 1);
 * a video shorter than F frames repeats frames, so F frames always come out.
 * N is counted by demuxing (no decoding) first; then the video is decoded
 * once, front to back, and the selected frames are handed to a callback in
 * order, so only one RGB frame is alive at a time.
 *
 * Errors name the file and what was wrong (with FFmpeg's own message where
 * it has one): AM_EFORMAT (not a video, no video stream, corrupt, no frame
 * decodable), AM_ERANGE (bytes, frame size or frame count over the limits),
 * AM_EUNSUPPORTED (no decoder for the codec), AM_ENOMEM, AM_EIO.
 */
#ifndef AM_VIDEO_H
#define AM_VIDEO_H

#include "encoders/image.h"

#include <stddef.h>
#include <stdint.h>

#define AM_VIDEO_FRAMES_DEFAULT     8
#define AM_VIDEO_MAX_SAMPLED_FRAMES 256
#define AM_VIDEO_MAX_BYTES_DEFAULT  ((size_t)512 << 20)
/* 4K UHD. */
#define AM_VIDEO_MAX_FRAME_PIXELS_DEFAULT (3840ll * 2160)
/* About an hour at 30 fps: bounds the decoding work a request can cause. */
#define AM_VIDEO_MAX_FRAMES_DEFAULT 108000

typedef struct am_video_limits {
    size_t max_bytes;
    int64_t max_frame_pixels;
    int64_t max_frames; /* frames in the stream (decoded to reach the samples) */
} am_video_limits;

am_video_limits am_video_default_limits(void);

/* Called once per sampled frame, i = 0 .. n_samples-1 in order; the image is
 * valid only during the call. A non-zero return stops decoding and is
 * returned by am_video_sample. */
typedef int (*am_video_frame_fn)(void *user, int i, const am_image *frame);

/* Samples n_samples frames (1 .. AM_VIDEO_MAX_SAMPLED_FRAMES) from the video
 * in data/len; name is for messages. n_threads: decoder threads (1 = on the
 * calling thread). lim NULL = defaults. *n_total (may be NULL) receives N. */
int am_video_sample(const void *data, size_t len, const char *name, int n_samples, int n_threads,
                    const am_video_limits *lim, am_video_frame_fn fn, void *user, int64_t *n_total);

/* The frame indices sampled from n_total frames (exposed for tests). */
void am_video_sample_indices(int64_t n_total, int n_samples, int64_t *idx);

#endif

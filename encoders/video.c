/* encoders/video.c - demux, decode and sample video frames with FFmpeg's libraries. */
#include "encoders/video.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/imgutils.h>
#include <libswscale/swscale.h>

#define AM_AVIO_BUF_BYTES 65536
/* Demuxers we accept: containers of real videos. Playlist and concat demuxers
 * (hls, concat, ...) would open other files or URLs named inside the input. */
#define AM_VIDEO_DEMUXERS                                                                          \
    "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,mpegts,flv,ogg,gif,mpeg,h264,hevc,m4v"

am_video_limits am_video_default_limits(void) {
    return (am_video_limits){AM_VIDEO_MAX_BYTES_DEFAULT, AM_VIDEO_MAX_FRAME_PIXELS_DEFAULT,
                             AM_VIDEO_MAX_FRAMES_DEFAULT};
}

void am_video_sample_indices(int64_t n_total, int n_samples, int64_t *idx) {
    for (int i = 0; i < n_samples; i++)
        idx[i] = n_samples == 1
                     ? 0
                     : (int64_t)((double)i * (double)(n_total - 1) / (double)(n_samples - 1));
}

/* FFmpeg logs to stderr by default; we keep the last error line of each
 * thread for our messages instead (a server must not spray stderr). */
static _Thread_local char av_last_msg[256];
static void av_log_cb(void *avcl, int level, const char *fmt, va_list vl) {
    (void)avcl;
    if (level > AV_LOG_ERROR) return;
    vsnprintf(av_last_msg, sizeof av_last_msg, fmt, vl);
    size_t n = strlen(av_last_msg);
    while (n && (av_last_msg[n - 1] == '\n' || av_last_msg[n - 1] == '\r'))
        av_last_msg[--n] = 0;
}
static pthread_once_t av_once = PTHREAD_ONCE_INIT;
static void av_setup(void) { av_log_set_callback(av_log_cb); }

static int av_fail(int code, const char *name, const char *what, int averr) {
    char e[128] = "";
    if (averr) av_strerror(averr, e, sizeof e);
    return am_err_set(code, "%s: %s%s%s%s%s%s", name, what, e[0] ? ": " : "", e,
                      av_last_msg[0] ? " (ffmpeg: " : "", av_last_msg, av_last_msg[0] ? ")" : "");
}

typedef struct {
    const uint8_t *data;
    size_t len, pos;
} mem_io;

static int mem_read(void *opaque, uint8_t *buf, int n) {
    mem_io *m = opaque;
    size_t left = m->len - m->pos;
    if (left == 0) return AVERROR_EOF;
    size_t k = (size_t)n < left ? (size_t)n : left;
    memcpy(buf, m->data + m->pos, k);
    m->pos += k;
    return (int)k;
}

static int64_t mem_seek(void *opaque, int64_t off, int whence) {
    mem_io *m = opaque;
    if (whence & AVSEEK_SIZE) return (int64_t)m->len;
    int64_t base = (whence & 3) == SEEK_CUR   ? (int64_t)m->pos
                   : (whence & 3) == SEEK_END ? (int64_t)m->len
                                              : 0;
    int64_t p = base + off;
    if (p < 0 || p > (int64_t)m->len) return AVERROR(EINVAL);
    m->pos = (size_t)p;
    return p;
}

typedef struct {
    AVFormatContext *fmt;
    AVIOContext *io;
    mem_io mem;
} demux;

static void demux_close(demux *d) {
    if (d->fmt) avformat_close_input(&d->fmt);
    if (d->io) {
        av_freep(&d->io->buffer);
        avio_context_free(&d->io);
    }
}

static int demux_open(demux *d, const void *data, size_t len, const char *name, int *stream,
                      const AVCodec **codec) {
    memset(d, 0, sizeof *d);
    d->mem = (mem_io){data, len, 0};
    uint8_t *buf = av_malloc(AM_AVIO_BUF_BYTES);
    d->fmt = avformat_alloc_context();
    if (!buf || !d->fmt ||
        !(d->io =
              avio_alloc_context(buf, AM_AVIO_BUF_BYTES, 0, &d->mem, mem_read, NULL, mem_seek))) {
        av_free(buf);
        demux_close(d);
        return am_err_set(AM_ENOMEM, "%s: cannot allocate a demuxer", name);
    }
    d->fmt->pb = d->io;
    d->fmt->flags |= AVFMT_FLAG_CUSTOM_IO;
    d->fmt->format_whitelist = av_strdup(AM_VIDEO_DEMUXERS);
    int rc = avformat_open_input(&d->fmt, NULL, NULL, NULL); /* frees fmt on failure */
    if (rc < 0) {
        demux_close(d);
        return av_fail(AM_EFORMAT, name, "not a readable video container", rc);
    }
    if ((rc = avformat_find_stream_info(d->fmt, NULL)) < 0) {
        demux_close(d);
        return av_fail(AM_EFORMAT, name, "cannot read the stream info", rc);
    }
    rc = av_find_best_stream(d->fmt, AVMEDIA_TYPE_VIDEO, -1, -1, codec, 0);
    if (rc == AVERROR_STREAM_NOT_FOUND) {
        demux_close(d);
        return am_err_set(AM_EFORMAT, "%s: no video stream", name);
    }
    if (rc == AVERROR_DECODER_NOT_FOUND || (rc >= 0 && !*codec)) {
        demux_close(d);
        return am_err_set(AM_EUNSUPPORTED, "%s: no decoder for the video codec", name);
    }
    if (rc < 0) {
        demux_close(d);
        return av_fail(AM_EFORMAT, name, "cannot select the video stream", rc);
    }
    *stream = rc;
    return 0;
}

/* Converts an AVFrame to RGB into img (reallocating when the size changes). */
static int frame_to_rgb(struct SwsContext **sws, const AVFrame *f, am_image *img, const char *name,
                        const am_video_limits *lim) {
    if (f->width <= 0 || f->height <= 0 || f->format < 0)
        return am_err_set(AM_EFORMAT, "%s: decoder returned an invalid frame", name);
    if ((int64_t)f->width * f->height > lim->max_frame_pixels)
        return am_err_set(AM_ERANGE,
                          "%s: frame is %d x %d pixels, over the limit of %lld pixels per frame",
                          name, f->width, f->height, (long long)lim->max_frame_pixels);
    if (img->width != f->width || img->height != f->height) {
        am_image_fini(img);
        if (!(img->rgb = am_malloc((size_t)f->width * f->height * 3)))
            return am_err_set(AM_ENOMEM, "%s: cannot allocate a %d x %d frame", name, f->width,
                              f->height);
        img->width = f->width;
        img->height = f->height;
    }
    *sws = sws_getCachedContext(
        *sws, f->width, f->height, f->format, f->width, f->height, AV_PIX_FMT_RGB24,
        SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INT, NULL, NULL, NULL);
    if (!*sws)
        return am_err_set(AM_EUNSUPPORTED, "%s: cannot convert pixel format %d to RGB", name,
                          f->format);
    uint8_t *dst[4] = {img->rgb, NULL, NULL, NULL};
    int stride[4] = {img->width * 3, 0, 0, 0};
    sws_scale(*sws, (const uint8_t *const *)f->data, f->linesize, 0, f->height, dst, stride);
    return 0;
}

int am_video_sample(const void *data, size_t len, const char *name, int n_samples, int n_threads,
                    const am_video_limits *lim, am_video_frame_fn fn, void *user,
                    int64_t *n_total) {
    pthread_once(&av_once, av_setup);
    av_last_msg[0] = 0;
    am_video_limits dl = am_video_default_limits();
    if (!lim) lim = &dl;
    if (!name) name = "<video>";
    if (n_total) *n_total = 0;
    if (n_samples < 1 || n_samples > AM_VIDEO_MAX_SAMPLED_FRAMES)
        return am_err_set(AM_ERANGE, "%s: %d frames requested, not in [1, %d]", name, n_samples,
                          AM_VIDEO_MAX_SAMPLED_FRAMES);
    if (len > lim->max_bytes)
        return am_err_set(AM_ERANGE, "%s: %zu bytes, over the limit of %zu bytes per video", name,
                          len, lim->max_bytes);
    if (len == 0) return am_err_set(AM_EFORMAT, "%s: empty file", name);

    /* Pass 1: count the video packets (one frame each) without decoding. */
    demux d;
    int vs, rc;
    const AVCodec *codec = NULL;
    if ((rc = demux_open(&d, data, len, name, &vs, &codec))) return rc;
    AVPacket *pkt = av_packet_alloc();
    if (!pkt) {
        demux_close(&d);
        return am_err_set(AM_ENOMEM, "%s: out of memory", name);
    }
    int64_t n = 0;
    while ((rc = av_read_frame(d.fmt, pkt)) >= 0) {
        if (pkt->stream_index == vs) n++;
        av_packet_unref(pkt);
        if (n > lim->max_frames) {
            av_packet_free(&pkt);
            demux_close(&d);
            return am_err_set(AM_ERANGE, "%s: more than %lld frames (limit)", name,
                              (long long)lim->max_frames);
        }
    }
    demux_close(&d);
    if (rc != AVERROR_EOF && n == 0) {
        av_packet_free(&pkt);
        return av_fail(AM_EFORMAT, name, "cannot read the video packets", rc);
    }
    if (n == 0) {
        av_packet_free(&pkt);
        return am_err_set(AM_EFORMAT, "%s: the video stream has no frames", name);
    }

    /* Pass 2: decode front to back and hand over the sampled frames. */
    int64_t *idx = am_malloc((size_t)n_samples * sizeof *idx);
    AVCodecContext *cc = NULL;
    AVFrame *fr = av_frame_alloc(), *last = av_frame_alloc();
    struct SwsContext *sws = NULL;
    am_image img = {0};
    int next = 0, have_last = 0;
    int64_t k = 0, bad_packets = 0;
    if (!idx || !fr || !last) {
        rc = am_err_set(AM_ENOMEM, "%s: out of memory", name);
        goto done;
    }
    am_video_sample_indices(n, n_samples, idx);
    if ((rc = demux_open(&d, data, len, name, &vs, &codec))) goto done_nodemux;
    const AVCodecParameters *par = d.fmt->streams[vs]->codecpar;
    if ((int64_t)par->width * par->height > lim->max_frame_pixels) {
        rc = am_err_set(AM_ERANGE,
                        "%s: video is %d x %d pixels, over the limit of %lld pixels per frame",
                        name, par->width, par->height, (long long)lim->max_frame_pixels);
        goto done;
    }
    if (!(cc = avcodec_alloc_context3(codec)) || avcodec_parameters_to_context(cc, par) < 0) {
        rc = am_err_set(AM_ENOMEM, "%s: cannot set up the %s decoder", name, codec->name);
        goto done;
    }
    cc->thread_count = n_threads > 0 ? n_threads : 1;
    if ((rc = avcodec_open2(cc, codec, NULL)) < 0) {
        rc = av_fail(AM_EUNSUPPORTED, name, "cannot open the video decoder", rc);
        goto done;
    }
    rc = 0;
    int eof = 0;
    while (!eof && next < n_samples) {
        int r = av_read_frame(d.fmt, pkt);
        if (r < 0) {
            eof = 1;
            r = avcodec_send_packet(cc, NULL); /* flush */
        } else if (pkt->stream_index != vs) {
            av_packet_unref(pkt);
            continue;
        } else {
            r = avcodec_send_packet(cc, pkt);
            av_packet_unref(pkt);
            if (r < 0 && r != AVERROR(EAGAIN)) {
                bad_packets++; /* keep going, as players do; judged at the end */
                AM_LOGD("%s: packet rejected by the decoder", name);
            }
        }
        while (next < n_samples && (r = avcodec_receive_frame(cc, fr)) >= 0) {
            int converted = 0;
            while (next < n_samples && idx[next] == k) {
                if (!converted && (rc = frame_to_rgb(&sws, fr, &img, name, lim))) goto done;
                converted = 1;
                if ((rc = fn(user, next, &img))) goto done;
                next++;
            }
            av_frame_unref(last);
            av_frame_move_ref(last, fr);
            have_last = 1;
            k++;
        }
        if (r < 0 && r != AVERROR(EAGAIN) && r != AVERROR_EOF) bad_packets++;
    }
    if (next < n_samples) {
        if (!have_last) {
            rc = av_fail(AM_EFORMAT, name, "no frame could be decoded (corrupt video?)", 0);
            goto done;
        }
        /* Fewer frames decoded than packets counted: repeat the last one. */
        if ((rc = frame_to_rgb(&sws, last, &img, name, lim))) goto done;
        for (; next < n_samples; next++)
            if ((rc = fn(user, next, &img))) goto done;
    }
    if (bad_packets) AM_LOGD("%s: %lld corrupt packets skipped", name, (long long)bad_packets);
    if (n_total) *n_total = n;
done:
    demux_close(&d);
done_nodemux:
    avcodec_free_context(&cc);
    av_frame_free(&fr);
    av_frame_free(&last);
    av_packet_free(&pkt);
    sws_freeContext(sws);
    am_image_fini(&img);
    am_free(idx);
    return rc;
}

/* core/log.h - leveled logging to stderr.
 *
 * The level comes from am_log_set_level() or, at first use, from the
 * AM_LOG_LEVEL environment variable (error|warn|info|debug|trace; default warn).
 */
#ifndef AM_LOG_H
#define AM_LOG_H

typedef enum { AM_LOG_ERROR, AM_LOG_WARN, AM_LOG_INFO, AM_LOG_DEBUG, AM_LOG_TRACE } am_log_level;

void am_log_set_level(am_log_level level);
am_log_level am_log_get_level(void);
/* Parses "error".."trace"; returns 0 or AM_EINVAL. */
int am_log_parse_level(const char *name, am_log_level *out);
void am_log(am_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define AM_LOGE(...) am_log(AM_LOG_ERROR, __VA_ARGS__)
#define AM_LOGW(...) am_log(AM_LOG_WARN, __VA_ARGS__)
#define AM_LOGI(...) am_log(AM_LOG_INFO, __VA_ARGS__)
#define AM_LOGD(...) am_log(AM_LOG_DEBUG, __VA_ARGS__)

#endif

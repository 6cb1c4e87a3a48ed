/* workers/model_identity.c - the name and fingerprint a worker reports for its model. */
#include "workers/model_identity.h"

#include "core/error.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define IDENTITY_HEAD_BYTES 65536

int am_model_identity(const char *path, char *name, size_t name_cap, char fp[17]) {
    char buf[4096];
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/')
        n--;
    size_t b = n;
    while (b > 0 && path[b - 1] != '/')
        b--;
    snprintf(name, name_cap, "%.*s", (int)(n - b), path + b);
    struct stat st;
    if (stat(path, &st)) return am_err_set(AM_EIO, "%s: cannot stat the model", path);
    uint64_t h = 1469598103934665603ull;
    FILE *f = NULL;
    if (S_ISDIR(st.st_mode)) {
        snprintf(buf, sizeof buf, "%.*s/anymal.json", (int)n, path);
        if (!(f = fopen(buf, "rb"))) {
            snprintf(buf, sizeof buf, "%.*s/config.json", (int)n, path);
            f = fopen(buf, "rb");
        }
    } else {
        f = fopen(path, "rb");
        for (int i = 0; i < 8; i++)
            h = (h ^ (uint8_t)((uint64_t)st.st_size >> (8 * i))) * 1099511628211ull;
    }
    if (f) {
        size_t total = 0, got;
        while (total < IDENTITY_HEAD_BYTES && (got = fread(buf, 1, sizeof buf, f)) > 0) {
            for (size_t i = 0; i < got; i++)
                h = (h ^ (uint8_t)buf[i]) * 1099511628211ull;
            total += got;
        }
        fclose(f);
    }
    snprintf(fp, 17, "%016llx", (unsigned long long)h);
    return 0;
}

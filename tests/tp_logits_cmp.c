/* tests/tp_logits_cmp.c - compares two --dump-logits files (raw f32 rows of V values).
 *
 * usage: tp_logits_cmp A B V TOL -> prints the max abs difference (and the
 * largest |logit|) over all steps; exit 0 when the files hold the same number
 * of values and every difference is <= TOL, else 1.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static float *read_all(const char *path, long *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long bytes = ftell(f);
    fseek(f, 0, SEEK_SET);
    float *v = malloc(bytes > 0 ? (size_t)bytes : 1);
    if (v && fread(v, 1, (size_t)bytes, f) != (size_t)bytes) {
        free(v);
        v = NULL;
    }
    fclose(f);
    *n = bytes / (long)sizeof(float);
    return v;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: tp_logits_cmp A B V TOL\n");
        return 2;
    }
    long na, nb, V = atol(argv[3]);
    double tol = atof(argv[4]);
    float *a = read_all(argv[1], &na), *b = read_all(argv[2], &nb);
    if (!a || !b || V <= 0) {
        fprintf(stderr, "tp_logits_cmp: cannot read %s or %s\n", argv[1], argv[2]);
        return 1;
    }
    if (na != nb || na == 0 || na % V) {
        fprintf(stderr, "tp_logits_cmp: %s has %ld values, %s has %ld (vocab %ld)\n", argv[1], na,
                argv[2], nb, V);
        return 1;
    }
    double err = 0, big = 0;
    for (long i = 0; i < na; i++) {
        err = fmax(err, fabs((double)a[i] - b[i]));
        big = fmax(big, fabs((double)a[i]));
    }
    printf("max abs logit diff %.3g over %ld steps x %ld (max |logit| %.3g, tolerance %g)\n", err,
           na / V, V, big, tol);
    free(a);
    free(b);
    return err <= tol ? 0 : 1;
}

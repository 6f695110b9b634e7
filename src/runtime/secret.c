/* The shared token key every service must agree on: from TIDINGS_SECRET,
 * or generated once into <data>/secret in a way that is safe when all
 * services start at the same moment. */
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tidings/config.h"

#define SECRET_MIN       32
#define SECRET_GENERATED 48

/* 48 characters from the url-safe base64 alphabet: 288 bits of key. */
static void random_secret(char *out, size_t n)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                   "0123456789-_";
    for (size_t i = 0; i < n; i++) out[i] = alphabet[randombytes_uniform(64)];
}

static int read_secret_file(td_config_t *cfg, const char *path, char *errstr, size_t errlen)
{
    size_t len;
    char *text = td_read_file(path, &len);
    if (!text) return td_errf(errstr, errlen, TD_EIO, "%s: cannot read: %s", path, strerror(errno));
    /* Tolerate the newline an editor or `echo` adds. */
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r')) len--;
    if (len < SECRET_MIN) {
        sodium_memzero(text, len);
        free(text);
        return td_errf(errstr, errlen, TD_EINVAL, "%s: the secret must be at least %d bytes", path,
                       SECRET_MIN);
    }
    cfg->secret = (unsigned char *)text;
    cfg->secret_len = len;
    return 0;
}

/* Creates path with a fresh secret. The file appears complete or not at all:
 * it is written under a unique temporary name and hard-linked into place,
 * and link(2), unlike rename(2), fails with EEXIST when another service won
 * the race, in which case its secret is the one everyone uses. */
static int create_secret_file(const char *path, char *errstr, size_t errlen)
{
    char secret[SECRET_GENERATED];
    char rnd[8];
    random_secret(rnd, sizeof(rnd));
    char *tmp = td_asprintf("%s.tmp.%ld.%.8s", path, (long)getpid(), rnd);
    int rc = 0;

    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = td_errf(errstr, errlen, TD_EIO, "%s: cannot create: %s", tmp, strerror(errno));
        goto out;
    }
    random_secret(secret, sizeof(secret));
    ssize_t w = write(fd, secret, sizeof(secret));
    sodium_memzero(secret, sizeof(secret));
    if (w != (ssize_t)sizeof(secret) || fsync(fd) != 0) {
        rc = td_errf(errstr, errlen, TD_EIO, "%s: cannot write: %s", tmp, strerror(errno));
        close(fd);
        goto out_unlink;
    }
    if (close(fd) != 0) {
        rc = td_errf(errstr, errlen, TD_EIO, "%s: cannot write: %s", tmp, strerror(errno));
        goto out_unlink;
    }
    if (link(tmp, path) != 0 && errno != EEXIST)
        rc = td_errf(errstr, errlen, TD_EIO, "%s: cannot create: %s", path, strerror(errno));
out_unlink:
    unlink(tmp);
out:
    free(tmp);
    return rc;
}

int td_config_load_secret(td_config_t *cfg, char *errstr, size_t errlen)
{
    char *path = NULL;
    int rc = 0;

    if (sodium_init() < 0) return td_errf(errstr, errlen, TD_EIO, "libsodium failed to start");
    if (cfg->secret) sodium_memzero(cfg->secret, cfg->secret_len);
    free(cfg->secret);
    cfg->secret = NULL;
    cfg->secret_len = 0;

    const char *v = getenv("TIDINGS_SECRET");
    if (v && *v) {
        size_t n = strlen(v);
        if (n < SECRET_MIN)
            return td_errf(errstr, errlen, TD_EINVAL,
                           "TIDINGS_SECRET: must be at least %d bytes, not %zu", SECRET_MIN, n);
        cfg->secret = td_malloc(n + 1);
        memcpy(cfg->secret, v, n + 1);
        cfg->secret_len = n;
        return 0;
    }

    if (td_mkdirs(cfg->data_dir, 0700) != 0) {
        rc = td_errf(errstr, errlen, TD_EIO, "%s: cannot create the data directory: %s",
                     cfg->data_dir, strerror(errno));
        goto fail;
    }
    path = td_data_path(cfg, "secret");
    if (access(path, F_OK) != 0 && (rc = create_secret_file(path, errstr, errlen))) goto fail;
    rc = read_secret_file(cfg, path, errstr, errlen);
fail:
    free(path);
    return rc;
}

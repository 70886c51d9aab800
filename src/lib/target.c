/* qimg - new images written under a temporary name and renamed into place
 * when complete (convert, create --from), so an interrupted run leaves no
 * file that looks finished and never destroys an existing image early. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

void qimg_target_plan(struct qimg_target *t, const char *name)
{
    struct stat st;
    memset(t, 0, sizeof *t);
    t->name = name;
    t->final = qimg_strdup(name);
    t->existed = stat(name, &st) == 0;
    t->local = strncmp(name, "json:", 5) != 0 && !qimg_path_has_protocol(name);
    if (!t->local)
        return;
    if (lstat(name, &st) == 0 && S_ISLNK(st.st_mode)) {
        char *real = realpath(name, NULL);
        if (!real)
            return;               /* dangling: written in place */
        free(t->final);
        t->final = real;
    }
    if (stat(t->final, &st) == 0) {
        if (!S_ISREG(st.st_mode))
            return;               /* a device: written in place */
        t->replaces = true;
        t->mode = st.st_mode & 07777;
    }
    CLEANUP_FREE char *dir = qimg_path_dirname(t->final);
    const char *base = strrchr(t->final, '/');
    base = base ? base + 1 : t->final;
    t->tmp = qimg_asprintf("%s/.%s.qimg-%ld.tmp", dir, base, (long)getpid());
}

const char *qimg_target_path(const struct qimg_target *t)
{
    return t->tmp ? t->tmp : t->name;
}

char *qimg_target_message(const struct qimg_target *t, const char *msg)
{
    struct qimg_strbuf b = { 0 };
    const char *p = msg, *hit;
    if (!t->tmp)
        return qimg_strdup(msg);
    while ((hit = strstr(p, t->tmp))) {
        char *piece = strndup(p, (size_t)(hit - p));
        qimg_strbuf_add(&b, piece);
        free(piece);
        qimg_strbuf_add(&b, t->name);
        p = hit + strlen(t->tmp);
    }
    qimg_strbuf_add(&b, p);
    return b.s ? b.s : qimg_strdup("");
}

void qimg_target_discard(const struct qimg_target *t)
{
    if (t->tmp)
        unlink(t->tmp);
}

int qimg_target_commit(const struct qimg_target *t)
{
    if (!t->tmp)
        return 0;
    if (t->replaces)
        chmod(t->tmp, t->mode);
    if (rename(t->tmp, t->final) < 0)
        return qimg_error_errno(-errno, "Could not rename '%s' to '%s'", t->tmp, t->name);
    return 0;
}

int qimg_target_lock(qimg_target *t)
{
    if (!t->tmp || !t->replaces || t->held)
        return 0;
    return qimg_lock_existing(t->final, &t->held);
}

void qimg_target_release(struct qimg_target *t)
{
    if (t->held)
        qimg_io_close(t->held);
    t->held = NULL;
    free(t->final);
    free(t->tmp);
    t->final = t->tmp = NULL;
}

qimg_target *qimg_target_new(const char *name, bool in_place)
{
    qimg_target *t = qimg_xmalloc(sizeof *t);
    qimg_target_plan(t, name);
    if (in_place) {
        free(t->tmp);
        t->tmp = NULL;
    }
    return t;
}

void qimg_target_free(qimg_target *t)
{
    if (t) {
        qimg_target_release(t);
        free(t);
    }
}

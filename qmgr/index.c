/* index.c - the per-(gateway, domain) index of queued mail in Berkeley DB:
 * key encoding, the environment (recovery, log removal), the running
 * transaction, ordered scans. See index.h. */
#include "index.h"
#include "log.h"
#include "str.h"

#include <db.h>
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define INDEX_DIR "index"
#define INDEX_DB "domains.db"
#define INDEX_CACHE_BYTES (8u << 20)   /* the index's memory, whatever the queue size */
#define INDEX_TXN_MAX 20000            /* updates per transaction before it is committed anyway */
#define KEY_MAX (64 + 1 + 256 + 1 + 8 + SPOOL_ID_LEN)

static const char meta_key[] = "\0meta";

struct qindex {
    DB_ENV *env;
    DB *db;
    DB_TXN *txn;
    size_t pending;
    char dir[SPOOL_PATH_MAX];
};

static void db_errcall(const DB_ENV *env, const char *prefix, const char *msg)
{
    (void)env;
    (void)prefix;
    log_error("index: %s", msg);
}

/* While opening, Berkeley DB's complaints about a damaged file are many;
 * keep the last one for the error message instead of logging each. */
static char open_complaint[256];

static void db_errcall_quiet(const DB_ENV *env, const char *prefix, const char *msg)
{
    (void)env;
    (void)prefix;
    str_copy(open_complaint, sizeof open_complaint, msg);
}

/* key_make - vg NUL domain NUL [arrival id]; returns the length, 0 if too long */
static size_t key_make(unsigned char *out, const char *vg, const char *domain, bool with_pos, int64_t arrival_us,
                       const char *id)
{
    size_t lv = strlen(vg), ld = strlen(domain), n = 0;
    if (lv + ld + 2 + 8 + SPOOL_ID_LEN > KEY_MAX)
        return 0;
    memcpy(out, vg, lv + 1);
    n = lv + 1;
    memcpy(out + n, domain, ld + 1);
    n += ld + 1;
    if (!with_pos)
        return n;
    uint64_t a = (uint64_t)arrival_us;
    for (int i = 7; i >= 0; i--)
        out[n++] = (unsigned char)(a >> (i * 8));
    if (id) {
        size_t li = strlen(id);
        memcpy(out + n, id, li);
        n += li;
    }
    return n;
}

/* key_parse - split a stored key; false for the meta record or a bad key */
static bool key_parse(const DBT *k, const DBT *d, char *vg, size_t vglen, char *dom, size_t domlen,
                      struct qindex_rec *r)
{
    const unsigned char *p = k->data;
    size_t n = k->size;
    const unsigned char *z1 = memchr(p, '\0', n);
    if (z1 == NULL || z1 == p)
        return false;
    const unsigned char *z2 = memchr(z1 + 1, '\0', n - (size_t)(z1 + 1 - p));
    if (z2 == NULL || (size_t)(p + n - (z2 + 1)) != 8 + SPOOL_ID_LEN)
        return false;
    if ((size_t)(z1 - p) >= vglen || (size_t)(z2 - z1 - 1) >= domlen)
        return false;
    memcpy(vg, p, (size_t)(z1 - p) + 1);
    memcpy(dom, z1 + 1, (size_t)(z2 - z1));
    uint64_t a = 0;
    const unsigned char *q = z2 + 1;
    for (int i = 0; i < 8; i++)
        a = (a << 8) | q[i];
    r->vg = vg;
    r->domain = dom;
    r->arrival_us = (int64_t)a;
    memcpy(r->id, q + 8, SPOOL_ID_LEN);
    r->id[SPOOL_ID_LEN] = '\0';
    r->n_rcpts = 0;
    if (d && d->size == 4) {
        const unsigned char *v = d->data;
        r->n_rcpts = (uint32_t)v[0] << 24 | (uint32_t)v[1] << 16 | (uint32_t)v[2] << 8 | v[3];
    }
    return spool_id_valid(r->id);
}

static int txn_get(struct qindex *ix)
{
    if (ix->txn)
        return 0;
    int rc = ix->env->txn_begin(ix->env, NULL, &ix->txn, 0);
    if (rc != 0) {
        log_error("index: cannot begin a transaction: %s", db_strerror(rc));
        ix->txn = NULL;
        return -1;
    }
    return 0;
}

/* counted - one more update; a long batch (a rebuild) is committed as it goes */
static void counted(struct qindex *ix)
{
    if (++ix->pending >= INDEX_TXN_MAX)
        qindex_commit(ix);
}

/* remove_dir_files - the index's files, for a fresh start */
static void remove_dir_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char path[SPOOL_PATH_MAX];
        if (str_fmt(path, sizeof path, "%s/%s", dir, de->d_name))
            unlink(path);
    }
    closedir(d);
}

/* try_open - one attempt at the environment and the database */
static int try_open(struct qindex *ix, char *err, size_t errlen)
{
    int rc;
    DB_ENV *env = NULL;
    DB *db = NULL;
    const char *what = "db_env_create";
    if ((rc = db_env_create(&env, 0)) != 0)
        goto fail;
    env->set_errcall(env, db_errcall_quiet);
    open_complaint[0] = '\0';
    what = "cache size";
    if ((rc = env->set_cachesize(env, 0, INDEX_CACHE_BYTES, 1)) != 0)
        goto fail;
    what = "lock limits";
    if ((rc = env->set_lk_max_locks(env, 100000)) != 0 || (rc = env->set_lk_max_objects(env, 100000)) != 0)
        goto fail;
    what = "flags";
    if ((rc = env->set_flags(env, DB_TXN_WRITE_NOSYNC, 1)) != 0 ||
        (rc = env->log_set_config(env, DB_LOG_AUTO_REMOVE, 1)) != 0)
        goto fail;
    what = "environment";
    if ((rc = env->open(env, ix->dir,
                        DB_CREATE | DB_INIT_MPOOL | DB_INIT_TXN | DB_INIT_LOG | DB_INIT_LOCK | DB_RECOVER | DB_PRIVATE,
                        0600)) != 0)
        goto fail;
    what = INDEX_DB;
    if ((rc = db_create(&db, env, 0)) != 0)
        goto fail;
    what = "compression";
    if ((rc = db->set_bt_compress(db, NULL, NULL)) != 0) /* keys share long prefixes */
        goto fail;
    what = INDEX_DB;
    if ((rc = db->open(db, NULL, INDEX_DB, NULL, DB_BTREE, DB_CREATE | DB_AUTO_COMMIT, 0600)) != 0)
        goto fail;
    env->set_errcall(env, db_errcall);
    ix->env = env;
    ix->db = db;
    return 0;
fail:
    str_fmt(err, errlen, "%s/%s: %s%s%s", ix->dir, what, rc == 0 ? "failed" : db_strerror(rc),
            open_complaint[0] ? ": " : "", open_complaint);
    if (db)
        db->close(db, 0);
    if (env)
        env->close(env, 0);
    return -1;
}

static bool meta_ok(struct qindex *ix)
{
    DBT k, d;
    memset(&k, 0, sizeof k);
    memset(&d, 0, sizeof d);
    k.data = (void *)meta_key;
    k.size = sizeof meta_key - 1;
    if (ix->db->get(ix->db, NULL, &k, &d, 0) != 0)
        return false;
    return d.size == 2 && memcmp(d.data, "ok", 2) == 0;
}

struct qindex *qindex_open(const char *qdir, bool *sound, char *err, size_t errlen)
{
    struct qindex *ix = calloc(1, sizeof *ix);
    if (ix == NULL) {
        str_fmt(err, errlen, "out of memory");
        return NULL;
    }
    *sound = false;
    if (!str_fmt(ix->dir, sizeof ix->dir, "%s/" INDEX_DIR, qdir)) {
        str_fmt(err, errlen, "%s: path too long", qdir);
        free(ix);
        return NULL;
    }
    if (mkdir(ix->dir, 0700) != 0 && errno != EEXIST) {
        str_fmt(err, errlen, "mkdir %s: %s", ix->dir, strerror(errno));
        free(ix);
        return NULL;
    }
    if (try_open(ix, err, errlen) == 0) {
        *sound = meta_ok(ix);
        return ix;
    }
    log_warn("index unusable (%s): removing it, it is rebuilt from the spool", err);
    remove_dir_files(ix->dir);
    if (try_open(ix, err, errlen) != 0) {
        free(ix);
        return NULL;
    }
    return ix;
}

int qindex_put(struct qindex *ix, const struct qindex_rec *r)
{
    unsigned char kb[KEY_MAX], vb[4];
    size_t kl = key_make(kb, r->vg, r->domain, true, r->arrival_us, r->id);
    if (kl == 0 || txn_get(ix) != 0)
        return -1;
    vb[0] = (unsigned char)(r->n_rcpts >> 24);
    vb[1] = (unsigned char)(r->n_rcpts >> 16);
    vb[2] = (unsigned char)(r->n_rcpts >> 8);
    vb[3] = (unsigned char)r->n_rcpts;
    DBT k, d;
    memset(&k, 0, sizeof k);
    memset(&d, 0, sizeof d);
    k.data = kb;
    k.size = (u_int32_t)kl;
    d.data = vb;
    d.size = 4;
    int rc = ix->db->put(ix->db, ix->txn, &k, &d, DB_NOOVERWRITE);
    if (rc == DB_KEYEXIST)
        return 0;
    if (rc != 0) {
        log_error("index: put %s: %s", r->id, db_strerror(rc));
        return -1;
    }
    counted(ix);
    return 1;
}

int qindex_del(struct qindex *ix, const char *vg, const char *domain, int64_t arrival_us, const char *id,
               uint32_t *n_rcpts)
{
    unsigned char kb[KEY_MAX];
    size_t kl = key_make(kb, vg, domain, true, arrival_us, id);
    if (kl == 0 || txn_get(ix) != 0)
        return -1;
    DBT k;
    memset(&k, 0, sizeof k);
    k.data = kb;
    k.size = (u_int32_t)kl;
    if (n_rcpts) {
        DBT d;
        memset(&d, 0, sizeof d);
        *n_rcpts = 0;
        if (ix->db->get(ix->db, ix->txn, &k, &d, 0) == 0 && d.size == 4) {
            const unsigned char *v = d.data;
            *n_rcpts = (uint32_t)v[0] << 24 | (uint32_t)v[1] << 16 | (uint32_t)v[2] << 8 | v[3];
        }
    }
    int rc = ix->db->del(ix->db, ix->txn, &k, 0);
    if (rc == DB_NOTFOUND)
        return 0;
    if (rc != 0) {
        log_error("index: del %s: %s", id, db_strerror(rc));
        return -1;
    }
    counted(ix);
    return 1;
}

long qindex_scan(struct qindex *ix, const char *vg, const char *domain, int64_t after_us, const char *after_id,
                 size_t max, qindex_fn fn, void *arg)
{
    unsigned char start[KEY_MAX];
    size_t plen = 0, slen = 0;
    if (vg && domain) {
        plen = key_make(start, vg, domain, false, 0, NULL);
        slen = after_id ? key_make(start, vg, domain, true, after_us, after_id) : plen;
        if (plen == 0 || slen == 0)
            return -1;
    }
    if (txn_get(ix) != 0)
        return -1;
    DBC *c = NULL;
    int rc = ix->db->cursor(ix->db, ix->txn, &c, 0);
    if (rc != 0) {
        log_error("index: cursor: %s", db_strerror(rc));
        return -1;
    }
    DBT k, d;
    memset(&k, 0, sizeof k);
    memset(&d, 0, sizeof d);
    if (slen) {
        k.data = start;
        k.size = (u_int32_t)slen;
        rc = c->get(c, &k, &d, DB_SET_RANGE);
    } else {
        rc = c->get(c, &k, &d, DB_FIRST);
    }
    long n = 0;
    char vgb[65], domb[257];
    while (rc == 0) {
        if (plen && (k.size < plen || memcmp(k.data, start, plen) != 0))
            break;
        bool skip = after_id && k.size == slen && memcmp(k.data, start, slen) == 0;
        struct qindex_rec r;
        if (!skip && key_parse(&k, &d, vgb, sizeof vgb, domb, sizeof domb, &r)) {
            n++;
            if (!fn(&r, arg) || (max && (size_t)n >= max))
                break;
        }
        rc = c->get(c, &k, &d, DB_NEXT);
    }
    if (rc != 0 && rc != DB_NOTFOUND) {
        log_error("index: scan: %s", db_strerror(rc));
        n = -1;
    }
    c->close(c);
    return n;
}

int qindex_clear(struct qindex *ix)
{
    qindex_commit(ix);
    u_int32_t count = 0;
    int rc = ix->db->truncate(ix->db, NULL, &count, DB_AUTO_COMMIT);
    if (rc != 0) {
        log_error("index: truncate: %s", db_strerror(rc));
        return -1;
    }
    return 0;
}

int qindex_set_sound(struct qindex *ix, bool sound)
{
    if (txn_get(ix) != 0)
        return -1;
    DBT k, d;
    memset(&k, 0, sizeof k);
    memset(&d, 0, sizeof d);
    k.data = (void *)meta_key;
    k.size = sizeof meta_key - 1;
    d.data = sound ? "ok" : "building";
    d.size = sound ? 2 : 8;
    int rc = ix->db->put(ix->db, ix->txn, &k, &d, 0);
    if (rc != 0) {
        log_error("index: meta: %s", db_strerror(rc));
        return -1;
    }
    return qindex_flush(ix);
}

int qindex_commit(struct qindex *ix)
{
    if (ix->txn == NULL)
        return 0;
    int rc = ix->txn->commit(ix->txn, 0);
    ix->txn = NULL;
    ix->pending = 0;
    if (rc != 0) {
        log_error("index: commit: %s", db_strerror(rc));
        return -1;
    }
    return 0;
}

int qindex_flush(struct qindex *ix)
{
    int ok = qindex_commit(ix);
    int rc = ix->env->log_flush(ix->env, NULL);
    if (rc != 0) {
        log_error("index: log flush: %s", db_strerror(rc));
        return -1;
    }
    return ok;
}

void qindex_checkpoint(struct qindex *ix)
{
    qindex_commit(ix);
    int rc = ix->env->txn_checkpoint(ix->env, 0, 0, 0);
    if (rc != 0)
        log_warn("index: checkpoint: %s", db_strerror(rc));
}


void qindex_close(struct qindex *ix)
{
    if (ix == NULL)
        return;
    if (ix->env) {
        qindex_flush(ix);
        qindex_checkpoint(ix);
    }
    if (ix->db)
        ix->db->close(ix->db, 0);
    if (ix->env)
        ix->env->close(ix->env, 0);
    free(ix);
}

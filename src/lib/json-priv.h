/* qimg - the JSON value tree, shared by json.c (building, printing) and
 * json-parse.c (reading).  Not part of any public interface. */
#ifndef QIMG_JSON_PRIV_H
#define QIMG_JSON_PRIV_H

#include "internal.h"

struct qimg_json {
    enum qimg_json_type type;
    bool is_null;               /* JSON null (parser only): type is STRING */
    union {
        int64_t i;
        uint64_t u;
        bool b;
        double d;
        char *s;
    } v;
    /* arrays: items[0..n); objects: keys[i] -> items[i] in insertion order */
    struct qimg_json **items;
    char **keys;
    size_t n, cap;
};

/* A JSON null (only the parser makes one; it prints as "null"). */
struct qimg_json *qimg_json_null(void);
/* Parse one JSON text (qemu's dialect: '...' strings allowed). */
int qimg_json_parse(const char *text, struct qimg_json **out);

#endif

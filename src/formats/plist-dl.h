/* qimg - libplist, opened the first time a dmg's block tables are in an
 * XML property list (plist-dl.c; how and why: src/lib/dl.h).  Only such
 * dmg images need it, and a plain run should not map it.  The macros below
 * let dmg.c keep libplist's own names. */
#ifndef QIMG_PLIST_DL_H
#define QIMG_PLIST_DL_H

#include <plist/plist.h>

#include "dl.h"

#define QIMG_PLIST_FUNCS(X) \
    X(plist_array_get_item) \
    X(plist_array_get_size) \
    X(plist_dict_get_item) \
    X(plist_free) \
    X(plist_from_xml) \
    X(plist_get_data_ptr) \
    X(plist_get_node_type)

struct qimg_plist_api {
    QIMG_PLIST_FUNCS(QIMG_DL_MEMBER)
};

extern struct qimg_plist_api qimg_plist_api;

/* Open libplist once (thread-safe); 0, or -ENOTSUP with the error set.
 * Call before any of the functions below. */
int qimg_plist_load(void);

#ifndef QIMG_PLIST_DL_IMPL
#define plist_array_get_item (qimg_plist_api.plist_array_get_item)
#define plist_array_get_size (qimg_plist_api.plist_array_get_size)
#define plist_dict_get_item (qimg_plist_api.plist_dict_get_item)
#define plist_free (qimg_plist_api.plist_free)
#define plist_from_xml (qimg_plist_api.plist_from_xml)
#define plist_get_data_ptr (qimg_plist_api.plist_get_data_ptr)
#define plist_get_node_type (qimg_plist_api.plist_get_node_type)
#endif

#endif

/* qimg - the VHD driver's shared layout and state (vpc.c: the footer, the
 * dynamic header, blocks; vpc-parent.c: a differencing disk's parent).
 * The on-disk layout is described at the top of vpc.c. */
#ifndef QIMG_FORMATS_VPC_H
#define QIMG_FORMATS_VPC_H

#include "internal.h"

#define VPC_SECTOR 512u
#define VPC_FOOTER_SIZE 512u
#define VPC_DYN_HEADER_SIZE 1024u
#define VPC_TYPE_FIXED 2u
#define VPC_TYPE_DYNAMIC 3u
#define VPC_TYPE_DIFF 4u
#define VPC_BAT_UNUSED 0xffffffffu
/* seconds from the Unix epoch to the VHD epoch, 2000-01-01 00:00:00 UTC */
#define VPC_EPOCH 946684800

/* footer fields */
enum {
    F_COOKIE = 0, F_FEATURES = 8, F_VERSION = 12, F_DATA_OFFSET = 16, F_TIMESTAMP = 24,
    F_CREATOR_APP = 28, F_CREATOR_VER = 32, F_CREATOR_OS = 36, F_ORIG_SIZE = 40,
    F_CUR_SIZE = 48, F_CYLS = 56, F_HEADS = 58, F_SECS = 59, F_TYPE = 60, F_CHECKSUM = 64,
    F_UUID = 68,
};
/* dynamic header fields; the parent fields only mean something in a
 * differencing disk */
enum {
    D_COOKIE = 0, D_DATA_OFFSET = 8, D_TABLE_OFFSET = 16, D_VERSION = 24, D_MAX_ENTRIES = 28,
    D_BLOCK_SIZE = 32, D_CHECKSUM = 36, D_PARENT_UUID = 40, D_PARENT_TIME = 56,
    D_PARENT_NAME = 64, D_LOCATORS = 576,
};
#define VPC_PARENT_NAME_UNITS 256u      /* UTF-16 units in D_PARENT_NAME */
#define VPC_LOCATORS 8u
#define VPC_LOCATOR_SIZE 24u

struct vpc_state {
    uint8_t footer[VPC_FOOTER_SIZE];
    bool fixed;
    uint32_t block_size;       /* dynamic: bytes of guest data a block */
    uint32_t bitmap_size;      /* dynamic: bytes of sector bitmap before each block */
    uint32_t entries;
    uint64_t bat_offset;
    uint32_t *bat;             /* host order */
    uint64_t free_offset;      /* where the next block (and the footer copy) goes */
    /* appended for differencing disks */
    bool diff;                 /* the sector bitmaps decide child or parent */
    uint64_t header_offset;
    uint8_t header[VPC_DYN_HEADER_SIZE];   /* the dynamic header as on disk */
    bool parent_by_locator;    /* the parent was found through the image */
    uint64_t meta_end;         /* end of the BAT and the locators' data */
};

uint32_t vpc_checksum(const uint8_t *buf, size_t len, size_t skip);
/* The footer of the VHD in io (the copy at 0, else the last sector),
 * checked: cookie and checksum. */
int vpc_read_footer_io(struct qimg_io *io, uint8_t *footer, uint64_t file_size);

/* vpc-parent.c */
/* A differencing disk's parent, from the header's locators and name:
 * img->backing_file (a plain local name) and backing_fmt "vpc".  *end:
 * where the last locator's data ends (0 when none). */
int vpc_parent_parse(struct qimg_image *img, struct vpc_state *s, uint64_t file_size,
                     uint64_t *end);
/* The parent fields of a header for the parent at path, named name by
 * the user (relative names: to the child's directory): its UUID, time
 * stamp and name, and locator entries pointing at locator data laid out
 * from data_off.  *data (malloc'ed) and *data_len: the data to write there. */
int vpc_parent_fill(uint8_t *header, const char *path, const char *name,
                    uint64_t data_off, uint8_t **data, size_t *data_len);
/* The footer of the VHD at path (name: as the user gave it, for messages). */
int vpc_parent_footer(const char *path, const char *name, uint8_t *footer);
/* Check, once the parent is open, that it is the disk the child was made
 * from (its UUID). */
int vpc_parent_check(struct qimg_image *img);

#endif

#!/usr/bin/env python3
"""Damage or extend VHDX files for t-vhdx.sh (written from MS-VHDX).

    vhdx-craft.py SRC DST CASE [ARG]

CASE names one change; the checksums a change breaks are recomputed unless
the case is about a bad checksum.  Every multi-byte field is little-endian.
"""
import struct
import sys

H1, H2, R1, R2 = 64 << 10, 128 << 10, 192 << 10, 256 << 10
MB = 1 << 20


def crc32c(data, crc=0):
    if not hasattr(crc32c, 'table'):
        t = []
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
            t.append(c)
        crc32c.table = t
    t = crc32c.table
    c = crc ^ 0xffffffff
    for b in data:
        c = t[(c ^ b) & 0xff] ^ (c >> 8)
    return c ^ 0xffffffff


def fix(f, off, length):
    f[off + 4:off + 8] = bytes(4)
    f[off + 4:off + 8] = struct.pack('<I', crc32c(bytes(f[off:off + length])))


def regions(f):
    n = struct.unpack_from('<I', f, R1 + 8)[0]
    out = {}
    for i in range(n):
        e = R1 + 16 + 32 * i
        key = 'bat' if f[e:e + 4] == bytes.fromhex('6677c22d') else 'meta'
        out[key] = struct.unpack_from('<QI', f, e + 16)
    return out


def meta_item(f, first4):
    m = regions(f)['meta'][0]
    for i in range(struct.unpack_from('<H', f, m + 10)[0]):
        e = m + 32 + 32 * i
        if f[e:e + 4] == bytes.fromhex(first4):
            return m + struct.unpack_from('<I', f, e + 16)[0], e
    raise SystemExit('no such item')


def log_entry(seq, guid, tail, sectors, flushed, last):
    """One entry writing the 4 KiB sectors [(file offset, bytes)]."""
    n = len(sectors)
    dsec = (64 + 32 * n + 4095) // 4096
    length = (dsec + n) * 4096
    e = bytearray(length)
    struct.pack_into('<4sIIIQII16sQQ', e, 0, b'loge', 0, length, tail, seq, n, 0, guid,
                     flushed, last)
    d = dsec * 4096
    for i, (off, data) in enumerate(sectors):
        struct.pack_into('<4sIQQQ', e, 64 + 32 * i, b'desc',
                         struct.unpack_from('<I', data, 4092)[0],
                         struct.unpack_from('<Q', data, 0)[0], off, seq)
        struct.pack_into('<4sI', e, d, b'data', seq >> 32)
        e[d + 8:d + 4092] = data[8:4092]
        struct.pack_into('<I', e, d + 4092, seq & 0xffffffff)
        d += 4096
    fix(e, 0, length)
    return e


def set_log_guid(f, guid):
    for h in (H1, H2):
        f[h + 48:h + 64] = guid
        fix(f, h, 4096)


def pending_log(f, before, guid=b'\x5a' * 16, seq=5):
    """Make f a crash image: the BAT's first sector as in `before`, the log
    holding f's current one."""
    bat = regions(f)['bat'][0]
    after = bytes(f[bat:bat + 4096])
    f[bat:bat + 4096] = before[bat:bat + 4096]
    e = log_entry(seq, guid, 0, [(bat, after)], len(f) // MB * MB, (len(f) + MB - 1) // MB * MB)
    f[MB:MB + len(e)] = e
    set_log_guid(f, guid)
    return e


def main():
    src, dst, case = sys.argv[1:4]
    arg = sys.argv[4] if len(sys.argv) > 4 else None
    f = bytearray(open(src, 'rb').read())
    bat, meta = regions(f)['bat'][0], regions(f)['meta'][0]
    if case == 'header1-crc':
        f[H1 + 100] ^= 1
    elif case == 'headers-crc':
        f[H1 + 100] ^= 1
        f[H2 + 100] ^= 1
    elif case == 'region1-crc':
        f[R1 + 1000] ^= 1
    elif case == 'regions-crc':
        f[R1 + 1000] ^= 1
        f[R2 + 1000] ^= 1
    elif case == 'region-count':
        for r in (R1, R2):
            struct.pack_into('<I', f, r + 8, 3000)
            fix(f, r, 64 << 10)
    elif case == 'region-unknown-required':
        for r in (R1, R2):
            struct.pack_into('<I', f, r + 8, 3)
            f[r + 80:r + 96] = b'\x11' * 16
            struct.pack_into('<QII', f, r + 96, 5 * MB, MB, 1)
            fix(f, r, 64 << 10)
    elif case == 'region-overlap':
        for r in (R1, R2):
            struct.pack_into('<Q', f, r + 32, meta)
            fix(f, r, 64 << 10)
    elif case == 'region-past-end':
        for r in (R1, R2):
            struct.pack_into('<Q', f, r + 32, 1 << 60)
            fix(f, r, 64 << 10)
    elif case == 'block-size':
        struct.pack_into('<I', f, meta_item(f, '3767a1ca')[0], int(arg, 0))
    elif case == 'disk-size':
        struct.pack_into('<Q', f, meta_item(f, '2442a52f')[0], int(arg, 0))
    elif case == 'logical-sector':
        struct.pack_into('<I', f, meta_item(f, '1dbf4181')[0], int(arg, 0))
    elif case == 'meta-signature':
        f[meta] = 0
    elif case == 'meta-count':
        struct.pack_into('<H', f, meta + 10, 3000)
    elif case == 'meta-item-offset':
        struct.pack_into('<I', f, meta_item(f, '3767a1ca')[1] + 16, 2 * MB)
    elif case == 'bat-entry':      # bat-entry INDEX:VALUE
        i, v = arg.split(':')
        struct.pack_into('<Q', f, bat + 8 * int(i), int(v, 0))
    elif case == 'log-pending':    # ARG: the image before the update
        pending_log(f, open(arg, 'rb').read())
    elif case == 'log-bad-crc':
        e = pending_log(f, open(arg, 'rb').read())
        f[MB + len(e) - 100] ^= 1
    elif case == 'log-loop':
        # two entries whose tails point at each other and whose sequence
        # numbers do not follow: no valid sequence, whatever way round
        before = open(arg, 'rb').read()
        guid = b'\x33' * 16
        sec = bytes(f[bat:bat + 4096])
        a = log_entry(7, guid, 8192, [(bat, sec)], 0, 0)
        b = log_entry(7, guid, 0, [(bat, sec)], 0, 0)
        f[bat:bat + 4096] = before[bat:bat + 4096]
        f[MB:MB + len(a)] = a
        f[MB + 8192:MB + 8192 + len(b)] = b
        set_log_guid(f, guid)
    elif case == 'log-target-header':
        guid = b'\x44' * 16
        e = log_entry(3, guid, 0, [(H1, bytes(4096))], 0, 0)
        f[MB:MB + len(e)] = e
        set_log_guid(f, guid)
    elif case == 'log-guid-only':
        set_log_guid(f, b'\x22' * 16)
    else:
        raise SystemExit('unknown case ' + case)
    open(dst, 'wb').write(f)


if __name__ == '__main__':
    main()

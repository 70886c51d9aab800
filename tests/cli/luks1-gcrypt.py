#!/usr/bin/env python3
"""An independent LUKS1 reader for the tests: unlocks a volume with a
passphrase and writes its decrypted payload, with libgcrypt's ciphers
(through ctypes) and Python's hashlib, none of qimg's or nettle's code.
It reads what the LUKS1 on-disk format specification describes: the
header, PBKDF2 of each active keyslot, the keyslot's key material
decrypted in 512-byte sectors numbered from 0, the anti-forensic merge,
the master key digest, then the payload's sectors.

usage: luks1-gcrypt.py VOLUME PASSPHRASE OUT   (exit 2: libgcrypt missing,
exit 3: a cipher libgcrypt lacks, exit 1: cannot unlock)"""
import ctypes
import ctypes.util
import hashlib
import struct
import sys

ALGS = {("aes", 16): 7, ("aes", 24): 8, ("aes", 32): 9, ("cast5", 16): 3,
        ("twofish", 16): 303, ("twofish", 32): 10,
        ("serpent", 16): 304, ("serpent", 24): 305, ("serpent", 32): 306}
MODES = {"ecb": 1, "cbc": 3, "ctr": 6, "xts": 13}


def load_gcrypt():
    name = ctypes.util.find_library("gcrypt")
    if not name:
        sys.exit(2)
    g = ctypes.CDLL(name)
    g.gcry_check_version.restype = ctypes.c_char_p
    g.gcry_check_version(None)
    return g


class Cipher:
    def __init__(self, g, family, mode, key):
        self.g = g
        self.mode = mode
        kl = len(key) // 2 if mode == "xts" else len(key)
        if (family, kl) not in ALGS:
            sys.exit(3)
        self.h = ctypes.c_void_p()
        if g.gcry_cipher_open(ctypes.byref(self.h), ALGS[(family, kl)], MODES[mode], 0):
            sys.exit(3)
        if g.gcry_cipher_setkey(self.h, key, len(key)):
            sys.exit(3)
        g.gcry_cipher_get_algo_blklen.restype = ctypes.c_size_t
        self.block = g.gcry_cipher_get_algo_blklen(ALGS[(family, kl)])

    def run(self, data, iv, encrypt=False):
        if self.mode == "ctr":
            self.g.gcry_cipher_setctr(self.h, iv, len(iv))
        elif self.mode != "ecb":
            self.g.gcry_cipher_setiv(self.h, iv, len(iv))
        out = ctypes.create_string_buffer(len(data))
        f = self.g.gcry_cipher_encrypt if encrypt else self.g.gcry_cipher_decrypt
        if f(self.h, out, len(data), data, len(data)):
            raise SystemExit("gcrypt failed")
        return out.raw


class SectorCipher:
    def __init__(self, g, family, mode_spec, key):
        mode, _, ivgen = mode_spec.partition("-")
        self.ivgen, _, ivhash = ivgen.partition(":")
        self.data = Cipher(g, family, mode, key)
        self.essiv = None
        if self.ivgen == "essiv":
            self.essiv = Cipher(g, family, "ecb", hashlib.new(ivhash, key).digest())

    def decrypt(self, data, first_sector):
        out = bytearray()
        bs = self.data.block
        for i in range(0, len(data), 512):
            n = first_sector + i // 512
            iv = (n & 0xffffffff if self.ivgen == "plain" else n).to_bytes(8, "little").ljust(bs, b"\0")
            if self.essiv:
                iv = self.essiv.run(iv, None, encrypt=True)
            out += self.data.run(data[i:i + 512], iv)
        return bytes(out)


def af_merge(material, key_len, stripes, hash_name):
    def diffuse(d):
        hl = hashlib.new(hash_name).digest_size
        out = b""
        for j in range(0, key_len, hl):
            piece = d[j:j + hl]
            out += hashlib.new(hash_name, struct.pack(">I", j // hl) + piece).digest()[:len(piece)]
        return out
    d = bytes(key_len)
    for s in range(stripes - 1):
        d = diffuse(bytes(a ^ b for a, b in zip(d, material[s * key_len:(s + 1) * key_len])))
    return bytes(a ^ b for a, b in zip(d, material[(stripes - 1) * key_len:stripes * key_len]))


def main():
    vol, passphrase, out = sys.argv[1], sys.argv[2].encode(), sys.argv[3]
    g = load_gcrypt()
    b = open(vol, "rb").read()
    if b[:6] != b"LUKS\xba\xbe":
        raise SystemExit("not LUKS")
    cstr = lambda off: b[off:off + 32].split(b"\0")[0].decode()
    family, mode_spec, hash_name = cstr(8), cstr(40), cstr(72)
    payload, key_len = struct.unpack(">II", b[104:112])
    mk_digest, mk_salt = b[112:132], b[132:164]
    mk_iter = struct.unpack(">I", b[164:168])[0]
    for slot in range(8):
        off = 208 + 48 * slot
        active, iters = struct.unpack(">II", b[off:off + 8])
        if active != 0x00AC71F3:
            continue
        salt = b[off + 8:off + 40]
        km_off, stripes = struct.unpack(">II", b[off + 40:off + 48])
        slot_key = hashlib.pbkdf2_hmac(hash_name, passphrase, salt, iters, key_len)
        size = (key_len * stripes + 511) // 512 * 512
        material = SectorCipher(g, family, mode_spec, slot_key).decrypt(b[km_off * 512:km_off * 512 + size], 0)
        mk = af_merge(material, key_len, stripes, hash_name)
        if hashlib.pbkdf2_hmac(hash_name, mk, mk_salt, mk_iter, 20) == mk_digest:
            data = b[payload * 512:]
            data = data[:len(data) // 512 * 512]
            open(out, "wb").write(SectorCipher(g, family, mode_spec, mk).decrypt(data, 0))
            return
    sys.exit(1)


main()

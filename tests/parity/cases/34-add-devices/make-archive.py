#!/usr/bin/env python3
"""Regenerates devices.tar: python3 make-archive.py (run in this directory)."""
import tarfile


def node(tf, name, kind, mode, major=0, minor=0, uid=0, gid=0):
    ti = tarfile.TarInfo(name)
    ti.mtime = 1700000000
    ti.type = kind
    ti.mode = mode
    ti.uid, ti.gid = uid, gid
    ti.uname = ti.gname = ""
    ti.devmajor, ti.devminor = major, minor
    tf.addfile(ti)


with tarfile.open("devices.tar", "w", format=tarfile.PAX_FORMAT) as tf:
    node(tf, "devs/", tarfile.DIRTYPE, 0o755)
    node(tf, "devs/null-copy", tarfile.CHRTYPE, 0o666, 1, 3)
    node(tf, "devs/loop-copy", tarfile.BLKTYPE, 0o660, 7, 0, gid=6)
    node(tf, "devs/fifo", tarfile.FIFOTYPE, 0o620, uid=1000, gid=1000)

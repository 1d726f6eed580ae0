#!/usr/bin/env python3
"""Regenerates this case's archives: python3 make-archives.py (run in this directory)."""
import io
import tarfile


def add(tf, name, kind, data=b"", mode=0o644, uid=0, gid=0, link=""):
    ti = tarfile.TarInfo(name)
    ti.mtime = 1700000000
    ti.mode = mode
    ti.uid, ti.gid = uid, gid
    ti.uname = ti.gname = ""
    if kind == "dir":
        ti.type = tarfile.DIRTYPE
        tf.addfile(ti)
    elif kind == "file":
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    elif kind == "symlink":
        ti.type = tarfile.SYMTYPE
        ti.linkname = link
        tf.addfile(ti)
    elif kind == "hardlink":
        ti.type = tarfile.LNKTYPE
        ti.linkname = link
        tf.addfile(ti)


def members(tf, top):
    add(tf, f"{top}/", "dir", mode=0o755)
    add(tf, f"{top}/bin/", "dir", mode=0o755)
    add(tf, f"{top}/bin/tool", "file", b"#!/bin/sh\necho tool\n", mode=0o755, uid=1000, gid=1000)
    add(tf, f"{top}/etc/", "dir", mode=0o750, uid=0, gid=65534)
    add(tf, f"{top}/etc/conf", "file", b"key=value\n", mode=0o640, uid=0, gid=65534)
    add(tf, f"{top}/link", "symlink", link="bin/tool")
    # A hardlink entry carries the same metadata as its target, as tar(1) writes it.
    add(tf, f"{top}/hard", "hardlink", mode=0o640, uid=0, gid=65534, link=f"{top}/etc/conf")
    add(tf, f"{top}/setuid", "file", b"suid\n", mode=0o4755)
    add(tf, f"{top}/odd-owner", "file", b"odd\n", mode=0o600, uid=4321, gid=8765)
    # No entry for implied/ itself: the extractor has to make the parent.
    add(tf, f"{top}/implied/child", "file", b"child\n")


with tarfile.open("plain.tar", "w", format=tarfile.PAX_FORMAT) as tf:
    members(tf, "plain")
with tarfile.open("gz.tar.gz", "w:gz", format=tarfile.PAX_FORMAT) as tf:
    members(tf, "gz")
with tarfile.open("xz.tar.xz", "w:xz", format=tarfile.PAX_FORMAT) as tf:
    members(tf, "xz")

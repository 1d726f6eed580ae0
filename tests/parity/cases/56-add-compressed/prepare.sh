python3 - <<'PY'
import gzip, io, tarfile
def build(path, mode):
    with tarfile.open(path, mode) as t:
        for name, data, perm in (("dir/file.txt", b"file\n", 0o644), ("dir/exec.sh", b"#!/bin/sh\n", 0o755)):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), perm, 1600000000
            t.addfile(ti, io.BytesIO(data))
        ti = tarfile.TarInfo("dir/link")
        ti.type, ti.linkname, ti.mtime = tarfile.SYMTYPE, "file.txt", 1600000000
        t.addfile(ti)
build("a.tar.gz", "w:gz")
build("a.tar.bz2", "w:bz2")
build("a.tar.xz", "w:xz")
build("misnamed.txt", "w:gz")
with open("plain.gz", "wb") as f:
    f.write(gzip.compress(b"not a tar\n", mtime=0))
with open("fake.tar", "w") as f:
    f.write("not a tar either\n")
PY

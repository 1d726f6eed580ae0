python3 - <<'PY'
import io, tarfile
with tarfile.open("over.tar", "w") as t:
    def add(name, kind, data=b"", uid=0, gid=0, perm=0o644):
        ti = tarfile.TarInfo(name)
        ti.uid, ti.gid, ti.mode, ti.mtime = uid, gid, perm, 1600000000
        if kind == "dir":
            ti.type = tarfile.DIRTYPE
            t.addfile(ti)
        else:
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    add("base", "dir", perm=0o755)
    add("base/keep", "dir", uid=1000, gid=1000, perm=0o700)
    add("base/keep/added", "file", b"added\n")
    add("base/file", "file", b"replaced by the archive\n", 1234, 5678, 0o600)
    add("base/opaque/c", "file", b"c\n")
PY

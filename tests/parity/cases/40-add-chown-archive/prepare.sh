# Archives with owners and modes set entry by entry (python's tarfile, no ./ entry).
python3 - <<'PY'
import io, tarfile
def build(path, mode):
    with tarfile.open(path, mode) as t:
        def add(name, kind, data=b"", uid=0, gid=0, perm=0o644):
            ti = tarfile.TarInfo(name)
            ti.uid, ti.gid, ti.mode, ti.mtime = uid, gid, perm, 1600000000
            if kind == "dir":
                ti.type = tarfile.DIRTYPE
                t.addfile(ti)
            else:
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
        add("top.txt", "file", b"top\n", 1234, 5678, 0o640)
        add("sub", "dir", uid=42, gid=43, perm=0o750)
        add("sub/inner.txt", "file", b"inner\n", 0, 0, 0o600)
        add("rootowned.txt", "file", b"root\n", 0, 0, 0o644)
build("arch.tar", "w")
build("arch.tar.gz", "w:gz")
PY
echo plain > plain.txt

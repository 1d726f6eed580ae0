#!/usr/bin/env python3
"""Compares two container images, each given as an OCI layout plus the umoci bundle unpacked
from it (scripts/parity/run.sh makes both, for a reference builder's and kiln's build of a case).

    compare.py pair --case NAME --a-layout DIR --a-bundle DIR --b-layout DIR --b-bundle DIR
                    [--a-name buildkit] [--b-name kiln] [--known FILE --known-ref REF]
                    [--summary-file FILE]
    compare.py summary --layout DIR --bundle DIR      one line about one image
    compare.py dump --layout DIR --bundle DIR         every path and config field of one image
    compare.py tag-layout DIR TAG                     add ref name TAG to a layout's only manifest
    compare.py oci-view SRC DST TAG                   DST: SRC's image TAG with OCI media types
    compare.py find-values --value-file F... PATH...  is a secret's value in a layout or log?

Root filesystem (bundle/rootfs), per path: type, permission bits (with setuid, setgid, sticky),
uid, gid, size and sha256 of regular files, symlink target, hardlink group (the other paths
sharing the inode), xattrs, device major/minor. Mtimes are not compared; how many differ is
printed for information.

Image config (read from the layout: index.json -> manifest -> config blob, no umoci): every key of
`config` (Env, Cmd, Entrypoint, WorkingDir, User, ExposedPorts, Volumes, Labels, StopSignal,
Healthcheck, OnBuild, Shell, and any other one; empty values count as absent), `author`,
`architecture`, `os`, `variant`.

Layers (read from the layout's blobs): `layers`, the number of layers that change something. A
layer that changes nothing but mtimes (empty; or only directories the layers below have with the
same mode and owner, and empty RUN mount points) is printed, not counted: see layer_report.
Within each image, the history entries that made a layer, the diff_ids and the manifest's
layers must agree in number (`layers.consistency`).

What is ignored is printed, never hidden:
- the label io.buildah.version (buildah's identity label) and config.Hostname (buildah's
  docker-format config records its build container's name there);
- runtime artifacts: a path from RUNTIME_ARTIFACTS (mount points a RUN sandbox makes: /proc,
  /sys, /dev, /etc/hosts, /etc/resolv.conf, /etc/hostname, /run, /run/.containerenv, ...; and
  /etc, made as their parent on a base without one) that exists in one image only and is empty
  (empty dir or empty file). In both images, or with content, it is compared like any other
  path.

Known differences: FILE has lines `reference<TAB>case<TAB>field-or-path<TAB>reason` (# comments
allowed); a line applies when its reference (`buildkit`, `buildah`, or a pattern such as `*`)
matches --known-ref. `case` and `field-or-path` are shell patterns (fnmatch); a difference whose
key matches is reported as known. Keys are a path (`/etc/hosts`) or `config.Env`, `author`,
`os`, `layers`, ...; a list that holds the same entries in another
order has the key `config.Env.order` (etc.). Without --known-ref no line applies.

Exit status of `pair`: 0 same, 3 differences that are all known, 1 other differences,
2 error (a layout or bundle could not be read).
"""

import argparse
import bz2
import fnmatch
import gzip
import io
import lzma
import shutil
import subprocess
import hashlib
import json
import os
import stat
import sys
import tarfile

RUNTIME_ARTIFACTS = {
    "/proc",
    "/sys",
    "/dev",
    "/dev/pts",
    "/etc",
    "/dev/shm",
    "/dev/mqueue",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/hostname",
    "/etc/mtab",
    "/run",
    "/run/.containerenv",
    "/run/secrets",
    "/.dockerenv",
}
IGNORED_LABELS = {"io.buildah.version"}
# Keys of `config` that are ignored (printed when set): buildah's docker-format config records
# the build container's random name as Hostname.
IGNORED_CONFIG_KEYS = {"Hostname"}
# Top-level config keys compared besides `config`.
TOP_KEYS = ["author", "architecture", "os", "variant"]


class LayoutError(Exception):
    pass


# ------------------------------------------------------------------------------------------
# OCI layout
# ------------------------------------------------------------------------------------------
def blob(layout, digest):
    algo, hexd = digest.split(":", 1)
    path = os.path.join(layout, "blobs", algo, hexd)
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise LayoutError(f"{layout}: blob {digest}: {e}")


def pick_manifest(layout, tag):
    try:
        with open(os.path.join(layout, "index.json")) as f:
            index = json.load(f)
    except (OSError, ValueError) as e:
        raise LayoutError(f"{layout}: index.json: {e}")
    manifests = index.get("manifests") or []
    if not manifests:
        raise LayoutError(f"{layout}: index.json lists no manifest")
    named = [m for m in manifests if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") == tag]
    if named:
        desc = named[0]
    elif len(manifests) == 1:
        desc = manifests[0]
    else:
        raise LayoutError(f"{layout}: {len(manifests)} manifests and none named {tag!r}")
    doc = json.loads(blob(layout, desc["digest"]))
    # An index (image list): take linux/amd64, else the first.
    depth = 0
    while "manifests" in doc and depth < 4:
        subs = doc["manifests"]
        chosen = None
        for m in subs:
            p = m.get("platform") or {}
            if p.get("os") == "linux" and p.get("architecture") == "amd64":
                chosen = m
                break
        chosen = chosen or subs[0]
        doc = json.loads(blob(layout, chosen["digest"]))
        depth += 1
    return doc


def read_image(layout, tag="latest"):
    manifest = pick_manifest(layout, tag)
    config = json.loads(blob(layout, manifest["config"]["digest"]))
    return manifest, config


def tag_layout(layout, tag):
    path = os.path.join(layout, "index.json")
    with open(path) as f:
        index = json.load(f)
    manifests = index.get("manifests") or []
    for m in manifests:
        if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") == tag:
            return 0
    if len(manifests) != 1:
        print(f"{layout}: {len(manifests)} manifests, none named {tag!r}: cannot tag", file=sys.stderr)
        return 1
    manifests[0].setdefault("annotations", {})["org.opencontainers.image.ref.name"] = tag
    with open(path, "w") as f:
        json.dump(index, f)
    print(f"{layout}: named its only manifest {tag!r}")
    return 0


DOCKER_TO_OCI = {
    "application/vnd.docker.distribution.manifest.v2+json": "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.container.image.v1+json": "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar": "application/vnd.oci.image.layer.v1.tar",
}


def oci_view(src, dst, tag):
    """Writes DST, a layout whose manifest TAG is SRC's with OCI media types (blobs hardlinked),
    for umoci, which reads no docker media types (and skopeo 1.9 finds no docker-typed
    manifest in an OCI layout by its ref name)."""
    manifest = pick_manifest(src, tag)
    os.makedirs(os.path.join(dst, "blobs", "sha256"), exist_ok=True)
    for d in [manifest["config"]] + list(manifest.get("layers") or []):
        algo, hexd = d["digest"].split(":", 1)
        target = os.path.join(dst, "blobs", algo, hexd)
        if not os.path.exists(target):
            os.link(os.path.join(src, "blobs", algo, hexd), target)
    new = dict(manifest)
    new["mediaType"] = DOCKER_TO_OCI.get(manifest.get("mediaType"), manifest.get("mediaType") or "application/vnd.oci.image.manifest.v1+json")
    new["config"] = dict(manifest["config"], mediaType=DOCKER_TO_OCI.get(manifest["config"]["mediaType"], manifest["config"]["mediaType"]))
    new["layers"] = [dict(l, mediaType=DOCKER_TO_OCI.get(l["mediaType"], l["mediaType"])) for l in manifest.get("layers") or []]
    raw = json.dumps(new).encode()
    digest = hashlib.sha256(raw).hexdigest()
    with open(os.path.join(dst, "blobs", "sha256", digest), "wb") as f:
        f.write(raw)
    with open(os.path.join(dst, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": new["mediaType"], "digest": "sha256:" + digest, "size": len(raw),
        "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    with open(os.path.join(dst, "index.json"), "w") as f:
        json.dump(index, f)
    print(f"{dst}: {src}:{tag} with OCI media types")
    return 0


# ------------------------------------------------------------------------------------------
# Root filesystem
# ------------------------------------------------------------------------------------------
def file_type(mode):
    for test, name in (
        (stat.S_ISDIR, "dir"),
        (stat.S_ISREG, "file"),
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISCHR, "char-device"),
        (stat.S_ISBLK, "block-device"),
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return name
    return "unknown"


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_xattrs(path):
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out = {}
    for n in sorted(names):
        try:
            v = os.getxattr(path, n, follow_symlinks=False)
        except OSError as e:
            v = f"<unreadable: {e.strerror}>".encode()
        out[n] = v.hex() if any(b < 32 and b not in (9, 10) for b in v) else v.decode("utf-8", "replace")
    return out


def scan_rootfs(rootfs):
    """path -> attribute dict, with `/` as the rootfs itself."""
    entries = {}
    inodes = {}

    def visit(abs_path, rel):
        st = os.lstat(abs_path)
        kind = file_type(st.st_mode)
        e = {
            "type": kind,
            "mode": "%04o" % stat.S_IMODE(st.st_mode),
            "uid": st.st_uid,
            "gid": st.st_gid,
            "mtime": st.st_mtime_ns,
        }
        if kind == "file":
            e["size"] = st.st_size
            e["sha256"] = sha256_file(abs_path)
            if st.st_size <= PREVIEW_BYTES:
                with open(abs_path, "rb") as f:
                    e["preview"] = f.read()
            if st.st_nlink > 1:
                inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
        elif kind == "symlink":
            e["target"] = os.readlink(abs_path)
        elif kind in ("char-device", "block-device"):
            e["device"] = "%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))
        x = read_xattrs(abs_path)
        if x:
            e["xattrs"] = x
        if kind == "dir":
            e["children"] = 0
            for name in sorted(os.listdir(abs_path)):
                e["children"] += 1
                visit(os.path.join(abs_path, name), (rel.rstrip("/") + "/" + name))
        entries[rel] = e

    visit(rootfs, "/")
    for paths in inodes.values():
        if len(paths) > 1:
            for p in paths:
                entries[p]["hardlinks"] = sorted(q for q in paths if q != p)
    return entries


# Small files' content is shown in a difference (never compared apart from sha256).
PREVIEW_BYTES = 256

COMPARED_ATTRS = ["type", "mode", "uid", "gid", "size", "sha256", "target", "device", "hardlinks", "xattrs"]


def describe(e):
    parts = [e["type"], e["mode"], "%d:%d" % (e["uid"], e["gid"])]
    if "size" in e:
        parts.append("%d bytes" % e["size"])
    if "target" in e:
        parts.append("-> " + e["target"])
    if "device" in e:
        parts.append("dev " + e["device"])
    if e.get("hardlinks"):
        parts.append("hardlinked with " + ",".join(e["hardlinks"]))
    if e.get("xattrs"):
        parts.append("xattrs " + json.dumps(e["xattrs"], sort_keys=True))
    return " ".join(parts)


def is_empty(e):
    if e["type"] == "dir":
        return e.get("children", 0) == 0
    if e["type"] == "file":
        return e.get("size", 0) == 0
    return False


# ------------------------------------------------------------------------------------------
# Layers
# ------------------------------------------------------------------------------------------
def layer_report(layout, manifest):
    """One (entries, no_op) per layer of MANIFEST, in order. A layer is a no-op when it changes
    nothing but mtimes: it is empty, or each entry is a directory that the layers below already
    have with the same mode and owner, or an empty dir or file at a RUNTIME_ARTIFACTS path (a RUN
    sandbox's mount point). Such layers are what a builder commits for a step that changed
    nothing: dockerd 20.10 keeps an empty layer for WORKDIR of an existing dir, and its RUN
    layers hold /etc (the parent of the /etc/hosts and /etc/resolv.conf mount stubs, its mtime
    changed) and, the first time, empty /dev, /proc, /sys."""
    state = {}  # path -> (type, mode, uid, gid)
    out = []
    for desc in manifest.get("layers") or []:
        algo, hexd = desc["digest"].split(":", 1)
        path = os.path.join(layout, "blobs", algo, hexd)
        entries = 0
        no_op = True
        try:
            tf = tarfile.open(path, "r:*")
        except (tarfile.TarError, OSError) as e:
            raise LayoutError(f"{layout}: layer {desc['digest']}: {e}")
        with tf:
            for ti in tf:
                entries += 1
                name = os.path.normpath("/" + ti.name)
                if name.startswith("//"):
                    name = name[1:]
                base = os.path.basename(name)
                parent = os.path.dirname(name)
                if base == ".wh..wh..opq":
                    no_op = False
                    for q in [q for q in state if q.startswith(parent.rstrip("/") + "/")]:
                        del state[q]
                    continue
                if base.startswith(".wh."):
                    no_op = False
                    gone = os.path.join(parent, base[4:])
                    for q in [q for q in state if q == gone or q.startswith(gone + "/")]:
                        del state[q]
                    continue
                kind = "dir" if ti.isdir() else "file" if ti.isreg() else "symlink" if ti.issym() else \
                    "hardlink" if ti.islnk() else "other"
                attrs = (kind, ti.mode & 0o7777, ti.uid, ti.gid)
                if kind == "dir" and state.get(name) == attrs:
                    pass
                elif name in RUNTIME_ARTIFACTS and (kind == "dir" or (kind == "file" and ti.size == 0)):
                    pass
                else:
                    no_op = False
                if kind != "dir" and state.get(name, ("",))[0] == "dir":
                    for q in [q for q in state if q.startswith(name + "/")]:
                        del state[q]
                state[name] = attrs
        out.append((entries, no_op))
    return out


# ------------------------------------------------------------------------------------------
# Config
# ------------------------------------------------------------------------------------------
def empty(v):
    return v is None or v == "" or v == [] or v == {} or v is False


def config_fields(config):
    """key -> value for every compared config field (empty values dropped)."""
    out = {}
    inner = dict(config.get("config") or {})
    labels = dict(inner.get("Labels") or {})
    for k in IGNORED_LABELS:
        labels.pop(k, None)
    inner["Labels"] = labels
    for k, v in inner.items():
        if k in IGNORED_CONFIG_KEYS:
            continue
        if not empty(v):
            out["config." + k] = v
    for k in TOP_KEYS:
        if not empty(config.get(k)):
            out[k] = config[k]
    history = config.get("history") or []
    out["history.layers"] = sum(1 for h in history if not h.get("empty_layer"))
    out["history.entries"] = len(history)
    out["rootfs.diff_ids"] = len((config.get("rootfs") or {}).get("diff_ids") or [])
    return out


# Fields that are printed but whose difference does not count: builders disagree on recording
# metadata-only instructions in history, and on committing layers that change nothing (see
# layer_report); what is compared is `layers`, the number of layers that change something.
INFO_FIELDS = {"history.entries", "history.layers", "rootfs.diff_ids"}


def show(v):
    return json.dumps(v, sort_keys=True)


# ------------------------------------------------------------------------------------------
# Known differences
# ------------------------------------------------------------------------------------------
def load_known(path, ref):
    """The (case, key, reason) rules of FILE that apply to reference REF."""
    rules = []
    if not path or not ref:
        return rules
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.split("\t")
            if len(parts) < 3:
                raise LayoutError(f"{path}:{n}: expected reference<TAB>case<TAB>field-or-path<TAB>reason")
            if fnmatch.fnmatchcase(ref, parts[0]):
                rules.append((parts[1], parts[2], parts[3] if len(parts) > 3 else ""))
    return rules


def known_reason(rules, case, key):
    for c, k, reason in rules:
        if fnmatch.fnmatchcase(case, c) and fnmatch.fnmatchcase(key, k):
            return reason or "known"
    return None


# ------------------------------------------------------------------------------------------
# Commands
# ------------------------------------------------------------------------------------------
def load(layout, bundle):
    manifest, config = read_image(layout)
    rootfs = os.path.join(bundle, "rootfs")
    if not os.path.isdir(rootfs):
        raise LayoutError(f"{bundle}: no rootfs/")
    return manifest, config, scan_rootfs(rootfs)


def cmd_pair(args):
    try:
        ma, ca, fa = load(args.a_layout, args.a_bundle)
        mb, cb, fb = load(args.b_layout, args.b_bundle)
    except (LayoutError, OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    A, B = args.a_name, args.b_name
    try:
        rules = load_known(args.known, args.known_ref)
    except (LayoutError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    diffs = []  # (key, message)
    ignored = []
    info = []

    # Files.
    for path in sorted(set(fa) | set(fb)):
        ea, eb = fa.get(path), fb.get(path)
        if ea is None or eb is None:
            present, who = (ea, A) if ea is not None else (eb, B)
            if path in RUNTIME_ARTIFACTS and is_empty(present):
                ignored.append((f"empty mount points only in {who}", f"{path}: only in {who}, empty runtime artifact ({describe(present)})"))
                continue
            diffs.append((path, f"only in {who}: {describe(present)}"))
            continue
        changed = [k for k in COMPARED_ATTRS if ea.get(k) != eb.get(k)]
        if changed:
            detail = "; ".join(f"{k} {show(ea.get(k))} vs {show(eb.get(k))}" for k in changed if k != "sha256")
            if "sha256" in changed:
                detail = (detail + "; " if detail else "") + "content differs"
                if "preview" in ea and "preview" in eb:
                    detail += f": {ea['preview']!r} vs {eb['preview']!r}"
            diffs.append((path, detail))
    common = set(fa) & set(fb)
    mtime_diff = sorted(p for p in common if fa[p]["mtime"] != fb[p]["mtime"])
    info.append(f"mtimes (not compared): {len(mtime_diff)} of {len(common)} common paths differ")

    # Config.
    xa, xb = config_fields(ca), config_fields(cb)
    for k in sorted(set(xa) | set(xb)):
        va, vb = xa.get(k), xb.get(k)
        if va == vb:
            continue
        msg = f"{A} {show(va)} vs {B} {show(vb)}"
        if k in INFO_FIELDS:
            info.append(f"{k} (not compared): {msg}")
            continue
        if isinstance(va, list) and isinstance(vb, list) and sorted(map(show, va)) == sorted(map(show, vb)):
            # Same entries, another order (Env): its own key, so that a known-differences line
            # can allow the order alone.
            diffs.append((k + ".order", "same entries, other order: " + msg))
            continue
        diffs.append((k, msg))
    # Layers: those that change something are compared; no-op layers are printed.
    try:
        ra, rb = layer_report(args.a_layout, ma), layer_report(args.b_layout, mb)
    except (LayoutError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    la_n = sum(1 for _, no_op in ra if not no_op)
    lb_n = sum(1 for _, no_op in rb if not no_op)
    if la_n != lb_n:
        diffs.append(("layers", f"layers that change something: {A} {la_n} vs {B} {lb_n}"))
    for who, r, x in ((A, ra, xa), (B, rb, xb)):
        noops = [i for i, (_, no_op) in enumerate(r) if no_op]
        if noops:
            ignored.append(("no-op layers", f"{len(noops)} layer(s) of {who} change nothing but mtimes (layer "
                            + ", ".join(f"{i} ({r[i][0]} entries)" for i in noops) + ")"))
        if not (x.get("history.layers") == x.get("rootfs.diff_ids") == len(r)):
            diffs.append(("layers.consistency", f"{who}: {x.get('history.layers')} history entries with a layer, "
                          f"{x.get('rootfs.diff_ids')} diff_ids, {len(r)} layers in the manifest"))
    for who, c in ((A, ca), (B, cb)):
        for k in sorted(IGNORED_CONFIG_KEYS):
            v = (c.get("config") or {}).get(k)
            if not empty(v):
                ignored.append((f"config.{k}", f"config.{k}={v!r} in {who}"))
    la = (ca.get("config") or {}).get("Labels") or {}
    lb = (cb.get("config") or {}).get("Labels") or {}
    for lab in sorted(IGNORED_LABELS):
        for who, labels in ((A, la), (B, lb)):
            if lab in labels:
                ignored.append((f"label {lab}", f"label {lab}={labels[lab]!r} in {who}"))
    if la_n != lb_n or xa.get("history.layers") != xb.get("history.layers"):
        for who, c in ((A, ca), (B, cb)):
            info.append(f"history of {who}:")
            for h in c.get("history") or []:
                mark = " (empty_layer)" if h.get("empty_layer") else ""
                info.append(f"    {h.get('created_by', '')[:110]}{mark}")

    unknown = []
    known = []
    for key, msg in diffs:
        reason = known_reason(rules, args.case, key)
        if reason is None:
            unknown.append((key, msg))
        else:
            known.append((key, msg, reason))

    for key, msg in unknown:
        print(f"DIFF  {key}: {msg}")
    for key, msg, reason in known:
        print(f"KNOWN {key}: {msg} [{reason}]")
    for _, line in ignored:
        print(f"ignored: {line}")
    for line in info:
        print(f"info: {line}")
    if not diffs:
        print(f"same: {len(common)} paths, {la_n} layers")

    if args.summary_file:
        if unknown:
            head = [f"{k}: {m}" for k, m in unknown[:4]]
            more = f" (+{len(unknown) - 4} more)" if len(unknown) > 4 else ""
            summary = f"{len(unknown)} difference(s): " + "; ".join(head) + more
        elif known:
            summary = f"{len(known)} known: " + "; ".join(sorted({k for k, _, _ in known}))[:200]
        else:
            summary = f"{len(common)} paths, {la_n} layers"
        if ignored:
            counts = {}
            for name, _ in ignored:
                counts[name] = counts.get(name, 0) + 1
            summary += " (ignored: " + ", ".join(f"{n} ({c})" if c > 1 else n for n, c in counts.items()) + ")"
        with open(args.summary_file, "w") as f:
            f.write(summary + "\n")
    if unknown:
        return 1
    return 3 if known else 0


def cmd_summary(args):
    manifest, config, files = load(args.layout, args.bundle)
    x = config_fields(config)
    keys = [k for k in ("config.Entrypoint", "config.Cmd", "config.User", "config.WorkingDir") if k in x]
    extra = ", ".join(f"{k[7:]}={show(x[k])}" for k in keys)
    print(f"{len(files)} paths, {x['rootfs.diff_ids']} layers, {x['history.entries']} history entries" + (f", {extra}" if extra else ""))
    return 0


def cmd_dump(args):
    manifest, config, files = load(args.layout, args.bundle)
    for k, v in sorted(config_fields(config).items()):
        print(f"{k} = {show(v)}")
    for h in config.get("history") or []:
        print(f"history: {h.get('created_by', '')}{' (empty_layer)' if h.get('empty_layer') else ''}")
    for path in sorted(files):
        e = files[path]
        extra = " sha256:" + e["sha256"][:12] if "sha256" in e else ""
        print(f"{path}  {describe(e)}{extra}")
    return 0


# ------------------------------------------------------------------------------------------
# Secret values
# ------------------------------------------------------------------------------------------
MIN_VALUE_LEN = 12


def open_decompressed(path):
    """PATH's bytes, decompressed when it is gzip, bzip2, xz or zstd (a layer blob)."""
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(path, "rb")
    if magic[:3] == b"BZh":
        return bz2.open(path, "rb")
    if magic == b"\xfd7zXZ\x00":
        return lzma.open(path, "rb")
    if magic[:4] == b"\x28\xb5\x2f\xfd":
        if not shutil.which("zstd"):
            raise LayoutError(f"{path}: zstd-compressed and no zstd command to read it")
        out = subprocess.run(["zstd", "-dc", path], check=True, capture_output=True).stdout
        return io.BytesIO(out)
    return open(path, "rb")


def stream_finds(fh, values):
    """The values that occur in the stream FH (read in chunks; a value across two chunks is
    found too)."""
    keep = max(len(v) for v in values) - 1
    tail = b""
    found = set()
    while True:
        chunk = fh.read(1 << 20)
        if not chunk:
            break
        buf = tail + chunk
        for v in values:
            if v in buf:
                found.add(v)
        tail = buf[-keep:] if keep > 0 else b""
    return found


def cmd_find_values(args):
    """Exit 1 when a value (each --value-file's content, trailing newlines stripped) occurs in
    a PATH: a file (a build log) or an OCI layout (every blob, layers decompressed)."""
    values = {}
    for vf in args.value_file:
        with open(vf, "rb") as f:
            v = f.read().rstrip(b"\r\n")
        if len(v) < MIN_VALUE_LEN:
            print(f"{vf}: a value of {len(v)} bytes is too short to search for (at least {MIN_VALUE_LEN})", file=sys.stderr)
            return 2
        values[v] = vf
    hits = []
    for path in args.paths:
        files = []
        if os.path.isdir(path):
            for root, _, names in os.walk(path):
                files += [os.path.join(root, n) for n in sorted(names)]
        else:
            files.append(path)
        for fp in files:
            try:
                with open_decompressed(fp) as fh:
                    found = stream_finds(fh, list(values))
            except (OSError, EOFError, lzma.LZMAError, subprocess.CalledProcessError, LayoutError) as e:
                print(f"{fp}: {e}", file=sys.stderr)
                return 2
            hits += [f"the value of {values[v]} is in {fp}" for v in found]
    for h in hits:
        print(h)
    return 1 if hits else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("pair")
    pp.add_argument("--case", required=True)
    pp.add_argument("--a-name", default="buildkit")
    pp.add_argument("--a-layout", required=True)
    pp.add_argument("--a-bundle", required=True)
    pp.add_argument("--b-name", default="kiln")
    pp.add_argument("--b-layout", required=True)
    pp.add_argument("--b-bundle", required=True)
    pp.add_argument("--known")
    pp.add_argument("--known-ref", help="the reference whose known differences apply")
    pp.add_argument("--summary-file")
    for name in ("summary", "dump"):
        sp = sub.add_parser(name)
        sp.add_argument("--layout", required=True)
        sp.add_argument("--bundle", required=True)
    tp = sub.add_parser("tag-layout")
    tp.add_argument("layout")
    tp.add_argument("tag")
    op = sub.add_parser("oci-view")
    op.add_argument("src")
    op.add_argument("dst")
    op.add_argument("tag")
    fp = sub.add_parser("find-values")
    fp.add_argument("--value-file", action="append", required=True)
    fp.add_argument("paths", nargs="+")
    args = p.parse_args()
    if args.cmd == "find-values":
        return cmd_find_values(args)
    if args.cmd == "oci-view":
        return oci_view(args.src, args.dst, args.tag)
    if args.cmd == "pair":
        return cmd_pair(args)
    if args.cmd == "summary":
        return cmd_summary(args)
    if args.cmd == "dump":
        return cmd_dump(args)
    return tag_layout(args.layout, args.tag)


if __name__ == "__main__":
    sys.exit(main())

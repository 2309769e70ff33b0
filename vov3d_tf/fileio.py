"""File access for every path the project reads or writes, local or not.

Everything goes through `tf.io.gfile`, so a path may be local (`data/ssv2`) or on any filesystem
TensorFlow has registered: `gs://` (built in), `s3://` / `hdfs://` (TF's filesystem plugins),
and `ram://`, TensorFlow's in-process memory filesystem, which behaves like an object store and
is what the tests use to prove that nothing assumes a local disk.

    open(path, mode)            a gfile handle (file-like: read/write/seek/tell), for PyAV/PIL too
    exists, isdir, glob, listdir, walk, makedirs, remove, rename, getsize
    read_text / write_text, read_json / write_json, read_bytes, sha256
    atomic_write_text / atomic_write_bytes   the final name is never a half-written file
    local_copy(path)            a local path to read, for a library that cannot take a handle
    local_output(path)          a local path to write, copied to `path` when the block ends

Atomic writes: the data goes to `{path}.tmp-{pid}-{random}` and is renamed to `path`. On a local
disk the rename is atomic. Object stores have no atomic rename: gfile's rename there is a
server-side copy then a delete. The final object still never holds partial data (an object
becomes visible only once complete), but a crash between copy and delete can leave the
`.tmp-` object behind; the shard builder removes such leftovers at its next run.
"""
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import uuid

import tensorflow as tf

gfile = tf.io.gfile
TMP_MARK = ".tmp-"


def is_local(path):
    """True for a path on the local disk (no `scheme://`)."""
    return "://" not in os.fspath(path)


def join(*parts):
    return os.path.join(*[os.fspath(p) for p in parts])


def abspath(path):
    """The absolute form of a local path; other paths are already absolute."""
    path = os.fspath(path)
    return os.path.abspath(path) if is_local(path) else path


def dirname(path):
    return os.path.dirname(os.fspath(path))


def open(path, mode="r"):  # noqa: A001  (the module's file-opening function, like io.open)
    """A tf.io.gfile.GFile: a file object with read/write/seek/tell, usable as a context manager
    and by PyAV (`av.open(handle)`) and Pillow (`Image.open(handle)`). Writing ("w") replaces
    the file on every filesystem (TF's ram:// appends to an existing file instead, so a
    non-local file is deleted first)."""
    path = os.fspath(path)
    if mode.startswith("w") and not is_local(path) and gfile.exists(path):
        gfile.remove(path)
    return gfile.GFile(path, mode)


def exists(path):
    return gfile.exists(os.fspath(path))


def isdir(path):
    return gfile.isdir(os.fspath(path))


def glob(pattern):
    """Matching paths, sorted (gfile.glob's order is filesystem-dependent)."""
    return sorted(gfile.glob(os.fspath(pattern)))


def listdir(path):
    """Entry names of a directory, sorted; gfile marks sub-directories on object stores with a
    trailing `/`, which is removed."""
    return sorted(name.rstrip("/") for name in gfile.listdir(os.fspath(path)))


def walk(top):
    """(dirpath, dirnames, filenames) like os.walk, top-down, dirnames sortable in place."""
    return gfile.walk(os.fspath(top))


def makedirs(path):
    gfile.makedirs(os.fspath(path))


def remove(path):
    gfile.remove(os.fspath(path))


def rmtree(path):
    """Deletes `path` and everything under it."""
    path = os.fspath(path)
    try:
        gfile.rmtree(path)
    except tf.errors.NotFoundError:
        # gfile's rmtree can fail on object stores and ram:// (a "folder" never created as one;
        # ram:// lists by name prefix, so "assets" also lists the ".extra" of "assets.extra"):
        # delete the files that exist one by one, then the emptied folders.
        entries = list(walk(path))
        if not entries:
            if gfile.exists(path):
                raise
            return  # deleted; the error was about a phantom name
        for dirpath, _, filenames in entries:
            for name in filenames:
                if gfile.exists(join(dirpath, name)):
                    gfile.remove(join(dirpath, name))
        for dirpath, _, _ in reversed(entries):
            try:
                gfile.rmtree(dirpath)
            except tf.errors.NotFoundError:
                pass


def rename(src, dst, overwrite=True):
    gfile.rename(os.fspath(src), os.fspath(dst), overwrite=overwrite)


def copy(src, dst, overwrite=True):
    src, dst = os.fspath(src), os.fspath(dst)
    if overwrite and not is_local(dst) and gfile.exists(dst):
        gfile.remove(dst)  # ram:// would append to the existing file (see `open`)
    gfile.copy(src, dst, overwrite=overwrite)


def getsize(path):
    return gfile.stat(os.fspath(path)).length


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def sha256(path, chunk=1 << 20):
    """Hex SHA-256 of the file at `path`, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def read_text(path):
    with open(path, "r") as f:
        return f.read()


def read_json(path):
    return json.loads(read_text(path))


def write_text(path, text):
    with open(path, "w") as f:
        f.write(text)


def write_json(path, obj, **kwargs):
    write_text(path, json.dumps(obj, **kwargs))


def temp_name(path):
    """A unique temporary sibling of `path` (same directory, so a rename stays on one bucket)."""
    return f"{os.fspath(path)}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"


def atomic_write_bytes(path, data):
    """Writes to a temporary sibling, then renames it to `path` (see the module docstring)."""
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        rename(tmp, path, overwrite=True)
    except BaseException:
        if exists(tmp):
            remove(tmp)
        raise


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj, **kwargs):
    atomic_write_text(path, json.dumps(obj, **kwargs))


@contextlib.contextmanager
def local_copy(path):
    """A local file path with the contents of `path`, for libraries that cannot read a file
    object or a non-local path. A local `path` is given as it is; any other is copied to a
    temporary file (deleted when the block ends). Keep this for the few libraries that truly
    need it: everything else reads through `open`."""
    path = os.fspath(path)
    if is_local(path):
        yield path
        return
    # The library needs an OS path: stream the object to a local temporary file.
    fd, tmp = tempfile.mkstemp(suffix=os.path.splitext(path)[1])
    try:
        with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
        yield tmp
    finally:
        os.remove(tmp)


@contextlib.contextmanager
def local_output(path):
    """A local path to write `path` through, for libraries that can only write an OS file (e.g.
    a file they reopen by name): a local `path` is given as it is; otherwise a temporary local
    file is given and copied to `path` when the block ends without an error (then deleted)."""
    path = os.fspath(path)
    if is_local(path):
        yield path
        return
    # The library writes an OS file: write it locally, then copy it up in one piece.
    fd, tmp = tempfile.mkstemp(suffix=os.path.splitext(path)[1])
    os.close(fd)
    try:
        yield tmp
        copy(tmp, path, overwrite=True)
    finally:
        os.remove(tmp)


def make_temp_dir(parent, prefix=".tmp-"):
    """A new uniquely named folder inside `parent` (created), for writing a tree before
    `move_tree` puts it in place."""
    parent = os.fspath(parent)
    if is_local(parent):
        return tempfile.mkdtemp(prefix=prefix, dir=parent)
    path = join(parent, f"{prefix}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    makedirs(path)
    return path


def copytree(src, dst, last=()):
    """Copies every file under `src` to the same relative path under `dst`; files whose name is
    in `last` are copied after all the others (a reader that waits for them sees a whole tree)."""
    src, dst = os.fspath(src).rstrip("/"), os.fspath(dst).rstrip("/")
    files = []
    for dirpath, _, filenames in walk(src):
        rel = dirpath.rstrip("/")[len(src):].lstrip("/")
        makedirs(join(dst, rel) if rel else dst)
        files += [(join(dirpath, n), join(dst, rel, n) if rel else join(dst, n)) for n in filenames
                  if exists(join(dirpath, n))]  # ram:// lists by prefix: skip phantom names
    files.sort(key=lambda f: os.path.basename(f[0]) in last)
    for a, b in files:
        copy(a, b, overwrite=True)


def move_tree(src, dst, last=("saved_model.pb",)):
    """Moves the folder `src` to `dst`. Locally one atomic rename. Object stores (and ram://)
    rename objects, not folders: the files are copied (`last` ones at the end, so a SavedModel
    is loadable once its saved_model.pb exists), then `src` is deleted."""
    if is_local(src) and is_local(dst):
        gfile.rename(os.fspath(src), os.fspath(dst), overwrite=False)
        return
    copytree(src, dst, last=last)
    rmtree(src)

"""numbanet.book._pickle (restricted unpickling) and numbanet.book.mnist
(the book's load_mnist, the checked download against a loopback server, the
stand-in files). Nothing here touches the internet or the book's files."""

import collections
import functools
import gzip
import hashlib
import http.server
import io
import os
import pickle
import shutil
import threading
import urllib.error

import numpy as np
import pytest

from numbanet.book import _pickle, mnist

# --- restricted unpickler -------------------------------------------------------------


def _book_params(rng):
    # The layout of the book's ch07 params.pkl: a dict of float64 arrays.
    shapes = {"W1": (30, 1, 5, 5), "b1": (30,), "W2": (4320, 100), "b2": (100,), "W3": (100, 10), "b3": (10,)}
    return {k: rng.standard_normal(s) for k, s in shapes.items()}


def _same(a, b):
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    else:
        assert a == b or (a != a and b != b)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_loads_the_books_layouts(tmp_path, protocol):
    rng = np.random.default_rng(0)
    params = _book_params(rng)
    mnist_like = {"train_img": rng.integers(0, 256, (6, 784), dtype=np.uint8),
                  "train_label": np.array([5, 0, 4, 1, 9, 2], np.uint8),
                  "test_img": rng.integers(0, 256, (2, 784), dtype=np.uint8), "test_label": np.array([7, 2], np.uint8)}
    other = {"f32": rng.standard_normal((3, 2)).astype(np.float32), "fortran": np.asfortranarray(np.ones((2, 3))),
             "scalars": [np.float64(1.5), np.float32(2.5), np.int64(-3), np.uint8(7), 1.0, 2, True, None, "s", b"b"],
             "tuple": (1, (2.0, np.dtype("f4"))), "ordered": collections.OrderedDict(a=np.arange(3)),
             "empty": np.zeros((0, 3)), "zero_d": np.array(4.0), "nan": np.array([np.nan, np.inf])}
    for i, obj in enumerate((params, mnist_like, other)):
        path = tmp_path / f"p{i}.pkl"
        path.write_bytes(pickle.dumps(obj, protocol=protocol))
        _same(_pickle.load(path), obj)
        _same(_pickle.load(str(path)), obj)
        with open(path, "rb") as f:
            _same(_pickle.load(f), obj)


def test_loads_numpy1_names(tmp_path):
    # NumPy 1.x writes numpy.core.* where NumPy 2 writes numpy._core.*
    obj = {"W1": np.arange(6.0).reshape(2, 3), "s": np.float64(3.0)}
    data = pickle.dumps(obj, protocol=2)
    assert b"numpy._core." in data
    path = tmp_path / "old.pkl"
    path.write_bytes(data.replace(b"numpy._core.", b"numpy.core."))
    _same(_pickle.load(path), obj)


class _Reduce:
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _crafted(marker):
    cmd = f"touch {marker}"
    import builtins
    import subprocess

    return {
        "os.system": _Reduce(os.system, cmd),
        "eval": _Reduce(builtins.eval, f"open({str(marker)!r}, 'w').close()"),
        "exec": _Reduce(builtins.exec, f"open({str(marker)!r}, 'w').close()"),
        "Popen": _Reduce(subprocess.Popen, ["touch", str(marker)]),
        "getattr": _Reduce(getattr, np.ndarray, "tofile"),
        "np.load": _Reduce(np.load, str(marker)),
        "nested": {"W1": np.ones(3), "x": [1, (2, _Reduce(os.system, cmd))]},
    }


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("kind", list(_crafted("m")))
def test_crafted_pickle_raises_and_runs_nothing(tmp_path, protocol, kind):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(_crafted(marker)[kind], protocol=protocol))
    with pytest.raises(pickle.UnpicklingError, match="forbidden global") as info:
        _pickle.load(path)
    msg = str(info.value)
    assert str(path) in msg
    assert any(name in msg for name in ("system", "eval", "exec", "Popen", "getattr", "load")), msg
    assert not marker.exists(), "the pickle ran code"


def test_handwritten_protocol0_global_and_persistent_id(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    with pytest.raises(pickle.UnpicklingError, match=r"forbidden global os\.system"):
        _pickle.load(path)
    assert not marker.exists()

    class P(pickle.Pickler):
        def persistent_id(self, obj):
            return "ext" if isinstance(obj, str) and obj == "x" else None

    buf = io.BytesIO()
    P(buf, protocol=2).dump({"a": "x"})
    buf.seek(0)
    with pytest.raises(pickle.UnpicklingError, match="persistent id"):
        _pickle.load(buf)


# --- load_mnist -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    return mnist.write_standin_mnist(tmp_path_factory.mktemp("standin"), n_train=60, n_test=20, seed=3)


def _raw(folder):
    (x, t), (xt, tt) = mnist.load_mnist(normalize=False, data_dir=folder)
    return x, t, xt, tt


def test_standin_files(standin):
    assert (standin / mnist.STANDIN_MARKER).read_text().startswith("These files are a stand-in for MNIST")
    for name in mnist.FILES.values():
        with gzip.open(standin / name, "rb") as f:
            head = f.read(16)
        assert head[:3] == b"\x00\x00\x08" and head[3] in (1, 3)
    x, t, xt, tt = _raw(standin)
    assert x.shape == (60, 784) and xt.shape == (20, 784) and x.dtype == np.uint8
    assert t.shape == (60,) and tt.shape == (20,) and t.dtype == np.uint8
    assert set(np.unique(t)) <= set(range(10)) and len(np.unique(t)) == 10
    assert x.max() == 255 and x.min() == 0
    # Each image is an 8x8 digit in 3x3 blocks, shifted by at most 2 pixels:
    # rows 0 and 27 are always blank (the 24x24 digit sits in a 2-pixel frame
    # that a shift of 2 at most empties on one side), and no image is empty.
    img = x.reshape(-1, 28, 28)
    assert (img.reshape(60, -1).sum(1) > 0).all()
    again = mnist.write_standin_mnist(standin.parent / "again", n_train=60, n_test=20, seed=3)
    for a, b in zip(_raw(standin), _raw(again)):
        np.testing.assert_array_equal(a, b)


def test_load_mnist_book_structure_and_dtypes(standin):
    x, t, xt, tt = _raw(standin)
    (a, b), (c, d) = mnist.load_mnist(data_dir=standin)
    assert a.dtype == np.float32 and a.shape == (60, 784) and b.dtype == np.uint8 and b.shape == (60,)
    np.testing.assert_array_equal(a, x.astype(np.float32) / np.float32(255.0))
    np.testing.assert_array_equal(c, xt.astype(np.float32) / np.float32(255.0))
    (a, b), (c, d) = mnist.load_mnist(normalize=True, flatten=False, one_hot_label=True, data_dir=str(standin))
    assert a.shape == (60, 1, 28, 28) and c.shape == (20, 1, 28, 28) and a.dtype == np.float32
    assert b.shape == (60, 10) and b.dtype == np.float64 and d.shape == (20, 10)
    np.testing.assert_array_equal(b.argmax(1), t)
    np.testing.assert_array_equal(b.sum(1), 1.0)
    (a, _), _ = mnist.load_mnist(False, False, data_dir=standin)
    assert a.dtype == np.uint8 and a.shape == (60, 1, 28, 28)
    np.testing.assert_array_equal(a.reshape(60, -1), x)


def test_folder_from_environment(standin, monkeypatch, tmp_path):
    monkeypatch.setenv(mnist.ENV_VAR, str(standin))
    assert mnist.mnist_dir() == standin
    (x, _), _ = mnist.load_mnist(normalize=False)
    np.testing.assert_array_equal(x, _raw(standin)[0])
    # The argument wins over the environment.
    monkeypatch.setenv(mnist.ENV_VAR, str(tmp_path / "nothing"))
    (x, _), _ = mnist.load_mnist(normalize=False, data_dir=standin)
    with pytest.raises(FileNotFoundError, match=mnist.ENV_VAR):
        mnist.load_mnist()


def test_books_mnist_pkl_and_plain_idx(standin, tmp_path):
    x, t, xt, tt = _raw(standin)
    pkl_dir = tmp_path / "pkl"
    pkl_dir.mkdir()
    dataset = {"train_img": x, "train_label": t, "test_img": xt, "test_label": tt}
    (pkl_dir / "mnist.pkl").write_bytes(pickle.dumps(dataset, -1))
    for a, b in zip(_raw(pkl_dir), (x, t, xt, tt)):
        np.testing.assert_array_equal(a, b)
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in mnist.FILES.values():
        with gzip.open(standin / name, "rb") as f:
            (plain / name[:-3]).write_bytes(f.read())
    for a, b in zip(_raw(plain), (x, t, xt, tt)):
        np.testing.assert_array_equal(a, b)


def test_missing_files_say_where_and_whence(tmp_path, monkeypatch):
    monkeypatch.delenv(mnist.ENV_VAR, raising=False)
    with pytest.raises(FileNotFoundError) as info:
        mnist.load_mnist(data_dir=tmp_path)
    msg = str(info.value)
    for part in (str(tmp_path), "train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "mnist.pkl",
                 mnist.ENV_VAR, "yann.lecun.com/exdb/mnist", "download_mnist"):
        assert part in msg, part


def test_inconsistent_files_raise(standin, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(standin, bad)
    mnist._write_idx(bad / mnist.FILES["test_label"], np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="t10k-labels"):
        mnist.load_mnist(data_dir=bad)
    (bad / "mnist.pkl").write_bytes(pickle.dumps({"train_img": np.zeros((2, 784))}))
    with pytest.raises(ValueError, match="mnist.pkl"):
        mnist.load_mnist(data_dir=bad)


def test_standin_cli(tmp_path, capsys):
    mnist._main(["standin", str(tmp_path / "c"), "--train", "4", "--test", "3"])
    x, t, xt, tt = _raw(tmp_path / "c")
    assert len(x) == 4 and len(xt) == 3
    with pytest.raises(ValueError, match="n_train"):
        mnist.write_standin_mnist(tmp_path / "d", n_train=0)


# --- download, against a loopback server only ----------------------------------------------


@pytest.fixture
def server(standin):
    """An HTTP server on 127.0.0.1 serving the stand-in files; yields
    (base_url, list of requested paths)."""
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(standin)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def _sums(folder):
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in mnist.FILES.values()}


def test_download_checks_and_keeps_good_files(server, standin, tmp_path):
    base, requests = server
    dest = tmp_path / "dl"
    out = mnist.download_mnist(dest, base_url=base, sha256=_sums(standin), quiet=True)
    assert out == dest and len(requests) == 4
    assert sorted(p.name for p in dest.iterdir()) == sorted(mnist.FILES.values())
    for a, b in zip(_raw(dest), _raw(standin)):
        np.testing.assert_array_equal(a, b)
    mnist.download_mnist(dest, base_url=base, sha256=_sums(standin), quiet=True)
    assert len(requests) == 4, "files with the right checksum are not fetched again"


def test_download_checksum_mismatch_leaves_nothing(server, standin, tmp_path):
    base, requests = server
    dest = tmp_path / "dl"
    sums = _sums(standin)
    sums["train-labels-idx1-ubyte.gz"] = "0" * 64
    with pytest.raises(mnist.ChecksumError, match="train-labels-idx1-ubyte.gz"):
        mnist.download_mnist(dest, base_url=base, sha256=sums, quiet=True)
    # The file before it was verified and kept; the bad one and any partial file are gone.
    assert sorted(p.name for p in dest.iterdir()) == ["train-images-idx3-ubyte.gz"]
    # The real checksums do not match the stand-in either.
    dest2 = tmp_path / "dl2"
    with pytest.raises(mnist.ChecksumError):
        mnist.download_mnist(dest2, base_url=base, quiet=True)
    assert list(dest2.iterdir()) == []


def test_download_http_error_leaves_nothing(server, tmp_path):
    base, _ = server
    dest = tmp_path / "dl"
    with pytest.raises(urllib.error.HTTPError):
        mnist.download_mnist(dest, base_url=base + "missing/", quiet=True)
    assert list(dest.iterdir()) == []


def test_real_checksums_are_complete():
    assert set(mnist.SHA256) == set(mnist.FILES.values())
    assert all(len(h) == 64 and int(h, 16) >= 0 for h in mnist.SHA256.values())

"""The Python client package, clients/python (explaind_py), against live daemons.

It is installed into .venv by scripts/setup/setup.sh. Its answers are checked against the raw gRPC
requests of explaind_client (the tests' own helper), the committed token-model references, and
the identities of the methods (Deep SHAP's completeness). Besides the shared `server`, two
daemons of their own: one serving a BERT token model behind a bearer token, and one under
mutual TLS with certificates made here by openssl (skipped when there is no openssl).
"""

from __future__ import annotations

import filecmp
import hashlib
import re
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import daemon_proc
import explaind_py
from explaind_client import indices, integers, named, outputs_dict, pb
from explaind_py import Client, ExplaindError
from explaind_py import _convert
from explaind_py._proto import explaind_pb2 as ppb
from paths import DATA_DIR, MODELS_DIR, REPO

PACKAGE = REPO / "clients" / "python"
DIGITS = MODELS_DIR / "digits-cnn" / "1"
WINE = MODELS_DIR / "wine-mlp" / "1"
BERT = DATA_DIR / "tokens" / "bert_tiny"
TOKEN = "s3cret-token-for-the-client-tests"



# --------------------------------------------------------------------------------------------
# The package itself
# --------------------------------------------------------------------------------------------


def test_committed_stubs_are_what_the_proto_generates(tmp_path):
    res = subprocess.run([sys.executable, str(PACKAGE / "generate.py"), "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    committed = PACKAGE / "src" / "explaind_py" / "_proto"
    for name in ("explaind_pb2.py", "explaind_pb2.pyi", "explaind_pb2_grpc.py"):
        assert (tmp_path / name).read_bytes() == (committed / name).read_bytes(), (
            f"clients/python/src/explaind_py/_proto/{name} is stale: run "
            f".venv/bin/python clients/python/generate.py")
    grpc_stub = (committed / "explaind_pb2_grpc.py").read_text()
    assert "from . import explaind_pb2 as" in grpc_stub
    assert "from explaind.v1" not in grpc_stub


def test_installed_package_is_the_source():
    """scripts/setup/setup.sh installs a copy; it must be the one in clients/python/src."""
    installed = Path(explaind_py.__file__).resolve().parent
    source = PACKAGE / "src" / "explaind_py"
    assert "site-packages" in installed.parts or installed == source, installed
    rel = sorted(p.relative_to(source) for p in source.rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts)
    for r in rel:
        assert filecmp.cmp(source / r, installed / r, shallow=False), (
            f"{installed / r} differs from {source / r}: run scripts/setup/setup.sh")


def test_package_messages_share_descriptors_with_the_test_stubs():
    # Both register explaind/v1/explaind.proto; the same file may be loaded twice.
    assert ppb.DESCRIPTOR.name == pb.DESCRIPTOR.name == "explaind/v1/explaind.proto"
    assert ppb.Tensor.DESCRIPTOR.full_name == "explaind.v1.Tensor"


def test_readme_example_runs(server):
    text = (REPO / "README.md").read_text()
    section = text[text.index("### Python client"):]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(block.strip().splitlines()) == 3, block
    scope = {"np": np}
    exec(block.replace("127.0.0.1:50051", server.address), scope)  # noqa: S102
    e = scope["e"]
    assert e.attributions["features"].shape == (6, 3, 13)
    assert e.base_values.shape == (6, 3)
    assert e.figure_png is None


# --------------------------------------------------------------------------------------------
# Conversions (no daemon)
# --------------------------------------------------------------------------------------------


def test_parameters_convert_by_python_type():
    pv = _convert.param_value
    assert pv("a", True) == ppb.ParamValue(flag=True)
    assert pv("a", np.bool_(False)) == ppb.ParamValue(flag=False)
    assert pv("a", 7) == ppb.ParamValue(integer=7)
    assert pv("a", np.int32(7)) == ppb.ParamValue(integer=7)
    assert pv("a", 0.5) == ppb.ParamValue(number=0.5)
    assert pv("a", np.float32(0.5)) == ppb.ParamValue(number=0.5)
    assert pv("a", "riemann_trapezoid") == ppb.ParamValue(text="riemann_trapezoid")
    assert pv("a", [1, 3, 3]) == ppb.ParamValue(integers=ppb.IntegerList(values=[1, 3, 3]))
    assert pv("a", (1, 2)) == ppb.ParamValue(integers=ppb.IntegerList(values=[1, 2]))
    assert pv("a", np.array([1, 2])) == ppb.ParamValue(integers=ppb.IntegerList(values=[1, 2]))
    assert pv("a", [1, 2.5]) == ppb.ParamValue(numbers=ppb.NumberList(values=[1.0, 2.5]))
    assert pv("a", np.array([0.25])) == ppb.ParamValue(numbers=ppb.NumberList(values=[0.25]))
    for bad in ({"x": 1}, [True, False], ["a"], None):
        with pytest.raises(TypeError, match="parameter a"):
            pv("a", bad)


def test_targets_convert():
    t = _convert.targets
    assert t(None) is None
    assert t(3) == ppb.Targets(indices=ppb.IndexList(values=[3]))
    assert t([0, 2]) == ppb.Targets(indices=ppb.IndexList(values=[0, 2]))
    assert t(np.array([1])) == ppb.Targets(indices=ppb.IndexList(values=[1]))
    assert t("all") == ppb.Targets(all=ppb.AllOutputs())
    assert t("predicted") == ppb.Targets(predicted=ppb.PredictedClass())
    assert t(("top_k", 2)) == ppb.Targets(top_k=2)
    for bad in ("every", True, [0.5], ("top", 2)):
        with pytest.raises(ValueError, match="targets"):
            t(bad)


@pytest.mark.parametrize("value, dtype, expected", [
    (np.array([0.1, 2.0], np.float64), "<f4", np.array([0.1, 2.0], np.float32)),  # rounding
    (np.array([3, -(2**24)], np.int64), "<f4", np.array([3, -(2**24)], np.float32)),
    (np.array([[1.0, 101.0]], np.float32), "<i8", np.array([[1, 101]], np.int64)),
    (np.array([0, 1], np.int64), "?", np.array([False, True])),
    (np.array([True, False]), "<i8", np.array([1, 0], np.int64)),
    (np.array([255], np.int64), "u1", np.array([255], np.uint8)),
    (np.array([65504.0], np.float64), "<f2", np.array([65504.0], np.float16)),
    ([[1, 2]], "<i8", np.array([[1, 2]], np.int64)),
    (np.array([7], ">i8"), "<i8", np.array([7], np.int64)),
])
def test_cast_keeps_values(value, dtype, expected):
    out = _convert.cast(value, np.dtype(dtype), "x")
    assert out.dtype == np.dtype(dtype) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("value, dtype, why", [
    (np.array([1.0, 2.5]), "<i8", r"element \[1\] is .*2\.5.* not an integer"),
    (np.array([np.nan]), "<i8", "not finite"),
    (np.array([2.0**63]), "<i8", "out of range"),
    (np.array([256], np.int64), "u1", "out of range"),
    (np.array([-1], np.int64), "<u4", "out of range"),
    (np.array([2**31], np.int64), "<i4", "out of range"),
    (np.array([0, 2], np.int64), "?", "bool takes 0 and 1 only"),
    (np.array([2**24 + 1], np.int64), "<f4", "float32 does not hold it exactly"),
    (np.array([70000], np.int32), "<f2", "float16 does not hold it exactly"),
    (np.array([1e39]), "<f4", "overflows"),
])
def test_cast_refuses_lossy_conversions(value, dtype, why):
    with pytest.raises(ValueError, match=why):
        _convert.cast(value, np.dtype(dtype), "x")


def test_cast_refuses_non_numbers():
    with pytest.raises(TypeError, match="not a number type"):
        _convert.cast(np.array(["a"]), np.dtype("<f4"), "x")


# --------------------------------------------------------------------------------------------
# The shared daemon: demo models
# --------------------------------------------------------------------------------------------


def test_models_and_metadata(py):
    names = {m.name for m in py.models()}
    assert {"digits-cnn", "mnist-cnn", "wine-mlp"} <= names, names
    wine = py.model("wine-mlp")
    assert wine.version == "1"
    assert wine.sha256 == hashlib.sha256((WINE / "model.onnx").read_bytes()).hexdigest()
    assert [(s.name, s.element_type, s.dtype) for s in wine.inputs] == [
        ("features", "float32", np.dtype("float32"))]
    assert wine.inputs[0].shape[1:] == (13,)
    assert [o.name for o in wine.outputs] == ["logits", "probabilities"]
    assert wine.labels == ("class_0", "class_1", "class_2")
    assert wine.default_background_shape is not None and wine.default_background_shape[1:] == (13,)
    assert "deep-shap" in wine.explainers


def test_explainers_and_their_parameters(py):
    exps = py.explainers()
    occ = exps["occlusion"]
    assert [p.name for p in occ.parameters] == ["window", "strides", "baseline"]
    window, _, baseline = occ.parameters
    assert window.kind == "integers" and window.required and window.default is None
    assert baseline.kind == "number" and baseline.default == 0.0
    assert "background" in exps["deep-shap"].requires
    assert occ.typed_inputs and occ.version and len(occ.file_sha256) == 64


def test_predict_equals_the_raw_predict(py, client):
    for model, path, name in [("digits-cnn", DIGITS / "samples.npy", "image"),
                              ("wine-mlp", WINE / "samples.npy", "features")]:
        x = np.load(path)
        raw = outputs_dict(client.predict(model, {name: x}).outputs)
        for given in (x, {name: x}, x.astype(np.float64), x.tolist()):
            got = py.predict(model, given)
            assert got.keys() == raw.keys()
            for k in raw:
                assert got[k].dtype == raw[k].dtype
                np.testing.assert_array_equal(got[k], raw[k])


def test_explain_occlusion_with_a_window(py, client):
    x = np.load(DIGITS / "samples.npy")[:4]
    e = py.explain("digits-cnn", x, "occlusion", targets=3, window=[1, 3, 3], strides=(1, 2, 2))
    raw = client.explain_request(pb.ExplainRequest(
        model=pb.ModelRef(name="digits-cnn"), explainer="occlusion", inputs=[named("image", x)],
        targets=indices(3), parameters={"window": integers(1, 3, 3), "strides": integers(1, 2, 2)},
    ))
    assert e.model == "digits-cnn" and e.model_version == "1"
    assert e.model_sha256 == raw.model_sha256
    assert e.explainer == "occlusion" and e.explainer_version == raw.explainer_version
    assert e.explainer_sha256 == raw.explainer_file_sha256
    assert list(e.attributions) == ["image"]
    assert e.values.shape == (4, 1, 1, 8, 8) and e.values.dtype == np.float32
    np.testing.assert_array_equal(e.values, np.frombuffer(raw.attributions[0].values.data,
                                                          np.float32).reshape(4, 1, 1, 8, 8))
    np.testing.assert_array_equal(e.target_indices, np.full((4, 1), 3))
    assert e.base_values is None and e.figure_png is None
    assert e.outputs["logits"].shape == (4, 10)
    assert e.timing.model_calls > 0 and e.timing.model_rows > 0 and e.timing.total_ms > 0


def test_deep_shap_is_complete_with_the_default_background(py):
    x = np.load(WINE / "samples.npy")
    e = py.explain("wine-mlp", x, "deep-shap", targets="all")
    n = x.shape[0]
    assert e.values.shape == (n, 3, 13) and e.base_values.shape == (n, 3)
    np.testing.assert_array_equal(e.target_indices, np.tile(np.arange(3), (n, 1)))
    total = e.base_values + e.values.sum(axis=-1)
    np.testing.assert_allclose(total, e.outputs["logits"], rtol=0, atol=1e-4)
    assert e.extras["completeness_residual"].shape == (n, 3)
    assert np.abs(e.extras["completeness_residual"]).max() < 1e-4


def test_shap_layout_moves_the_target_axis_last(py):
    x = np.load(WINE / "samples.npy")
    plain = py.explain("wine-mlp", x, "deep-shap", targets=("top_k", 2))
    shap = py.explain("wine-mlp", x, "deep-shap", targets=("top_k", 2), shap_layout=True)
    assert plain.values.shape == (6, 2, 13)
    assert shap.shap_layout and shap.values.shape == (6, 13, 2)
    np.testing.assert_array_equal(shap.values, np.moveaxis(plain.values, 1, -1))
    assert shap.base_values.shape == (6, 2)
    img = py.explain("digits-cnn", np.load(DIGITS / "samples.npy")[:2], "occlusion",
                     targets=[0, 5, 9], window=[1, 2, 2], shap_layout=True)
    assert img.values.shape == (2, 1, 8, 8, 3)


def test_register_background_then_explain_by_id(py):
    x = np.load(WINE / "samples.npy")
    rows = np.load(WINE / "background.npy")[:20]
    bid = py.register_background("wine-mlp", rows)
    assert re.fullmatch(r"[0-9a-f]{64}", bid), bid
    assert py.register_background("wine-mlp", {"features": rows.astype(np.float64)}) == bid
    # The fleet's routing key for rows sent inline is the id the daemon gives them, so a
    # registration and the inline requests of one background reach the same replica.
    from explaind_py._client import _background_digest
    info = py.model("wine-mlp")
    assert _background_digest(info, py._tensors(info, rows, "rows")) == bid
    by_id = py.explain("wine-mlp", x, "deep-shap", targets="all", background_id=bid)
    assert by_id.replica, "the daemon names itself (x-explaind-replica)"
    inline = py.explain("wine-mlp", x, "deep-shap", targets="all", background=rows)
    np.testing.assert_allclose(by_id.values, inline.values, rtol=0, atol=1e-6)
    np.testing.assert_allclose(by_id.base_values, inline.base_values, rtol=0, atol=1e-6)
    default = py.explain("wine-mlp", x, "deep-shap", targets="all")
    assert not np.allclose(by_id.base_values, default.base_values)  # 20 rows, not the default 50
    with pytest.raises(ValueError, match="not both"):
        py.explain("wine-mlp", x, "deep-shap", background=rows, background_id=bid)
    with pytest.raises(ExplaindError) as err:
        py.explain("wine-mlp", x, "deep-shap", background_id="0" * 64)
    assert err.value.code == "NOT_FOUND", err.value


def test_figure_comes_back_as_png_bytes(py):
    x = np.load(WINE / "samples.npy")[:2]
    for plot in (True, "bars", "waterfall"):
        e = py.explain("wine-mlp", x, "deep-shap", plot=plot, plot_top_k=5)
        assert isinstance(e.figure_png, bytes)
        assert e.figure_png.startswith(b"\x89PNG\r\n\x1a\n"), plot
    img = py.explain("digits-cnn", np.load(DIGITS / "samples.npy")[:2], "occlusion",
                     window=[1, 2, 2], plot="image")
    assert img.figure_png.startswith(b"\x89PNG\r\n\x1a\n")


def test_parameters_of_every_kind_reach_the_explainer(py):
    x = np.load(WINE / "samples.npy")[:2]
    # integer, text, number (given as an int: the daemon takes it where a number is declared)
    a = py.explain("wine-mlp", x, "integrated-gradients", steps=16, method="riemann_trapezoid",
                   baseline=0)
    b = py.explain("wine-mlp", x, "integrated-gradients",
                   params={"steps": 16, "method": "riemann_trapezoid", "baseline": 0.0})
    np.testing.assert_array_equal(a.values, b.values)
    c = py.explain("wine-mlp", x, "integrated-gradients", steps=32)
    assert not np.array_equal(a.values, c.values)
    # flag
    s = py.explain("wine-mlp", x, "saliency", abs=True)
    assert (s.values >= 0).all()
    # a float where the explainer declares an integer: the daemon names the parameter
    with pytest.raises(ExplaindError) as err:
        py.explain("wine-mlp", x, "integrated-gradients", steps=16.5)
    assert err.value.code == "INVALID_ARGUMENT" and "steps" in err.value.message


def test_errors_are_explaind_errors_with_the_code_name(py):
    x = np.load(WINE / "samples.npy")[:1]
    with pytest.raises(ExplaindError) as err:
        py.predict("no-such-model", x)
    assert err.value.code == "NOT_FOUND" and "no-such-model" in err.value.message
    assert str(err.value).startswith("NOT_FOUND: ")
    with pytest.raises(ExplaindError) as err:
        py.explain("wine-mlp", x, "no-such-explainer")
    assert err.value.code == "NOT_FOUND"
    with pytest.raises(ExplaindError) as err:
        py.explain("wine-mlp", x, "occlusion")  # window is required
    assert err.value.code == "INVALID_ARGUMENT" and "window" in err.value.message
    with pytest.raises(ExplaindError) as err:
        py.predict("wine-mlp", np.zeros((1, 12), np.float32))
    assert err.value.code == "INVALID_ARGUMENT" and "shape" in err.value.message
    # Caught on this side: names that are not inputs.
    with pytest.raises(ValueError, match="'pixels' is not an input of wine-mlp"):
        py.predict("wine-mlp", {"pixels": x})


# --------------------------------------------------------------------------------------------
# A daemon serving a token model, behind a bearer token
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_daemon(tmp_path_factory):
    if not daemon_proc.binary().is_file():
        pytest.fail(f"explaind binary not found at {daemon_proc.binary()}: build it")
    root = tmp_path_factory.mktemp("token-daemon")
    model_dir = root / "models" / "bert-tiny" / "1"
    model_dir.mkdir(parents=True)
    shutil.copy(BERT / "model.onnx", model_dir / "model.onnx")
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    config = root / "explaind.toml"
    config.write_text(
        f'[[auth.tokens]]\nname = "client-tests"\nsha256 = "{digest}"\n'
        f'roles = ["predict", "explain"]\n'
    )
    daemon = daemon_proc.start(
        ["serve", "--config", str(config), "--listen", "127.0.0.1:0", "--models",
         str(root / "models"), "--device", "cpu"], root / "log")
    try:
        yield daemon
    finally:
        daemon.stop()


def test_token_model_takes_int64_ids_and_refuses_fractions(token_daemon):
    ids = np.load(BERT / "input_ids.npy")
    mask = np.load(BERT / "attention_mask.npy")
    with Client(token_daemon.address, token=TOKEN, timeout=60) as c:
        info = c.model("bert-tiny")
        assert {s.name: s.dtype for s in info.inputs} == {
            "input_ids": np.dtype("int64"), "attention_mask": np.dtype("int64")}
        out = c.predict("bert-tiny", {"input_ids": ids, "attention_mask": mask})
        np.testing.assert_allclose(out["logits"], np.load(BERT / "logits.npy"), atol=1e-5)
        # Whole numbers in another type are cast to int64 and give the same answer.
        again = c.predict("bert-tiny", {"input_ids": ids.astype(np.float32),
                                        "attention_mask": mask.astype(np.int32)})
        np.testing.assert_array_equal(again["logits"], out["logits"])
        # A fraction would change in the cast: refused here, before any request.
        fractional = ids.astype(np.float64)
        fractional[1, 3] += 0.5
        with pytest.raises(ValueError, match=r"input_ids.*int64.*element \[1, 3\].*not an integer"):
            c.predict("bert-tiny", {"input_ids": fractional, "attention_mask": mask})
        with pytest.raises(ValueError, match="has inputs input_ids, attention_mask"):
            c.predict("bert-tiny", ids)

        e = c.explain("bert-tiny", {"input_ids": ids, "attention_mask": mask}, "occlusion",
                      explained_inputs=["input_ids"], targets="all", window=[1], baseline=0)
        assert list(e.attributions) == ["input_ids"]
        np.testing.assert_allclose(e.values, np.load(BERT / "occlusion.npy"), atol=1e-5)
        shap = c.explain("bert-tiny", {"input_ids": ids, "attention_mask": mask}, "occlusion",
                         explained_inputs=["input_ids"], targets="all", window=[1],
                         shap_layout=True)
        assert shap.values.shape == (2, 10, 3)
        fig = c.explain("bert-tiny", {"input_ids": ids, "attention_mask": mask}, "occlusion",
                        explained_inputs=["input_ids"], targets=0, window=[1], plot=True,
                        tokens=[[f"t{i}" for i in row] for row in ids])
        assert fig.figure_png.startswith(b"\x89PNG\r\n\x1a\n")


def test_bearer_token_is_sent_and_checked(token_daemon):
    ids = np.load(BERT / "input_ids.npy")
    mask = np.load(BERT / "attention_mask.npy")
    for token in (None, "wrong-token"):
        with Client(token_daemon.address, token=token, timeout=30) as c:
            with pytest.raises(ExplaindError) as err:
                c.models()
            assert err.value.code == "UNAUTHENTICATED", err.value
            assert "authorization" in err.value.message
    with Client(token_daemon.address, token=TOKEN, timeout=30) as c:
        assert [m.name for m in c.models()] == ["bert-tiny"]
        assert c.predict("bert-tiny", {"input_ids": ids, "attention_mask": mask})


# --------------------------------------------------------------------------------------------
# A daemon under mutual TLS
# --------------------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    res = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, f"openssl {' '.join(args)}:\n{res.stderr}"


def _certificate(cwd: Path, name: str, ext: str) -> None:
    """NAME.key and NAME.pem, signed by ca.pem, with the extensions in EXT."""
    (cwd / f"{name}.ext").write_text(ext)
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=cwd)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext",
             cwd=cwd)


@pytest.fixture(scope="module")
def tls_daemon(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make certificates with")
    pki = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=explaind test CA", cwd=pki)
    _certificate(pki, "server", "subjectAltName = IP:127.0.0.1, DNS:localhost\n"
                 "basicConstraints = CA:FALSE\nextendedKeyUsage = serverAuth\n")
    _certificate(pki, "client", "basicConstraints = CA:FALSE\nextendedKeyUsage = clientAuth\n")
    der = ssl.PEM_cert_to_DER_cert((pki / "client.pem").read_text())
    config = pki / "explaind.toml"
    config.write_text(
        f'[tls]\ncert = "{pki / "server.pem"}"\nkey = "{pki / "server.key"}"\n'
        f'client_ca = "{pki / "ca.pem"}"\n\n'
        f'[[auth.clients]]\nname = "client-tests"\n'
        f'cert_sha256 = "{hashlib.sha256(der).hexdigest()}"\nroles = ["predict", "explain"]\n'
    )
    daemon = daemon_proc.start(
        ["serve", "--config", str(config), "--listen", "127.0.0.1:0", "--models",
         str(MODELS_DIR), "--device", "cpu"], pki / "log")
    try:
        yield daemon, pki
    finally:
        daemon.stop()


def test_mutual_tls_with_certificate_files_and_bytes(tls_daemon):
    daemon, pki = tls_daemon
    x = np.load(WINE / "samples.npy")[:2]
    with Client(daemon.address, root_certificates=pki / "ca.pem", private_key=pki / "client.key",
                certificate_chain=str(pki / "client.pem"), timeout=30) as c:
        out = c.predict("wine-mlp", x)
        e = c.explain("wine-mlp", x, "deep-shap", targets="all")
    np.testing.assert_allclose(e.base_values + e.values.sum(-1), out["logits"], atol=1e-4)
    with Client(daemon.address, tls=True, root_certificates=(pki / "ca.pem").read_bytes(),
                private_key=(pki / "client.key").read_bytes(),
                certificate_chain=(pki / "client.pem").read_bytes(), timeout=30) as c:
        assert "wine-mlp" in {m.name for m in c.models()}
    # No client certificate: the handshake fails, which gRPC reports as UNAVAILABLE.
    with Client(daemon.address, root_certificates=pki / "ca.pem", timeout=10) as c:
        with pytest.raises(ExplaindError) as err:
            c.models()
        assert err.value.code == "UNAVAILABLE", err.value
    # Plain text to a TLS port fails too.
    with Client(daemon.address, timeout=10) as c:
        with pytest.raises(ExplaindError) as err:
            c.models()
        assert err.value.code == "UNAVAILABLE", err.value

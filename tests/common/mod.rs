//! Test harness: a real explaind server on loopback, in this test process, with the real ONNX
//! Runtime, the bundled demo models and plugins loaded through the C ABI.
#![allow(dead_code)]

pub mod fixtures;

use explaind::proto;
use explaind::service::{Limits, State};
use explaind_host::PluginRegistry;
use explaind_runtime::{ModelRepository, OrtRuntime, RuntimeOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use tonic::transport::Channel;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/<profile>`, where cargo puts the plugin libraries (the test binary is in `deps/`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

/// The test process's ONNX Runtime: the library `find_library` picks (`ORT_DYLIB_PATH` first), on
/// the CPU unless `EXPLAIND_TEST_DEVICE` names another device (`cuda`: every model of the suite
/// then runs on the GPU, or the suite fails; see `tests/cuda.rs`).
pub fn runtime() -> &'static OrtRuntime {
    let library = explaind_runtime::find_library(None);
    let device = match std::env::var("EXPLAIND_TEST_DEVICE") {
        Ok(device) => device.parse().unwrap_or_else(|e| panic!("EXPLAIND_TEST_DEVICE: {e}")),
        Err(_) => explaind_runtime::DeviceChoice::Cpu,
    };
    let options = RuntimeOptions { device, intra_threads: 1, ..Default::default() };
    OrtRuntime::init(&library, options).unwrap_or_else(|e| panic!("{e} (tests run `scripts/setup/setup.sh` first)"))
}

/// Compiles a C file against the ABI header into a shared library in `out_dir`.
pub fn compile_c_plugin(source: &str, defines: &[&str], out_dir: &Path, lib_name: &str) -> PathBuf {
    let include = Path::new(explaind_abi::HEADER_PATH).parent().unwrap();
    compile_c_plugin_against(include, source, defines, out_dir, lib_name)
}

/// Compiles a C file against the header in `include` (another ABI version's, say).
pub fn compile_c_plugin_against(include: &Path, source: &str, defines: &[&str], out_dir: &Path, lib_name: &str) -> PathBuf {
    let out = out_dir.join(format!("lib{lib_name}.so"));
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC"])
        .arg("-I")
        .arg(include)
        .args(defines.iter().map(|d| format!("-D{d}")))
        .arg(repo_root().join(source))
        .arg("-o")
        .arg(&out)
        .status()
        .expect("a C compiler (cc) is needed for the C plugin tests");
    assert!(status.success(), "compiling {source} failed");
    out
}

const DEFAULT_CHUNK_BYTES: u64 = 256 << 20;

pub struct TestServer {
    pub addr: String,
    pub state: Arc<State>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl TestServer {
    /// Starts a server with the demo models, the bundled plugins, the misbehaving test plugin,
    /// and any `extra_plugins`.
    pub async fn start(limits: Limits, extra_plugins: &[PathBuf]) -> TestServer {
        Self::start_with(
            ModelRepository::new(repo_root().join("models"), runtime()),
            limits,
            extra_plugins,
            256 << 20,
            DEFAULT_CHUNK_BYTES,
        )
        .await
    }

    /// A server on another model repository, with an activation cache of `cache_bytes`.
    pub async fn start_on(models: &Path, cache_bytes: u64) -> TestServer {
        Self::start_with(
            ModelRepository::new(models.to_path_buf(), runtime()),
            Default::default(),
            &[],
            cache_bytes,
            DEFAULT_CHUNK_BYTES,
        )
        .await
    }

    /// A server on another model repository, with the bundled plugins and `extra_plugins`.
    pub async fn start_on_with_plugins(models: &Path, extra_plugins: &[PathBuf]) -> TestServer {
        let repository = ModelRepository::new(models.to_path_buf(), runtime());
        Self::start_with(repository, Default::default(), extra_plugins, 256 << 20, DEFAULT_CHUNK_BYTES).await
    }

    /// As [`TestServer::start_on`], with Deep SHAP's working-memory bound per run set to
    /// `chunk_bytes` (small values force many chunks).
    pub async fn start_on_with_chunks(models: &Path, cache_bytes: u64, chunk_bytes: u64) -> TestServer {
        let repository = ModelRepository::new(models.to_path_buf(), runtime());
        Self::start_with(repository, Default::default(), &[], cache_bytes, chunk_bytes).await
    }

    /// A server whose models send at most `rows` rows per ONNX Runtime call.
    pub async fn start_with_batch_rows(rows: usize) -> TestServer {
        let repository = ModelRepository::new(repo_root().join("models"), runtime()).with_max_batch_rows(rows);
        Self::start_with(repository, Default::default(), &[], 256 << 20, DEFAULT_CHUNK_BYTES).await
    }

    async fn start_with(
        repository: ModelRepository,
        limits: Limits,
        extra_plugins: &[PathBuf],
        cache_bytes: u64,
        chunk_bytes: u64,
    ) -> TestServer {
        let open = explaind::access::AccessPolicy::new(&Default::default(), 0);
        Self::start_full(repository, limits, extra_plugins, cache_bytes, chunk_bytes, open, None).await
    }

    /// The demo models and plugins behind an access policy and, optionally, TLS. The address
    /// is `https://localhost:PORT` with TLS (the test certificates name `localhost`).
    pub async fn start_secure(
        limits: Limits,
        access: explaind::access::AccessPolicy,
        tls: Option<tonic::transport::ServerTlsConfig>,
    ) -> TestServer {
        let repository = ModelRepository::new(repo_root().join("models"), runtime());
        Self::start_full(repository, limits, &[], 256 << 20, DEFAULT_CHUNK_BYTES, access, tls).await
    }

    async fn start_full(
        repository: ModelRepository,
        limits: Limits,
        extra_plugins: &[PathBuf],
        cache_bytes: u64,
        chunk_bytes: u64,
        access: explaind::access::AccessPolicy,
        tls: Option<tonic::transport::ServerTlsConfig>,
    ) -> TestServer {
        let repository = Arc::new(repository);
        let (_, failed) = repository.load_all().unwrap();
        assert!(failed.is_empty(), "demo models failed to load: {failed:?}");
        let plugins = Arc::new(PluginRegistry::new());
        for loaded in plugins.load_dir(&target_dir(), "explaind_plugin_") {
            loaded.expect("bundled plugin loads");
        }
        plugins
            .load_file(&target_dir().join("libexplaind_testplugin_misbehaving.so"))
            .expect("test plugin loads (run `cargo build --workspace` first)");
        for p in extra_plugins {
            plugins.load_file(p).expect("extra plugin loads");
        }
        let engine = Arc::new(explaind_attribution::AttributionEngine::new(runtime(), cache_bytes).with_chunk_bytes(chunk_bytes));
        let backgrounds = Arc::new(explaind_host::BackgroundRegistry::new(64 << 20));
        let access = Arc::new(access);
        let observer = Arc::new(explaind::observe::Observer::without_audit());
        let state = Arc::new(State::new(repository, plugins, engine, backgrounds, limits, access, observer));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let addr = if tls.is_some() { format!("https://localhost:{port}") } else { format!("http://127.0.0.1:{port}") };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let serve_state = state.clone();
        tokio::spawn(async move {
            explaind::server::serve(listener, serve_state, tls, async {
                let _ = rx.await;
            })
            .await
            .expect("server runs");
        });
        TestServer { addr, state, shutdown: Some(tx) }
    }

    pub async fn channel(&self) -> Channel {
        for _ in 0..100 {
            if let Ok(c) = Channel::from_shared(self.addr.clone()).unwrap().connect().await {
                return c;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("server at {} did not accept connections", self.addr);
    }

    pub async fn models(&self) -> proto::model_service_client::ModelServiceClient<Channel> {
        proto::model_service_client::ModelServiceClient::new(self.channel().await).max_decoding_message_size(1 << 30)
    }

    pub async fn explainer(&self) -> proto::explain_service_client::ExplainServiceClient<Channel> {
        proto::explain_service_client::ExplainServiceClient::new(self.channel().await).max_decoding_message_size(1 << 30)
    }
}

/// Reads a committed `.npy` file as (shape, values).
pub fn read_npy(relative: &str) -> ndarray::ArrayD<f32> {
    explaind_runtime::npy::read_f32_file(&repo_root().join(relative)).unwrap()
}

pub fn tensor(array: &ndarray::ArrayD<f32>) -> proto::Tensor {
    explaind::convert::array_to_tensor(array)
}

pub fn named(name: &str, array: &ndarray::ArrayD<f32>) -> proto::NamedTensor {
    proto::NamedTensor { name: name.to_string(), tensor: Some(tensor(array)) }
}

pub fn floats(t: &proto::Tensor) -> Vec<f32> {
    assert_eq!(t.element_type, proto::ElementType::Float as i32);
    t.data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

pub fn ints(t: &proto::Tensor) -> Vec<i64> {
    assert_eq!(t.element_type, proto::ElementType::Int64 as i32);
    t.data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()
}

pub fn integers(values: &[i64]) -> proto::ParamValue {
    proto::ParamValue { kind: Some(proto::param_value::Kind::Integers(proto::IntegerList { values: values.to_vec() })) }
}

pub fn text(value: &str) -> proto::ParamValue {
    proto::ParamValue { kind: Some(proto::param_value::Kind::Text(value.to_string())) }
}

pub fn indices(values: &[i64]) -> Option<proto::Targets> {
    Some(proto::Targets { selection: Some(proto::targets::Selection::Indices(proto::IndexList { values: values.to_vec() })) })
}

pub fn model(name: &str) -> Option<proto::ModelRef> {
    Some(proto::ModelRef { name: name.to_string(), version: String::new() })
}

/// Asserts |a - b| <= atol + rtol * |b| elementwise, reporting the worst element.
pub fn assert_close(actual: &[f32], expected: &[f32], atol: f32, rtol: f32) {
    assert_eq!(actual.len(), expected.len(), "lengths differ");
    let mut worst = (0usize, 0f32);
    for (i, (a, b)) in actual.iter().zip(expected).enumerate() {
        let excess = (a - b).abs() - (atol + rtol * b.abs());
        if excess > worst.1 {
            worst = (i, excess);
        }
    }
    assert!(
        worst.1 <= 0.0,
        "element {} differs: {} vs expected {} (atol {atol}, rtol {rtol})",
        worst.0,
        actual[worst.0],
        expected[worst.0]
    );
}

//! The daemon's configuration: one TOML file with every option (`explaind serve --config
//! FILE`), each of which a command-line flag may override. `deploy/explaind.toml` is a secure
//! production example; the README documents every key.
//!
//! Resolution order: built-in defaults, then the file, then flags. Unknown keys in the file are
//! errors (a misspelt security option must not be silently ignored).

use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[derive(Default)]
pub struct Config {
    pub server: ServerConfig,
    pub models: ModelsConfig,
    pub plugins: PluginsConfig,
    pub runtime: RuntimeConfig,
    pub cache: CacheConfig,
    pub tls: Option<TlsConfig>,
    pub auth: AuthConfig,
    pub audit: Option<AuditConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// gRPC address; port 0 picks a free port (printed on stdout).
    pub listen: String,
    /// Prometheus metrics over HTTP (`GET /metrics`); absent: no metrics endpoint.
    pub metrics_listen: Option<String>,
    /// The Open Inference Protocol's HTTP/JSON routes (`/v2/...`); absent: none. (Its gRPC
    /// service is always on `listen`.)
    pub http_listen: Option<String>,
    /// Largest accepted request message, bytes.
    pub max_message_bytes: usize,
    /// Most rows in one request's batch (inputs or background).
    pub max_request_rows: usize,
    /// Requests one caller may have in flight at once (0: no limit).
    pub max_concurrent_per_caller: usize,
    /// Explainer budget: most rows one explain request may send through the model, its
    /// gradient or its attribution graphs (0: no limit). A plugin's estimate over it refuses
    /// the request before any work; host calls past it fail.
    pub max_model_rows_per_request: u64,
    /// Explainer budget: most bytes of scratch memory one explain request may hold besides its
    /// inputs and results (0: no limit), checked the same two ways.
    pub max_request_bytes: u64,
    /// What the explain requests in flight may reserve together: each reserves its estimated
    /// scratch memory and its results before it allocates them (0: no limit).
    pub max_inflight_bytes: u64,
    /// On SIGTERM, SIGINT or SIGQUIT: how long requests in flight may take to finish before
    /// the daemon stops anyway (under Kubernetes' default 30 s termination grace period).
    pub drain_seconds: u64,
    /// This daemon's name in a fleet: every response carries it (`x-explaind-replica`) and
    /// every audit record names it. Empty (the default): the host name, which is the pod name
    /// under Kubernetes.
    pub replica_id: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsConfig {
    /// The model repository (`<dir>/<name>/<version>/model.onnx`); absent: the bundled demo models.
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginsConfig {
    /// Load `libexplaind_plugin_*` from beside the executable.
    pub bundled: bool,
    /// Further directories; every shared library in them is loaded.
    pub dirs: Vec<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// auto, cpu or cuda.
    pub device: String,
    /// ONNX Runtime shared library (overrides ORT_DYLIB_PATH and `.ort/`).
    pub ort_lib: Option<PathBuf>,
    /// Most rows per ONNX Runtime call.
    pub max_batch_rows: usize,
    /// Threads inside one operator (0: one per core).
    pub intra_threads: usize,
    /// Idle workers spin between runs (default false; see `RuntimeOptions`).
    pub intra_op_spinning: bool,
    pub sessions_per_model: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Budget of the background-activation cache (Deep SHAP), bytes.
    pub activation_bytes: u64,
    /// Working memory of one Deep SHAP backward run, bytes.
    pub chunk_bytes: u64,
    /// Budget of registered background sets, bytes.
    pub background_bytes: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain of the server.
    pub cert: PathBuf,
    /// PEM private key of the server.
    pub key: PathBuf,
    /// PEM CA certificates: set, clients must present a certificate signed by one (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Refuse calls from callers with no token and no client certificate listed below. With no
    /// tokens and no clients listed, every caller has every role (a development setup).
    pub tokens: Vec<TokenEntry>,
    /// Client certificates (mutual TLS) by SHA-256 fingerprint of their DER encoding.
    pub clients: Vec<ClientEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Who the token belongs to, as audit records name the caller.
    pub name: String,
    /// Lower-case hex SHA-256 of the bearer token (the token itself is never stored).
    pub sha256: String,
    /// Any of "predict", "explain", "admin".
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientEntry {
    pub name: String,
    /// Lower-case hex SHA-256 of the client certificate (DER).
    pub cert_sha256: String,
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Directory of the log files (`audit.log`, rotated to `audit.log.<n>`).
    pub dir: PathBuf,
    /// Ed25519 signing key for checkpoints (`explaind audit keygen FILE` makes one).
    pub key: PathBuf,
    /// fsync after every record (0) or at most every this many milliseconds (group commit).
    pub fsync_every_ms: u64,
    /// Records waiting for the writer; when full, `on_full` decides.
    pub queue: usize,
    /// "wait" (the request waits for room, at most `wait_ms`, then UNAVAILABLE) or "reject"
    /// (UNAVAILABLE at once). A record is never dropped: the request fails instead.
    pub on_full: String,
    pub wait_ms: u64,
    /// Keep the request's inputs in the record (privacy: off by default; digests always).
    pub store_inputs: bool,
    /// Start a new file past this size, bytes.
    pub rotate_bytes: u64,
    /// A signed checkpoint every this many records ...
    pub checkpoint_every: u64,
    /// ... and when records have waited this many seconds for one (0: only by count).
    pub checkpoint_seconds: u64,
}

/// The default row budget of one explain request: about a minute of a small CNN on two cores,
/// and far more than any reference method needs at its defaults (Kernel SHAP's 2M+2048
/// coalitions against a 100-row background on the 784-pixel digits model is 0.4 M rows).
pub const DEFAULT_MAX_MODEL_ROWS_PER_REQUEST: u64 = 20_000_000;
/// The default scratch-memory budget of one explain request.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 2 << 30;
/// The default memory all explain requests in flight may reserve together: four requests at
/// their full budget.
pub const DEFAULT_MAX_INFLIGHT_BYTES: u64 = 8 << 30;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:50051".into(),
            metrics_listen: None,
            http_listen: None,
            max_message_bytes: 64 << 20,
            max_request_rows: 4096,
            max_concurrent_per_caller: 0,
            max_model_rows_per_request: DEFAULT_MAX_MODEL_ROWS_PER_REQUEST,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_inflight_bytes: DEFAULT_MAX_INFLIGHT_BYTES,
            drain_seconds: 25,
            replica_id: String::new(),
        }
    }
}

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig { bundled: true, dirs: Vec::new() }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            device: "auto".into(),
            ort_lib: None,
            max_batch_rows: 1024,
            intra_threads: 0,
            intra_op_spinning: false,
            sessions_per_model: 1,
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig { activation_bytes: 512 << 20, chunk_bytes: 256 << 20, background_bytes: 256 << 20 }
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            dir: PathBuf::from("audit"),
            key: PathBuf::from("audit.key"),
            fsync_every_ms: 0,
            queue: 4096,
            on_full: "wait".into(),
            wait_ms: 1000,
            store_inputs: false,
            rotate_bytes: 256 << 20,
            checkpoint_every: 1000,
            checkpoint_seconds: 60,
        }
    }
}

impl Config {
    /// Reads a TOML file; every key is optional, unknown keys are errors.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("--config {}: {e}", path.display()))?;
        let config: Config = toml::from_str(&text).map_err(|e| format!("--config {}: {e}", path.display()))?;
        config.check()?;
        Ok(config)
    }

    /// The file, or the defaults, with the flags given on the command line applied on top.
    pub fn resolve(args: &crate::cli::ServeArgs) -> Result<Config, String> {
        let mut config = match &args.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        config.apply_flags(args);
        config.check()?;
        Ok(config)
    }

    fn apply_flags(&mut self, a: &crate::cli::ServeArgs) {
        fn set<T: Clone>(target: &mut T, flag: &Option<T>) {
            if let Some(value) = flag {
                *target = value.clone();
            }
        }
        set(&mut self.server.listen, &a.listen);
        if a.metrics_listen.is_some() {
            self.server.metrics_listen = a.metrics_listen.clone();
        }
        if a.http_listen.is_some() {
            self.server.http_listen = a.http_listen.clone();
        }
        set(&mut self.server.max_message_bytes, &a.max_message_bytes);
        set(&mut self.server.max_request_rows, &a.max_request_rows);
        set(&mut self.server.max_concurrent_per_caller, &a.max_concurrent_per_caller);
        set(&mut self.server.max_model_rows_per_request, &a.max_model_rows_per_request);
        set(&mut self.server.max_request_bytes, &a.max_request_bytes);
        set(&mut self.server.max_inflight_bytes, &a.max_inflight_bytes);
        set(&mut self.server.drain_seconds, &a.drain_seconds);
        set(&mut self.server.replica_id, &a.replica_id);
        if a.models.is_some() {
            self.models.dir = a.models.clone();
        }
        if a.no_bundled_plugins {
            self.plugins.bundled = false;
        }
        self.plugins.dirs.extend(a.plugin_dirs.iter().cloned());
        set(&mut self.runtime.device, &a.device);
        if a.ort_lib.is_some() {
            self.runtime.ort_lib = a.ort_lib.clone();
        }
        set(&mut self.runtime.max_batch_rows, &a.max_batch_rows);
        set(&mut self.runtime.intra_threads, &a.intra_threads);
        set(&mut self.runtime.intra_op_spinning, &a.intra_op_spinning);
        set(&mut self.runtime.sessions_per_model, &a.sessions_per_model);
        set(&mut self.cache.activation_bytes, &a.cache_bytes);
        set(&mut self.cache.chunk_bytes, &a.chunk_bytes);
        set(&mut self.cache.background_bytes, &a.background_bytes);
        if let (Some(cert), Some(key)) = (&a.tls_cert, &a.tls_key) {
            let client_ca = a.tls_client_ca.clone().or_else(|| self.tls.as_ref().and_then(|t| t.client_ca.clone()));
            self.tls = Some(TlsConfig { cert: cert.clone(), key: key.clone(), client_ca });
        } else if let (Some(tls), Some(ca)) = (&mut self.tls, &a.tls_client_ca) {
            tls.client_ca = Some(ca.clone());
        }
        if let Some(dir) = &a.audit_dir {
            let audit = self.audit.get_or_insert_with(AuditConfig::default);
            audit.dir = dir.clone();
        }
        if let (Some(audit), Some(key)) = (&mut self.audit, &a.audit_key) {
            audit.key = key.clone();
        }
    }

    fn check(&self) -> Result<(), String> {
        self.device()?;
        for roles in self.auth.tokens.iter().map(|t| &t.roles).chain(self.auth.clients.iter().map(|c| &c.roles)) {
            if let Some(bad) = roles.iter().find(|r| !crate::access::ROLES.contains(&r.as_str())) {
                return Err(format!("auth: unknown role {bad:?}: expected one of {}", crate::access::ROLES.join(", ")));
            }
        }
        for digest in self.auth.tokens.iter().map(|t| &t.sha256).chain(self.auth.clients.iter().map(|c| &c.cert_sha256)) {
            if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                return Err(format!("auth: {digest:?} is not a lower-case hex SHA-256"));
            }
        }
        if !self.auth.clients.is_empty() && self.tls.as_ref().and_then(|t| t.client_ca.as_ref()).is_none() {
            return Err("auth.clients needs tls.client_ca: client certificates are only seen under mutual TLS".into());
        }
        let replica = &self.server.replica_id;
        if replica.len() > 128 || !replica.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!("server.replica_id: {replica:?}: at most 128 visible ASCII characters, no spaces"));
        }
        if let Some(audit) = &self.audit {
            if !matches!(audit.on_full.as_str(), "wait" | "reject") {
                return Err(format!("audit.on_full: {:?}: expected \"wait\" or \"reject\"", audit.on_full));
            }
            if audit.queue == 0 {
                return Err("audit.queue: must be at least 1".into());
            }
        }
        Ok(())
    }

    /// The audit log's settings, with its signing key read.
    pub fn audit_log(&self) -> Result<Option<explaind_audit::AuditConfig>, String> {
        let Some(audit) = &self.audit else { return Ok(None) };
        let key = explaind_audit::load_signing_key(&audit.key).map_err(|e| format!("audit.key {}: {e}", audit.key.display()))?;
        let mut log = explaind_audit::AuditConfig::new(audit.dir.join("audit.log"), key);
        log.fsync = match audit.fsync_every_ms {
            0 => explaind_audit::Fsync::EveryRecord,
            ms => explaind_audit::Fsync::EveryMillis(ms),
        };
        log.queue_capacity = audit.queue;
        log.on_full = match audit.on_full.as_str() {
            "reject" => explaind_audit::OnFull::Reject,
            _ => explaind_audit::OnFull::Wait(std::time::Duration::from_millis(audit.wait_ms)),
        };
        log.max_file_bytes = audit.rotate_bytes;
        log.checkpoint_every_records = audit.checkpoint_every;
        log.checkpoint_interval =
            (audit.checkpoint_seconds > 0).then(|| std::time::Duration::from_secs(audit.checkpoint_seconds));
        log.store_inputs = audit.store_inputs;
        log.replica = self.replica_id();
        Ok(Some(log))
    }

    /// `server.replica_id`, or else the host name (`HOSTNAME`, then the kernel's), or else
    /// empty.
    pub fn replica_id(&self) -> String {
        if !self.server.replica_id.is_empty() {
            return self.server.replica_id.clone();
        }
        std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .map(|name| name.trim().to_string())
            .filter(|name| name.len() <= 128 && name.bytes().all(|b| b.is_ascii_graphic()))
            .unwrap_or_default()
    }

    pub fn device(&self) -> Result<explaind_runtime::DeviceChoice, String> {
        self.runtime.device.parse().map_err(|e| format!("runtime.device: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn serve_args(flags: &[&str]) -> crate::cli::ServeArgs {
        let mut argv = vec!["explaind", "serve"];
        argv.extend(flags);
        match crate::cli::Cli::parse_from(argv).command {
            crate::cli::Command::Serve(args) => args,
            _ => unreachable!(),
        }
    }

    #[test]
    fn flags_override_the_file_which_overrides_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("explaind.toml");
        std::fs::write(
            &path,
            "[server]\nlisten = \"0.0.0.0:7000\"\nmax_request_rows = 10\n[cache]\nchunk_bytes = 1234\n[runtime]\ndevice = \"cpu\"\n",
        )
        .unwrap();
        let path = path.to_str().unwrap();
        let config = Config::resolve(&serve_args(&["--config", path, "--max-request-rows", "20"])).unwrap();
        assert_eq!(config.server.listen, "0.0.0.0:7000", "from the file");
        assert_eq!(config.server.max_request_rows, 20, "the flag wins");
        assert_eq!(config.cache.chunk_bytes, 1234);
        assert_eq!(config.cache.activation_bytes, CacheConfig::default().activation_bytes, "default");
        assert_eq!(config.device().unwrap(), explaind_runtime::DeviceChoice::Cpu);
    }

    #[test]
    fn the_production_example_in_deploy_sets_every_section() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/explaind.toml");
        let config = Config::load(&path).unwrap();
        assert!(config.tls.as_ref().unwrap().client_ca.is_some());
        assert_eq!(config.auth.tokens.len(), 2);
        assert_eq!(config.auth.clients.len(), 1);
        assert_eq!(config.audit.as_ref().unwrap().fsync_every_ms, 0);
        assert_eq!(config.server.max_concurrent_per_caller, 8);
        assert_eq!(config.server.metrics_listen.as_deref(), Some("127.0.0.1:9464"));
    }

    #[test]
    fn unknown_keys_bad_roles_and_bad_digests_are_errors_that_name_them() {
        let dir = tempfile::tempdir().unwrap();
        let write = |text: &str| {
            let path = dir.path().join("c.toml");
            std::fs::write(&path, text).unwrap();
            Config::load(&path).unwrap_err()
        };
        assert!(write("[server]\nlissten = \"x\"\n").contains("lissten"));
        let digest = "0".repeat(64);
        let err = write(&format!("[[auth.tokens]]\nname = \"a\"\nsha256 = \"{digest}\"\nroles = [\"root\"]\n"));
        assert!(err.contains("unknown role \"root\""), "{err}");
        let err = write("[[auth.tokens]]\nname = \"a\"\nsha256 = \"XYZ\"\nroles = [\"admin\"]\n");
        assert!(err.contains("lower-case hex SHA-256"), "{err}");
        let err = write(&format!("[[auth.clients]]\nname = \"a\"\ncert_sha256 = \"{digest}\"\nroles = [\"admin\"]\n"));
        assert!(err.contains("tls.client_ca"), "{err}");
        let err = write("[audit]\non_full = \"drop\"\n");
        assert!(err.contains("audit.on_full"), "{err}");
    }
}

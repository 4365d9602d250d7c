//! The command line: `explaind serve`, and client subcommands that talk to a running daemon.

use crate::proto;
use crate::proto::explain_service_client::ExplainServiceClient;
use crate::proto::model_service_client::ModelServiceClient;
use clap::{Args, Parser, Subcommand};
use explaind_runtime::npy;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

#[derive(Parser, Debug)]
#[command(name = "explaind", version, about = "Explains the predictions of ONNX models over gRPC")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon.
    Serve(ServeArgs),
    /// List the models a daemon serves.
    Models(ClientArgs),
    /// List the explainers a daemon has loaded.
    Explainers(ClientArgs),
    /// Run a model on inputs.
    Predict(PredictArgs),
    /// Explain a model's predictions.
    Explain(ExplainArgs),
    /// Audit log tools: make a signing key, verify a log.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Write a new Ed25519 signing key to FILE (mode 0600) and its public key to FILE.pub.
    Keygen { file: PathBuf },
    /// Check a log's hash chain and checkpoint signatures; report the first broken record.
    /// Several directories: a fleet's logs, each its own chain, each reported.
    Verify(AuditVerifyArgs),
    /// List the explanations whose faithfulness metric crosses a threshold, one JSON line each
    /// (e.g. `--metric infidelity --above 0.1`). Checks each line's hash, not the chain.
    Find(AuditFindArgs),
}

#[derive(Args, Debug, Clone)]
pub struct AuditFindArgs {
    /// The metric, as requests name it (`infidelity`, `deletion`, ...).
    #[arg(long)]
    pub metric: String,
    /// Records with a value of the metric above this.
    #[arg(long, required_unless_present = "below")]
    pub above: Option<f64>,
    /// Records with a value of the metric below this.
    #[arg(long)]
    pub below: Option<f64>,
    /// Log files or directories, as for `audit verify`.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct AuditVerifyArgs {
    /// The public key (FILE.pub from `audit keygen`).
    #[arg(long)]
    pub public_key: PathBuf,
    /// Accept a log whose oldest files were deleted (the first entry is then trusted).
    #[arg(long)]
    pub allow_partial: bool,
    /// Log files in chain order; a directory stands for its audit.log and rotated files. Each
    /// directory is one replica's chain, verified on its own; files given one by one are one
    /// chain together.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// The gRPC metadata a fleet's proxy hashes on, so that requests for one background reach the
/// replica that has it cached (deploy/README.md, "Cache affinity").
pub const BACKGROUND_HEADER: &str = "x-explaind-background";

/// What `request` puts in [`BACKGROUND_HEADER`]: the registered id it names, or for rows it
/// carries the id the daemon gives them (`explaind_runtime::digest_arrays`, as
/// RegisterBackground and the Python client compute it), so that a registration and inline
/// requests of one background reach the same replica; none for the model's default.
fn background_routing_key(request: &proto::ExplainRequest) -> Option<String> {
    if !request.background_id.is_empty() {
        return request.background_id.bytes().all(|b| b.is_ascii_alphanumeric()).then(|| request.background_id.clone());
    }
    if request.background.is_empty() {
        return None;
    }
    let rows: Vec<ndarray::ArrayD<f32>> = request
        .background
        .iter()
        .map(|t| crate::convert::tensor_to_array(t.tensor.as_ref(), "background").ok())
        .collect::<Option<_>>()?;
    Some(explaind_runtime::digest_arrays(&rows))
}

/// Runs an `audit` subcommand (local files only; no daemon needed).
pub fn run_audit(command: AuditCommand) -> Result<(), String> {
    match command {
        AuditCommand::Keygen { file } => {
            let public = explaind_audit::generate_key_file(&file).map_err(|e| e.to_string())?;
            let out = json!({
                "secret_key": file.display().to_string(),
                "public_key": explaind_audit::public_key_path(&file).display().to_string(),
                "public_key_hex": public.to_bytes().iter().map(|b| format!("{b:02x}")).collect::<String>(),
            });
            println!("{}", serde_json::to_string_pretty(&out).expect("json"));
            Ok(())
        }
        AuditCommand::Find(args) => run_audit_find(args),
        AuditCommand::Verify(args) => {
            let key = explaind_audit::load_verifying_key(&args.public_key).map_err(|e| e.to_string())?;
            let chains = audit_chains(&args.files)?;
            let options = explaind_audit::VerifyOptions { allow_partial: args.allow_partial };
            if let [chain] = chains.as_slice() {
                let summary =
                    explaind_audit::verify_with(&chain.files, &key, &options).map_err(|e| format!("audit log broken: {e}"))?;
                println!("{}", serde_json::to_string_pretty(&summary_json(&summary)).expect("json"));
                return Ok(());
            }
            let report = explaind_audit::verify_fleet(&chains, &key, &options);
            let out = json!({
                "ok": report.ok(),
                "chains": report.chains.iter().map(|chain| {
                    let mut entry = match &chain.result {
                        Ok(summary) => summary_json(summary),
                        Err(e) => json!({"error": format!("audit log broken: {e}")}),
                    };
                    entry["chain"] = json!(chain.label);
                    entry
                }).collect::<Vec<_>>(),
                "problems": report.problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&out).expect("json"));
            if report.ok() { Ok(()) } else { Err("audit logs broken: see the report above".into()) }
        }
    }
}

fn run_audit_find(args: AuditFindArgs) -> Result<(), String> {
    let query = explaind_audit::MetricQuery { metric: args.metric, above: args.above, below: args.below };
    for chain in audit_chains(&args.files)? {
        let found = explaind_audit::find_metric(&chain.files, &query).map_err(|e| e.to_string())?;
        for m in found {
            let line = json!({
                "chain": chain.label, "file": m.file.display().to_string(), "seq": m.seq, "time": m.time,
                "request_id": m.request_id, "caller": m.caller, "replica": m.replica, "model": m.model,
                "explainer": m.explainer, "metric": query.metric, "max": m.max, "min": m.min,
            });
            println!("{line}");
        }
    }
    Ok(())
}

/// The chains `paths` name: each directory is one replica's log (its `audit.log` and rotated
/// files); the files given one by one are, together and in the order given, one more.
fn audit_chains(paths: &[PathBuf]) -> Result<Vec<explaind_audit::Chain>, String> {
    let mut chains = Vec::new();
    let mut loose = Vec::new();
    for path in paths {
        if path.is_dir() {
            let files = explaind_audit::chain_files(&path.join("audit.log")).map_err(|e| format!("{}: {e}", path.display()))?;
            chains.push(explaind_audit::Chain { label: path.display().to_string(), files });
        } else {
            loose.push(path.clone());
        }
    }
    if !loose.is_empty() {
        let label = loose.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" ");
        chains.push(explaind_audit::Chain { label, files: loose });
    }
    Ok(chains)
}

fn summary_json(summary: &explaind_audit::VerifySummary) -> serde_json::Value {
    json!({
        "files": summary.files,
        "records": summary.records,
        "checkpoints": summary.checkpoints,
        "first_seq": summary.first_seq,
        "last_seq": summary.last_seq,
        "head_hash": summary.head_hash,
        "last_signed_seq": summary.last_signed_seq,
        "unsigned_records": summary.unsigned_records,
        "torn_tail": summary.torn_tail.as_ref().map(|t| format!("{t:?}")),
        "replicas": summary.replicas,
    })
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// TOML file with every option (see README, "Configuration"); the flags below override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:50051). Port 0 picks a free port; the chosen
    /// address is printed.
    #[arg(long)]
    pub listen: Option<String>,
    /// Serve Prometheus metrics over HTTP at this address (GET /metrics).
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// Serve the Open Inference Protocol's HTTP/JSON routes (/v2/...) at this address (plain
    /// HTTP; tokens as on gRPC). Its gRPC service is always on --listen.
    #[arg(long)]
    pub http_listen: Option<String>,
    /// Model repository: <dir>/<name>/<version>/model.onnx. Default: the bundled demo models.
    #[arg(long)]
    pub models: Option<PathBuf>,
    /// Further plugin directories; every shared library in them is loaded. Repeatable.
    #[arg(long = "plugins")]
    pub plugin_dirs: Vec<PathBuf>,
    /// Do not load the bundled plugins (libexplaind_plugin_* beside the executable).
    #[arg(long)]
    pub no_bundled_plugins: bool,
    /// Execution provider: auto (CUDA if the library and a GPU have it), cpu or cuda.
    #[arg(long)]
    pub device: Option<String>,
    /// ONNX Runtime shared library (overrides ORT_DYLIB_PATH and the default .ort/ location).
    #[arg(long)]
    pub ort_lib: Option<PathBuf>,
    /// Largest accepted request message, in bytes (default 64 MiB).
    #[arg(long)]
    pub max_message_bytes: Option<usize>,
    /// Most rows accepted in one request batch (default 4096).
    #[arg(long)]
    pub max_request_rows: Option<usize>,
    /// Requests one caller may have in flight (default 0: no limit).
    #[arg(long)]
    pub max_concurrent_per_caller: Option<usize>,
    /// On SIGTERM, SIGINT or SIGQUIT, seconds requests in flight may take to finish before the
    /// daemon stops anyway (default 25); a second signal stops at once.
    #[arg(long)]
    pub drain_seconds: Option<u64>,
    /// This daemon's name in a fleet, sent back on every response (`x-explaind-replica`) and
    /// written into every audit record (default: the host name, i.e. the pod name under
    /// Kubernetes).
    #[arg(long)]
    pub replica_id: Option<String>,
    /// Explainer budget: most rows one explain request may run through the model and its
    /// compiled graphs (default 20,000,000; 0: no limit).
    #[arg(long)]
    pub max_model_rows_per_request: Option<u64>,
    /// Explainer budget: most bytes of scratch memory one explain request may hold besides its
    /// inputs and results (default 2 GiB; 0: no limit).
    #[arg(long)]
    pub max_request_bytes: Option<u64>,
    /// What the explain requests in flight may reserve together, in bytes: each reserves its
    /// estimated scratch memory and its results first (default 8 GiB; 0: no limit).
    #[arg(long)]
    pub max_inflight_bytes: Option<u64>,
    /// Most rows sent to ONNX Runtime in one call (bounds the memory of large batches; default 1024).
    #[arg(long)]
    pub max_batch_rows: Option<usize>,
    /// Threads ONNX Runtime uses inside one operator (default 0: one per core).
    #[arg(long)]
    pub intra_threads: Option<usize>,
    /// Whether idle ONNX Runtime workers spin between runs (default false): faster back-to-back runs,
    /// but the spinning takes a core from the plugins' own work.
    #[arg(long)]
    pub intra_op_spinning: Option<bool>,
    /// Sessions per model: how many forward passes of one model may run at once (default 1).
    #[arg(long)]
    pub sessions_per_model: Option<usize>,
    /// Memory budget of the background-activation cache (Deep SHAP), in bytes (default 512 MiB).
    #[arg(long)]
    pub cache_bytes: Option<u64>,
    /// Working memory of one Deep SHAP backward run, in bytes: bounds how many background rows
    /// go into one ONNX Runtime call (and the size of each cached chunk; default 256 MiB).
    #[arg(long)]
    pub chunk_bytes: Option<u64>,
    /// Memory budget of registered background sets, in bytes (default 256 MiB).
    #[arg(long)]
    pub background_bytes: Option<u64>,
    /// TLS: the server's PEM certificate chain (with --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS: the server's PEM private key (with --tls-cert).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: PEM CA certificates that client certificates must chain to.
    #[arg(long)]
    pub tls_client_ca: Option<PathBuf>,
    /// Audit log directory: every predict and explain request leaves a record there.
    #[arg(long)]
    pub audit_dir: Option<PathBuf>,
    /// Ed25519 key file that signs the audit log's checkpoints.
    #[arg(long)]
    pub audit_key: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// Address of the daemon.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub addr: String,
}

/// Which daemon, and which model on it.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Model name.
    #[arg(long)]
    pub model: String,
    /// Model version (default: the highest loaded).
    #[arg(long, default_value = "")]
    pub version: String,
}

impl ModelArgs {
    fn model_ref(&self) -> Option<proto::ModelRef> {
        Some(proto::ModelRef { name: self.model.clone(), version: self.version.clone() })
    }
}

#[derive(Args, Debug, Clone)]
pub struct PredictArgs {
    #[command(flatten)]
    pub target: ModelArgs,
    /// Input batch: .npy, .json ({"shape": [...], "data": [...]} or nested lists) or .png; for
    /// a model with several inputs, NAME=FILE once per input. Values are converted to the type
    /// the model declares (token ids are exact up to 2^24).
    #[arg(long = "input", required = true)]
    pub inputs: Vec<String>,
    /// Write the first output to this .npy file instead of printing JSON.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub target: ModelArgs,
    #[arg(long)]
    pub explainer: String,
    /// Input batch: .npy, .json or .png; NAME=FILE once per input for several (see predict).
    #[arg(long = "input", required = true)]
    pub inputs: Vec<String>,
    /// The input to explain (repeatable); the others (an attention mask) are held at their
    /// values. Default: every input.
    #[arg(long = "explain-input")]
    pub explained_inputs: Vec<String>,
    /// A faithfulness metric to compute on the explanation (repeatable): NAME or
    /// NAME:KEY=VALUE;KEY=VALUE, e.g. `infidelity:samples=50` (README, "Faithfulness metrics").
    #[arg(long = "evaluate")]
    pub evaluate: Vec<String>,
    /// Seed of the metrics' random stream (default: the daemon draws one and returns it).
    #[arg(long)]
    pub evaluation_seed: Option<u64>,
    /// Output indices to explain (repeatable). Default: the predicted class.
    #[arg(long = "target", conflicts_with_all = ["top_k", "all_targets"])]
    pub targets: Vec<i64>,
    /// Explain the k highest-scoring outputs of each input.
    #[arg(long)]
    pub top_k: Option<u32>,
    /// Explain every output.
    #[arg(long)]
    pub all_targets: bool,
    /// The model output the targets index into (default: the first).
    #[arg(long, default_value = "")]
    pub output_name: String,
    /// Explainer parameter NAME=VALUE (repeatable): 1,3,3 is a list; 0.5 a number; true a flag.
    #[arg(long = "param")]
    pub params: Vec<String>,
    /// Background rows (.npy/.json), instead of the model's default.
    #[arg(long, conflicts_with = "background_id")]
    pub background: Option<PathBuf>,
    /// A background registered earlier (RegisterBackground), by id.
    #[arg(long, default_value = "")]
    pub background_id: String,
    /// Write the attributions of the first input to this file (.npy), or everything (.json).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also have the daemon draw a figure of the result, written to this .png file: red/blue
    /// heat maps for image inputs [C, H, W], bars or a waterfall for table rows [F].
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Figure layout: auto, image, bars, waterfall or text (token ids; the tokens come from the
    /// model's vocabulary).
    #[arg(long, default_value = "auto", requires = "plot")]
    pub plot_kind: String,
    /// Text figures: draw WordPiece pieces ("##ing") as part of their word.
    #[arg(long, requires = "plot")]
    pub merge_wordpieces: bool,
    /// Features per panel in the tabular layouts.
    #[arg(long, default_value_t = 10, requires = "plot")]
    pub plot_top_k: u32,
}

/// Reads an input batch from `.npy`, `.json` or `.png` (grey, scaled to [0, 1], given the
/// shape [1, 1, H, W]).
pub fn read_input(path: &Path) -> Result<ndarray::ArrayD<f32>, String> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let fail = |e: String| format!("{}: {e}", path.display());
    match ext.as_str() {
        "npy" => npy::read_f32_file(path).map_err(|e| fail(e.to_string())),
        "json" => {
            let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
            let value: Value = serde_json::from_str(&text).map_err(|e| fail(e.to_string()))?;
            json_to_array(&value).map_err(fail)
        }
        "png" => read_png(path).map_err(fail),
        _ => Err(fail("unknown input format: use .npy, .json or .png".into())),
    }
}

fn json_to_array(value: &Value) -> Result<ndarray::ArrayD<f32>, String> {
    if let (Some(shape), Some(data)) = (value.get("shape"), value.get("data")) {
        let shape: Vec<usize> = serde_json::from_value(shape.clone()).map_err(|e| format!("shape: {e}"))?;
        let data: Vec<f32> = serde_json::from_value(data.clone()).map_err(|e| format!("data: {e}"))?;
        return ndarray::ArrayD::from_shape_vec(shape, data).map_err(|e| e.to_string());
    }
    // Nested lists: the shape is read off the first element at each depth.
    let mut shape = Vec::new();
    let mut probe = value;
    while let Value::Array(items) = probe {
        shape.push(items.len());
        match items.first() {
            Some(first) => probe = first,
            None => break,
        }
    }
    let mut data = Vec::new();
    fn flatten(v: &Value, out: &mut Vec<f32>) -> Result<(), String> {
        match v {
            Value::Array(items) => items.iter().try_for_each(|i| flatten(i, out)),
            Value::Number(n) => {
                out.push(n.as_f64().ok_or("not a number")? as f32);
                Ok(())
            }
            other => Err(format!("expected numbers, found {other}")),
        }
    }
    flatten(value, &mut data)?;
    ndarray::ArrayD::from_shape_vec(shape, data).map_err(|_| "nested lists are ragged".to_string())
}

fn read_png(path: &Path) -> Result<ndarray::ArrayD<f32>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    let mut buf = vec![0; reader.output_buffer_size().ok_or("image too large")?];
    let info = reader.next_frame(&mut buf).map_err(|e| e.to_string())?;
    let channels = info.color_type.samples();
    let (w, h) = (info.width as usize, info.height as usize);
    let grey: Vec<f32> = buf[..info.buffer_size()]
        .chunks_exact(channels)
        .map(|px| {
            let rgb = &px[..channels.min(3)];
            rgb.iter().map(|&c| c as f32).sum::<f32>() / rgb.len() as f32 / 255.0
        })
        .collect();
    ndarray::ArrayD::from_shape_vec(vec![1, 1, h, w], grey).map_err(|e| e.to_string())
}

/// Parses NAME=VALUE into an explainer parameter.
/// `--evaluate NAME[:KEY=VALUE;KEY=VALUE]`.
pub fn parse_metric(text: &str) -> Result<proto::MetricRequest, String> {
    let (name, rest) = text.split_once(':').unwrap_or((text, ""));
    let parameters = rest
        .split(';')
        .filter(|p| !p.is_empty())
        .map(|p| parse_param(p).map_err(|e| format!("--evaluate {text:?}: {e}")))
        .collect::<Result<_, _>>()?;
    Ok(proto::MetricRequest { name: name.to_string(), parameters })
}

pub fn parse_param(text: &str) -> Result<(String, proto::ParamValue), String> {
    use proto::param_value::Kind;
    let (name, value) = text.split_once('=').ok_or_else(|| format!("--param {text:?}: expected NAME=VALUE"))?;
    let kind = if value == "true" || value == "false" {
        Kind::Flag(value == "true")
    } else if value.contains(',') {
        let parts: Vec<&str> = value.split(',').map(str::trim).collect();
        if let Ok(ints) = parts.iter().map(|p| p.parse::<i64>()).collect::<Result<Vec<_>, _>>() {
            Kind::Integers(proto::IntegerList { values: ints })
        } else if let Ok(nums) = parts.iter().map(|p| p.parse::<f64>()).collect::<Result<Vec<_>, _>>() {
            Kind::Numbers(proto::NumberList { values: nums })
        } else {
            Kind::Text(value.to_string())
        }
    } else if let Ok(i) = value.parse::<i64>() {
        Kind::Integer(i)
    } else if let Ok(x) = value.parse::<f64>() {
        Kind::Number(x)
    } else {
        Kind::Text(value.to_string())
    };
    Ok((name.to_string(), proto::ParamValue { kind: Some(kind) }))
}

fn tensor_json(t: &proto::Tensor) -> Value {
    let data: Vec<Value> = if t.element_type == proto::ElementType::Int64 as i32 {
        t.data.chunks_exact(8).map(|c| json!(i64::from_le_bytes(c.try_into().unwrap()))).collect()
    } else {
        t.data.chunks_exact(4).map(|c| json!(f32::from_le_bytes(c.try_into().unwrap()))).collect()
    };
    json!({ "shape": t.shape, "data": data })
}

fn param_json(kind: &proto::param_value::Kind) -> Value {
    use proto::param_value::Kind;
    match kind {
        Kind::Number(x) => json!(x),
        Kind::Integer(x) => json!(x),
        Kind::Flag(x) => json!(x),
        Kind::Text(x) => json!(x),
        Kind::Numbers(x) => json!(x.values),
        Kind::Integers(x) => json!(x.values),
    }
}

fn single_input(model_input: ndarray::ArrayD<f32>) -> Vec<proto::NamedTensor> {
    vec![proto::NamedTensor { name: String::new(), tensor: Some(crate::convert::array_to_tensor(&model_input)) }]
}

/// The request tensors of `--input` arguments (FILE, or NAME=FILE per input), each in the
/// element type the model declares for it (asked with GetModel).
async fn model_inputs(target: &ModelArgs, args: &[String]) -> Result<Vec<proto::NamedTensor>, String> {
    let mut client = ModelServiceClient::new(connect(target.client.addr.clone()).await?);
    let metadata =
        client.get_model(proto::GetModelRequest { model: target.model_ref() }).await.map_err(status_text)?.into_inner();
    let mut tensors = Vec::with_capacity(args.len());
    for arg in args {
        let (name, path) = match arg.split_once('=') {
            Some((name, path)) => (name.to_string(), path),
            None if args.len() == 1 && metadata.inputs.len() == 1 => (metadata.inputs[0].name.clone(), arg.as_str()),
            None => return Err(format!("--input {arg}: the model has several inputs; give NAME=FILE for each")),
        };
        let info = metadata.inputs.iter().find(|i| i.name == name).ok_or_else(|| {
            let names: Vec<&str> = metadata.inputs.iter().map(|i| i.name.as_str()).collect();
            format!("--input {arg}: the model has no input {name:?} (inputs: {})", names.join(", "))
        })?;
        let values = read_input(Path::new(path))?;
        let tensor = crate::convert::typed_tensor(&values, info.element_type).map_err(|e| format!("--input {arg}: {e}"))?;
        tensors.push(proto::NamedTensor { name, tensor: Some(tensor) });
    }
    Ok(tensors)
}

fn write_npy(path: &Path, t: &proto::Tensor) -> Result<(), String> {
    let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
    let data: Vec<f32> = t.data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    let mut file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    npy::write_f32(&mut file, &shape, &data).map_err(|e| format!("{}: {e}", path.display()))
}

fn status_text(s: tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

const CLIENT_MESSAGE_LIMIT: usize = 1 << 30;

/// A channel to the daemon at `addr`.
async fn connect(addr: String) -> Result<tonic::transport::Channel, String> {
    tonic::transport::Endpoint::from_shared(addr.clone())
        .map_err(|e| format!("{addr}: {e}"))?
        .connect()
        .await
        .map_err(|e| format!("cannot reach the daemon at {addr}: {e}"))
}

/// Runs a client subcommand against a daemon.
pub async fn run_client(command: Command) -> Result<(), String> {
    let out: Value = match command {
        Command::Serve(_) | Command::Audit(_) => unreachable!("not a client command"),
        Command::Models(args) => {
            let mut client = ModelServiceClient::new(connect(args.addr).await?);
            let models = client.list_models(proto::ListModelsRequest {}).await.map_err(status_text)?.into_inner().models;
            json!(
                models
                    .iter()
                    .map(|m| json!({
                        "name": m.name, "version": m.version, "sha256": m.sha256,
                        "execution_provider": m.execution_provider,
                        "inputs": m.inputs.iter().map(|i| &i.name).collect::<Vec<_>>(),
                        "outputs": m.outputs.iter().map(|o| &o.name).collect::<Vec<_>>(),
                        "labels": m.labels, "description": m.description,
                        "explainability": m.explainability.as_ref().map(|x| json!({
                            "gradients": x.gradients, "gradients_refusal": x.gradients_refusal,
                            "deeplift": x.deeplift, "deeplift_refusal": x.deeplift_refusal,
                            "explainers": x.explainers,
                        })),
                    }))
                    .collect::<Vec<_>>()
            )
        }
        Command::Explainers(args) => {
            let mut client = ExplainServiceClient::new(connect(args.addr).await?);
            let list = client.list_explainers(proto::ListExplainersRequest {}).await.map_err(status_text)?.into_inner();
            json!(
                list.explainers
                    .iter()
                    .map(|e| json!({
                        "name": e.name, "version": e.version, "abi_version": e.abi_version,
                        "description": e.description, "requires": e.requires, "file_sha256": e.file_sha256,
                        "parameters": e.parameters.iter().map(|p| json!({
                            "name": p.name, "kind": p.kind, "required": p.required, "description": p.description,
                            "default": p.default_value.as_ref().and_then(|d| d.kind.as_ref()).map(param_json),
                        })).collect::<Vec<_>>(),
                    }))
                    .collect::<Vec<_>>()
            )
        }
        Command::Predict(args) => {
            let inputs = model_inputs(&args.target, &args.inputs).await?;
            let mut client = ModelServiceClient::new(connect(args.target.client.addr.clone()).await?)
                .max_decoding_message_size(CLIENT_MESSAGE_LIMIT);
            let response = client
                .predict(proto::PredictRequest { model: args.target.model_ref(), inputs })
                .await
                .map_err(status_text)?
                .into_inner();
            if let Some(path) = args.out {
                let first = response.outputs.first().and_then(|o| o.tensor.as_ref()).ok_or("no outputs")?;
                write_npy(&path, first)?;
                return Ok(());
            }
            json!({
                "model": response.model_name, "version": response.model_version, "sha256": response.model_sha256,
                "outputs": response.outputs.iter().map(|o| (o.name.clone(), o.tensor.as_ref().map(tensor_json).unwrap_or_default())).collect::<serde_json::Map<_, _>>(),
            })
        }
        Command::Explain(args) => {
            let inputs = model_inputs(&args.target, &args.inputs).await?;
            let background = match &args.background {
                Some(p) => single_input(read_input(p)?),
                None => Vec::new(),
            };
            use proto::targets::Selection;
            let selection = if !args.targets.is_empty() {
                Selection::Indices(proto::IndexList { values: args.targets.clone() })
            } else if let Some(k) = args.top_k {
                Selection::TopK(k)
            } else if args.all_targets {
                Selection::All(proto::AllOutputs {})
            } else {
                Selection::Predicted(proto::PredictedClass {})
            };
            let parameters = args.params.iter().map(|p| parse_param(p)).collect::<Result<_, _>>()?;
            let mut client = ExplainServiceClient::new(connect(args.target.client.addr.clone()).await?)
                .max_decoding_message_size(CLIENT_MESSAGE_LIMIT);
            let request = proto::ExplainRequest {
                model: args.target.model_ref(),
                explainer: args.explainer,
                inputs,
                targets: Some(proto::Targets { selection: Some(selection) }),
                output: args.output_name,
                parameters,
                background,
                background_id: args.background_id.clone(),
                explained_inputs: args.explained_inputs.clone(),
                evaluate: args.evaluate.iter().map(|m| parse_metric(m)).collect::<Result<_, _>>()?,
                evaluation_seed: args.evaluation_seed.unwrap_or(0),
                plot: args.plot.as_ref().map(|_| proto::PlotOptions {
                    png: true,
                    kind: args.plot_kind.clone(),
                    top_k: args.plot_top_k,
                    merge_wordpieces: args.merge_wordpieces,
                    ..Default::default()
                }),
            };
            let mut request = tonic::Request::new(request);
            if let Some(key) = background_routing_key(request.get_ref()) {
                request.metadata_mut().insert(BACKGROUND_HEADER, key.parse().expect("hex digits are valid metadata"));
            }
            let response = client.explain(request).await.map_err(status_text)?.into_inner();
            if let Some(path) = &args.plot {
                if response.plot_png.is_empty() {
                    return Err("the daemon returned no figure (is it older than this client?)".into());
                }
                std::fs::write(path, &response.plot_png).map_err(|e| format!("{}: {e}", path.display()))?;
                if args.out.is_none() {
                    // The figure was what was asked for: a short summary instead of every value.
                    let summary = json!({
                        "plot": path, "bytes": response.plot_png.len(),
                        "model": response.model_name, "version": response.model_version,
                        "explainer": response.explainer_name,
                    });
                    println!("{}", serde_json::to_string_pretty(&summary).unwrap());
                    return Ok(());
                }
            }
            if let Some(path) = args.out.as_ref().filter(|p| p.extension().is_some_and(|e| e == "npy")) {
                let first = response.attributions.first().and_then(|a| a.values.as_ref()).ok_or("no attributions")?;
                return write_npy(path, first);
            }
            let timing = response.timing.unwrap_or_default();
            let value = json!({
                "model": response.model_name, "version": response.model_version, "model_sha256": response.model_sha256,
                "explainer": response.explainer_name, "explainer_version": response.explainer_version,
                "target_indices": response.target_indices.as_ref().map(tensor_json),
                "attributions": response.attributions.iter().map(|a| (a.input_name.clone(), a.values.as_ref().map(tensor_json).unwrap_or_default())).collect::<serde_json::Map<_, _>>(),
                "base_values": response.base_values.as_ref().map(tensor_json),
                "outputs": response.outputs.iter().map(|o| (o.name.clone(), o.tensor.as_ref().map(tensor_json).unwrap_or_default())).collect::<serde_json::Map<_, _>>(),
                "extras": response.extras.iter().map(|e| (e.name.clone(), e.tensor.as_ref().map(tensor_json).unwrap_or_default())).collect::<serde_json::Map<_, _>>(),
                "info": response.info,
                "evaluation": response.evaluation.iter().map(|m| (m.name.clone(), json!({
                    "values": m.values.as_ref().map(tensor_json).unwrap_or_default(),
                    "extras": m.extras.iter().map(|e| (e.name.clone(), e.tensor.as_ref().map(tensor_json).unwrap_or_default())).collect::<serde_json::Map<_, _>>(),
                }))).collect::<serde_json::Map<_, _>>(),
                "evaluation_seed": response.evaluation_seed,
                "timing": { "total_ms": timing.total_ms, "model_ms": timing.model_ms, "model_calls": timing.model_calls, "model_rows": timing.model_rows },
            });
            if let Some(path) = args.out {
                std::fs::write(&path, serde_json::to_string_pretty(&value).unwrap())
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                return Ok(());
            }
            value
        }
    };
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::param_value::Kind;

    #[test]
    fn params_parse_by_shape_of_value() {
        assert_eq!(
            parse_param("window=1,3,3").unwrap().1.kind,
            Some(Kind::Integers(proto::IntegerList { values: vec![1, 3, 3] }))
        );
        assert_eq!(parse_param("baseline=0.5").unwrap().1.kind, Some(Kind::Number(0.5)));
        assert_eq!(parse_param("steps=50").unwrap().1.kind, Some(Kind::Integer(50)));
        assert_eq!(parse_param("abs=true").unwrap().1.kind, Some(Kind::Flag(true)));
        assert_eq!(parse_param("method=riemann").unwrap().1.kind, Some(Kind::Text("riemann".into())));
        assert!(parse_param("novalue").is_err());
    }

    #[test]
    fn the_background_routing_key_is_the_id_or_a_digest_of_the_rows() {
        let array = ndarray::arr2(&[[1.0f32, 2.0], [3.0, 4.0]]).into_dyn();
        let rows = single_input(array.clone());
        let by_id = proto::ExplainRequest { background_id: "ab12".into(), ..Default::default() };
        assert_eq!(background_routing_key(&by_id).as_deref(), Some("ab12"));
        let inline = proto::ExplainRequest { background: rows, ..Default::default() };
        // The id RegisterBackground gives the same rows.
        assert_eq!(background_routing_key(&inline), Some(explaind_runtime::digest_arrays(&[array])));
        assert_eq!(background_routing_key(&proto::ExplainRequest::default()), None);
        // Not a valid metadata value: no header rather than a failed request.
        let odd = proto::ExplainRequest { background_id: "a b\n".into(), ..Default::default() };
        assert_eq!(background_routing_key(&odd), None);
    }

    #[test]
    fn json_inputs_nested_and_flat() {
        let nested = json_to_array(&json!([[1.0, 2.0], [3.0, 4.0]])).unwrap();
        assert_eq!(nested.shape(), &[2, 2]);
        let flat = json_to_array(&json!({"shape": [1, 2], "data": [5.0, 6.0]})).unwrap();
        assert_eq!(flat.as_slice().unwrap(), &[5.0, 6.0]);
        assert!(json_to_array(&json!([[1.0], [2.0, 3.0]])).is_err());
    }
}

//! Benchmark: the Open Inference Protocol's ModelInfer against the native Predict, in one run,
//! on the digits CNN (one 8x8 image per request): requests per second and latency at 1 and 32
//! concurrent requests, so that the protocol's cost shows if it has one.
//!
//! It starts `target/release/explaind` (CPU, the bundled models) on a free port, then for each
//! API and concurrency runs closed-loop clients on one HTTP/2 connection for WARMUP, then
//! MEASURE. ModelInfer sends the image as raw bytes (what tritonclient sends) and gets raw
//! bytes back; Predict sends and gets explaind's Tensor bytes. Results go to BENCHMARKS.md.
//!
//!     cargo build --release --workspace && cargo run --release --example bench_oip

use explaind::inference::{self as oip, grpc_inference_service_client::GrpcInferenceServiceClient};
use explaind::proto::{self, model_service_client::ModelServiceClient};
use std::io::BufRead;
use std::time::{Duration, Instant};

const WARMUP: Duration = Duration::from_secs(1);
const MEASURE: Duration = Duration::from_secs(5);
const CONCURRENCY: [usize; 2] = [1, 32];
/// The model's input name, from its metadata.
static INPUT_NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();

#[derive(Clone, Copy)]
enum Api {
    Predict,
    ModelInfer,
}

/// One request of `api` for an image; the time it took.
async fn one(api: Api, channel: &tonic::transport::Channel, image: &[f32]) -> Duration {
    let began = Instant::now();
    let bytes: Vec<u8> = image.iter().flat_map(|v| v.to_le_bytes()).collect();
    match api {
        Api::Predict => {
            let tensor = proto::Tensor { element_type: 1, shape: vec![1, 1, 8, 8], data: bytes, ..Default::default() };
            let request = proto::PredictRequest {
                model: Some(proto::ModelRef { name: "digits-cnn".into(), version: String::new() }),
                inputs: vec![proto::NamedTensor { name: String::new(), tensor: Some(tensor) }],
            };
            ModelServiceClient::new(channel.clone()).predict(request).await.expect("Predict");
        }
        Api::ModelInfer => {
            let input = oip::model_infer_request::InferInputTensor {
                name: INPUT_NAME.get().expect("read at start").clone(),
                datatype: "FP32".into(),
                shape: vec![1, 1, 8, 8],
                ..Default::default()
            };
            let request = oip::ModelInferRequest {
                model_name: "digits-cnn".into(),
                inputs: vec![input],
                raw_input_contents: vec![bytes],
                ..Default::default()
            };
            GrpcInferenceServiceClient::new(channel.clone()).model_infer(request).await.expect("ModelInfer");
        }
    }
    began.elapsed()
}

/// Requests per second and the latencies of closed-loop clients.
async fn run(api: Api, channel: &tonic::transport::Channel, clients: usize, image: &[f32]) -> (f64, Vec<Duration>) {
    let stop_warmup = Instant::now() + WARMUP;
    let stop = stop_warmup + MEASURE;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (channel, image) = (channel.clone(), image.to_vec());
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            loop {
                let now = Instant::now();
                if now >= stop {
                    break times;
                }
                let took = one(api, &channel, &image).await;
                if now >= stop_warmup && Instant::now() <= stop {
                    times.push(took);
                }
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    all.sort();
    (all.len() as f64 / MEASURE.as_secs_f64(), all)
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let binary = root.join("target/release/explaind");
    assert!(binary.is_file(), "{} is missing: cargo build --release --workspace", binary.display());
    let mut daemon = std::process::Command::new(&binary)
        .args(["serve", "--listen", "127.0.0.1:0", "--device", "cpu"])
        .current_dir(root)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the daemon");
    let mut line = String::new();
    std::io::BufReader::new(daemon.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let address = line.trim().strip_prefix("explaind listening on ").expect("the listening line").to_string();
    let channel = tonic::transport::Channel::from_shared(format!("http://{address}")).unwrap().connect().await.unwrap();
    let metadata = GrpcInferenceServiceClient::new(channel.clone())
        .model_metadata(oip::ModelMetadataRequest { name: "digits-cnn".into(), version: String::new() })
        .await
        .expect("ModelMetadata")
        .into_inner();
    INPUT_NAME.set(metadata.inputs[0].name.clone()).unwrap();
    let image: Vec<f32> = (0..64).map(|i| (i % 16) as f32 / 16.0).collect();

    println!(
        "digits-cnn, one [1, 1, 8, 8] image per request; {}s per row after {}s of warm-up\n",
        MEASURE.as_secs(),
        WARMUP.as_secs()
    );
    println!("| API | concurrent | requests/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|");
    let mut rates = Vec::new();
    for clients in CONCURRENCY {
        for (name, api) in [("Predict (native)", Api::Predict), ("ModelInfer (OIP)", Api::ModelInfer)] {
            let (rate, times) = run(api, &channel, clients, &image).await;
            println!("| {name} | {clients} | {rate:.0} | {:.3} | {:.3} |", percentile(&times, 0.5), percentile(&times, 0.99));
            rates.push(rate);
        }
    }
    for (i, clients) in CONCURRENCY.iter().enumerate() {
        println!("\nModelInfer / Predict at {clients}: {:.3}", rates[2 * i + 1] / rates[2 * i]);
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
}

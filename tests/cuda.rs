//! The CUDA path. Needs a GPU, CUDA 13 with cuDNN 9, and the CUDA build of ONNX Runtime
//! (`scripts/setup/setup-gpu.sh`); run as README.md's "On a GPU" says:
//!
//! ```text
//! EXPLAIND_TEST_DEVICE=cuda ORT_DYLIB_PATH=$PWD/.ort-gpu/libonnxruntime.so \
//!     cargo test --release --test cuda --test deep_shap --test gradients -- --include-ignored
//! ```
//!
//! With `EXPLAIND_TEST_DEVICE=cuda` every model the test harness loads must run on CUDA, so the
//! Deep SHAP and gradient suites (`tests/deep_shap.rs`, `tests/gradients.rs`) run there too;
//! this file adds what only the GPU has: the background's activations kept in device memory.
mod common;

use common::fixtures::case;
use common::{assert_close, read_npy, repo_root, runtime};
use explaind_attribution::{AttributionEngine, Background, background_digest};
use explaind_runtime::{DeviceChoice, ExecutionProvider, Model};
use ndarray::{Array3, Axis};
use std::sync::Arc;

#[test]
#[ignore = "needs a GPU and the CUDA build of ONNX Runtime (README.md, \"On a GPU\")"]
fn deep_shap_on_the_gpu_matches_shap_with_the_background_resident_in_device_memory() {
    let rt = runtime();
    assert_eq!(rt.options.device, DeviceChoice::Cuda, "run with EXPLAIND_TEST_DEVICE=cuda");
    let engine = AttributionEngine::new(rt, 256 << 20);
    let mut compared = 0;
    for name in ["mlp_tanh_sigmoid", "cnn_bn_pools", "residual", "digits_cnn"] {
        let c = case(name);
        assert_eq!(c.meta["compare_with_shap"], true, "{name} is a case where shap's rules are explaind's");
        let dir = repo_root().join(format!("tests/data/deepshap/{name}"));
        let model = Model::load(rt, name, "1", &dir).unwrap();
        assert_eq!(model.execution_provider, ExecutionProvider::Cuda, "{name} runs on the GPU");
        let output = model.outputs.iter().position(|o| o.name == c.meta["output_name"]).unwrap();

        // All T outputs of every input row: seed (i, j) is the j-th unit vector.
        let (n, t) = (c.x.shape()[0], c.meta["T"].as_u64().unwrap() as usize);
        let seeds = Array3::from_shape_fn((n, t, t), |(_, j, e)| if j == e { 1f32 } else { 0f32 }).into_dyn();
        let rows = vec![c.background.clone()];
        let background = Background { digest: background_digest(&rows), rows: Arc::new(rows) };
        let never = || false;

        let cold = engine.deep_shap(&model, output, &[c.x.view()], seeds.view(), &background, &never).unwrap();
        let warm = engine.deep_shap(&model, output, &[c.x.view()], seeds.view(), &background, &never).unwrap();
        assert_eq!(cold.background_location, ExecutionProvider::Cuda, "{name}: activations cached in device memory");
        assert_eq!(warm.background_location, ExecutionProvider::Cuda);
        // The warm request reads the cache: only the inputs' rows and the backward runs go
        // through ONNX Runtime, not the background's forward pass.
        let k = c.background.shape()[0] as u64;
        assert_eq!(cold.stats.rows - warm.stats.rows, 2 * k, "{name}: the background pass ran once");

        let shap = read_npy(&format!("tests/data/deepshap/{name}/shap.npy"));
        for result in [&cold, &warm] {
            assert_close(result.attributions[0].as_slice().unwrap(), shap.as_slice().unwrap(), 1e-4, 0.0);
        }
        let expected = read_npy(&format!("tests/data/deepshap/{name}/expected_value.npy"));
        for row in warm.expected.axis_iter(Axis(0)) {
            assert_close(row.as_slice().unwrap(), expected.as_slice().unwrap(), 1e-5, 1e-5);
        }
        compared += 1;
    }
    assert_eq!(compared, 4);
    let stats = engine.cache_stats();
    assert!(stats.hits >= 4 && stats.bytes > 0, "{stats:?}");
}

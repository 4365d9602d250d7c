//! The crate against shap's TreeExplainer on real converter output (tests/data/trees, written by
//! scripts/fixtures/make_tree_fixtures.py): scikit-learn models exported by skl2onnx, XGBoost and LightGBM models
//! exported by onnxmltools. For every case:
//!
//! * the raw margin (`predict_raw`) equals the library's raw margin, and with `post_transform` applied
//!   equals onnxruntime's recorded output;
//! * interventional SHAP values and the expected value equal shap's (`feature_perturbation =
//!   "interventional"`, `model_output = "raw"`, the same background);
//! * path-dependent SHAP values (and interactions where recorded) equal shap's when given shap's covers
//!   (`shap_covers.npy`, laid out in ONNX node order by the script): the ONNX files carry no usable covers
//!   (skl2onnx and onnxmltools' LightGBM converter write `nodes_hitrates` as all 1.0, onnxmltools'
//!   XGBoost converter writes none);
//! * `covers_from_rows` on the training rows reproduces shap's covers exactly where shap's covers are
//!   training counts (the script records which), and does not elsewhere (bootstrap counts of random
//!   forests, hessian sums of XGBoost's logistic loss).

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use explaind_onnx::ModelProto;
use explaind_onnx::proto::attribute_proto::AttributeType;
use explaind_onnx::proto::tensor_proto::DataType;
use explaind_onnx::{AttributeProto, NodeProto, TensorProto};
use explaind_tree_shap::{
    AttrValue, OpKind, TensorData, TreeEnsemble, apply_post_transform, interventional_shap, path_dependent_interactions,
    path_dependent_shap,
};

/// Absolute tolerance of every comparison with shap and onnxruntime.
const TOL: f64 = 1e-5;

fn never() -> bool {
    false
}

fn case_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/trees").join(case)
}

/// A little-endian, C-order `.npy` array of f4 or f8, widened to f64.
struct Npy {
    shape: Vec<usize>,
    data: Vec<f64>,
}

fn read_npy(path: &Path) -> Npy {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{}: not an npy file", path.display());
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len]).unwrap();
    assert!(header.contains("'fortran_order': False"), "{}: Fortran order", path.display());
    let descr = header.split("'descr':").nth(1).unwrap().split('\'').nth(1).unwrap();
    let shape_text = header.split("'shape':").nth(1).unwrap();
    let shape_text = &shape_text[shape_text.find('(').unwrap() + 1..shape_text.find(')').unwrap()];
    let shape: Vec<usize> = shape_text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect();
    let body = &bytes[start + header_len..];
    let data: Vec<f64> = match descr {
        "<f4" => body.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        "<f8" => body.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect(),
        other => panic!("{}: unsupported dtype {other}", path.display()),
    };
    assert_eq!(data.len(), shape.iter().product::<usize>(), "{}", path.display());
    Npy { shape, data }
}

fn read_f32(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let a = read_npy(path);
    (a.shape, a.data.iter().map(|&v| v as f32).collect())
}

/// A tensor attribute's values, decoded from the typed field or little-endian `raw_data`.
fn tensor_data(t: &TensorProto) -> TensorData<'_> {
    let raw = t.raw_data.as_deref();
    let ty = DataType::try_from(t.data_type()).unwrap_or(DataType::Undefined);
    match ty {
        DataType::Float => TensorData::F32(match raw {
            Some(r) => Cow::Owned(r.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()),
            None => Cow::Borrowed(&t.float_data),
        }),
        DataType::Double => TensorData::F64(match raw {
            Some(r) => Cow::Owned(r.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect()),
            None => Cow::Borrowed(&t.double_data),
        }),
        DataType::Int64 => TensorData::I64(match raw {
            Some(r) => Cow::Owned(r.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()),
            None => Cow::Borrowed(&t.int64_data),
        }),
        DataType::Uint8 => TensorData::U8(match raw {
            Some(r) => Cow::Borrowed(r),
            None => Cow::Owned(t.int32_data.iter().map(|&v| v as u8).collect()),
        }),
        other => panic!("tensor attribute of type {other:?}"),
    }
}

/// The neutral view of one ONNX attribute.
fn attr_value(a: &AttributeProto) -> AttrValue<'_> {
    match a.r#type() {
        AttributeType::Int => AttrValue::Int(a.i()),
        AttributeType::Ints => AttrValue::Ints(&a.ints),
        AttributeType::Float => AttrValue::Float(a.f()),
        AttributeType::Floats => AttrValue::Floats(&a.floats),
        AttributeType::String => AttrValue::String(a.s()),
        AttributeType::Strings => AttrValue::Strings(a.strings.iter().map(Vec::as_slice).collect()),
        AttributeType::Tensor => AttrValue::Tensor(tensor_data(a.t.as_ref().expect("tensor attribute without a tensor"))),
        other => panic!("attribute {} of type {other:?}", a.name()),
    }
}

fn parse_node(node: &NodeProto) -> TreeEnsemble {
    TreeEnsemble::from_attributes(node.op_type(), |name| node.attr(name).map(attr_value))
        .unwrap_or_else(|e| panic!("{}: {e}", node.op_type()))
}

struct Fixture {
    meta: serde_json::Value,
    ens: TreeEnsemble,
    x: Vec<f32>,
    n_rows: usize,
    n_features: usize,
    background: Vec<f32>,
    train: Vec<f32>,
    n_targets: usize,
}

impl Fixture {
    fn load(case: &str) -> Fixture {
        let dir = case_dir(case);
        let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
        let model = ModelProto::load(dir.join("model.onnx")).unwrap();
        let graph = model.graph.as_ref().unwrap();
        let nodes: Vec<&NodeProto> = graph.node.iter().filter(|n| n.op_type().starts_with("TreeEnsemble")).collect();
        assert_eq!(nodes.len(), 1, "{case}: one TreeEnsemble* node expected");
        assert_eq!(nodes[0].domain(), "ai.onnx.ml");
        assert_eq!(nodes[0].op_type(), meta["operator"].as_str().unwrap());
        let ens = parse_node(nodes[0]);
        let (xs, x) = read_f32(&dir.join("x.npy"));
        let (bs, background) = read_f32(&dir.join("background.npy"));
        let (ts, train) = read_f32(&dir.join("train.npy"));
        assert_eq!(xs[1], bs[1]);
        assert_eq!(xs[1], ts[1]);
        let n_targets = meta["n_targets"].as_u64().unwrap() as usize;
        assert_eq!(ens.n_targets(), n_targets, "{case}: targets");
        Fixture { meta, ens, x, n_rows: xs[0], n_features: xs[1], background, train, n_targets }
    }

    fn npy(&self, file: &str) -> Npy {
        read_npy(&case_dir(self.meta["case"].as_str().unwrap()).join(file))
    }
}

fn max_abs_diff(a: impl IntoIterator<Item = f64>, b: impl IntoIterator<Item = f64>) -> f64 {
    a.into_iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// Runs every check on one case and prints the agreement figures (visible with `--nocapture`).
fn check_case(case: &str) {
    let fx = Fixture::load(case);
    let (ens, f, t) = (&fx.ens, fx.n_features, fx.n_targets);
    let mut report = vec![format!("{case}: {:?} {} trees, {} targets", ens.kind(), ens.n_trees(), t)];

    // Raw margin against the library's, and through post_transform against onnxruntime.
    let raw = fx.npy("raw.npy");
    assert_eq!(raw.shape, [fx.n_rows, t]);
    let onnx_out = fx.npy("onnx_output.npy");
    let mut margins = Vec::new();
    let (mut d_raw, mut d_ort) = (0.0f64, 0.0f64);
    for (r, x) in fx.x.chunks_exact(f).enumerate() {
        let mut m = vec![0.0; t];
        ens.predict_raw(x, &mut m).unwrap();
        d_raw = d_raw.max(max_abs_diff(m.iter().copied(), raw.data[r * t..(r + 1) * t].iter().copied()));
        margins.extend_from_slice(&m);
        let mut p = m.clone();
        apply_post_transform(ens.post_transform(), &mut p);
        let cols = onnx_out.shape[1];
        let ort_row = &onnx_out.data[r * cols..(r + 1) * cols];
        let expected: Vec<f64> = if ens.kind() == OpKind::Classifier && t == 1 {
            // ONNX Runtime's binary case: one score, the positive class's; the output holds (1 - p, p).
            assert_eq!(cols, 2);
            vec![1.0 - p[0], p[0]]
        } else {
            assert_eq!(cols, t);
            p
        };
        d_ort = d_ort.max(max_abs_diff(expected, ort_row.iter().copied()));
    }
    assert!(d_raw <= TOL, "{case}: predict_raw differs from the library's raw margin by {d_raw:e}");
    assert!(d_ort <= TOL, "{case}: predict_raw + post_transform differs from onnxruntime by {d_ort:e}");
    report.push(format!("  margin vs library {d_raw:.1e}, vs onnxruntime (after {:?}) {d_ort:.1e}", ens.post_transform()));

    // Interventional.
    let iv = interventional_shap(ens, &fx.x, &fx.background, f, 1, &never).unwrap();
    let want = fx.npy("interventional_shap.npy");
    assert_eq!(want.shape, [fx.n_rows, f, t]);
    let d_iv = max_abs_diff(iv.values.iter().copied(), want.data.iter().copied());
    let d_iv_ev = max_abs_diff(iv.expected_value.iter().copied(), fx.npy("interventional_expected.npy").data);
    assert!(d_iv <= TOL, "{case}: interventional values differ from shap's by {d_iv:e}");
    assert!(d_iv_ev <= TOL, "{case}: interventional expected value differs from shap's by {d_iv_ev:e}");
    // Efficiency against our own margin.
    for r in 0..fx.n_rows {
        for k in 0..t {
            let s: f64 = (0..f).map(|i| iv.get(r, i, k)).sum::<f64>() + iv.expected_value[k];
            assert!((s - margins[r * t + k]).abs() <= 1e-9, "{case}: interventional efficiency");
        }
    }
    report.push(format!("  interventional: values {d_iv:.1e}, expected value {d_iv_ev:.1e}"));

    // Covers: the ONNX file's hit rates are no covers; shap's, and counted ones.
    if let Some(h) = ens.hitrate_covers() {
        assert!(fx.meta["has_nodes_hitrates"].as_bool().unwrap());
        assert!(h.iter().all(|&v| v == 1.0), "{case}: expected the converters' placeholder hit rates of 1.0");
    } else {
        assert!(!fx.meta["has_nodes_hitrates"].as_bool().unwrap());
    }
    if fx.meta["shap_covers"].is_null() {
        // shap cannot explain this model (multi-class boosting): the interventional reference
        // is a brute-force enumeration (see the script), and there is no path-dependent one.
        report.push(format!("  reference: {}", fx.meta["interventional_reference"]));
        eprintln!("{}", report.join("\n"));
        return;
    }
    let shap_covers = fx.npy("shap_covers.npy").data;
    assert_eq!(shap_covers.len(), ens.nodes().len());
    let counted = ens.covers_from_rows(&fx.train, f).unwrap();
    let counts_match = fx.meta["shap_covers_equal_train_counts"].as_bool().unwrap();
    assert_eq!(counted == shap_covers, counts_match, "{case}: covers_from_rows(train) vs shap's covers");
    report.push(format!("  covers_from_rows(train) == shap's covers: {counts_match}"));

    // Path-dependent with shap's covers.
    let pd = path_dependent_shap(ens, &shap_covers, &fx.x, f, 1, &never).unwrap();
    let want = fx.npy("path_dependent_shap.npy");
    assert_eq!(want.shape, [fx.n_rows, f, t]);
    let d_pd = max_abs_diff(pd.values.iter().copied(), want.data.iter().copied());
    let d_pd_ev = max_abs_diff(pd.expected_value.iter().copied(), fx.npy("path_dependent_expected.npy").data);
    assert!(d_pd <= TOL, "{case}: path-dependent values differ from shap's by {d_pd:e}");
    assert!(d_pd_ev <= TOL, "{case}: path-dependent expected value differs from shap's by {d_pd_ev:e}");
    report.push(format!("  path-dependent (shap's covers): values {d_pd:.1e}, expected value {d_pd_ev:.1e}"));
    if let Some(h) = ens.hitrate_covers() {
        // The placeholder hit rates define another game (every branch split 1/2 : 1/2): not shap's.
        let placeholder = path_dependent_shap(ens, &h, &fx.x, f, 1, &never).unwrap();
        let d = max_abs_diff(placeholder.values.iter().copied(), want.data.iter().copied());
        assert!(d > 1e-3, "{case}: placeholder hit rates unexpectedly reproduce shap ({d:e})");
        report.push(format!("  path-dependent with the file's hit rates (all 1.0) differs from shap by {d:.1e}"));
    }
    if counts_match {
        let pd2 = path_dependent_shap(ens, &counted, &fx.x, f, 1, &never).unwrap();
        assert_eq!(pd2.values, pd.values, "{case}: same covers, same values");
    }

    // Interactions.
    if fx.meta["has_interactions"].as_bool().unwrap() {
        let iv = path_dependent_interactions(ens, &shap_covers, &fx.x, f, 1, &never).unwrap();
        let want = fx.npy("interactions.npy");
        assert_eq!(want.shape, [fx.n_rows, f, f, t]);
        let d_int = max_abs_diff(iv.values.iter().copied(), want.data.iter().copied());
        assert!(d_int <= TOL, "{case}: interaction values differ from shap's by {d_int:e}");
        report.push(format!("  interactions (shap's covers): {d_int:.1e}"));
    }
    eprintln!("{}", report.join("\n"));
}

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check_case(stringify!($name));
            }
        )*

        #[test]
        fn every_fixture_has_a_test() {
            let mut on_disk: Vec<String> = std::fs::read_dir(case_dir(""))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| case_dir(n).join("meta.json").exists())
                .collect();
            on_disk.sort();
            let mut listed = vec![$(stringify!($name).to_string()),*];
            listed.sort();
            assert_eq!(on_disk, listed);
        }
    };
}

cases!(
    sklearn_gbr,
    sklearn_rfr,
    sklearn_etr,
    sklearn_gbc,
    sklearn_rfc,
    sklearn_hgbr,
    xgb_regressor,
    xgb_classifier,
    xgb_multiclass,
    sklearn_gbc3,
    lgbm_regressor,
);

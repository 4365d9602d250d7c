//! Attribution at an input's embedding, shared by the layer modes of integrated gradients and
//! Deep SHAP (ABI 1.5 `layer_activation`, `layer_gradient_at`, `layer_deeplift_at`).
//!
//! Token ids have no gradient; their embedding E (the `Gather` that looks them up, [S] -> [S, H])
//! does. A layer method attributes at E, and the attribution of input position s is the sum of
//! E's attributions over its trailing (embedding) axes. [`Embedding`] checks that the layer
//! extends the input's shape that way and does that sum; the per-dimension values are an extra
//! (`layer_attributions`) on request.

use explaind_plugin_sdk::{Context, Error, ParamDefault, ParamKind, PluginInfo, Request, TensorView};

/// The parameters every layer mode declares: the layer and the per-dimension extra.
pub fn declare_params(info: PluginInfo) -> PluginInfo {
    info.param(
        "layer",
        ParamKind::Text,
        ParamDefault::Optional,
        "Attribute at this tensor (by ONNX name), an embedding of the explained input, instead of the input itself. \
         Default for token ids and other integer inputs: their embedding (the output of the Gather that looks them up).",
    )
    .max_len(4096)
    .param(
        "layer_attributions",
        ParamKind::Flag,
        ParamDefault::Flag(false),
        "With a layer: also return the attributions at the layer itself, the extra `layer_attributions` \
         [N, T, *layer_shape] (summed over the embedding axes, they are the attributions).",
    )
}

/// Whether the request asks for attribution at a layer: a `layer` parameter, or an integer
/// input explained (which has no gradient of its own). `Some(index of the explained input)`.
pub fn wanted(request: &Request<'_>, explainer: &str) -> Result<Option<usize>, Error> {
    let layer = request.text("layer")?.filter(|l| !l.is_empty());
    let explained = request.single_explained_input(explainer);
    let integer = explained.as_ref().is_ok_and(|&i| request.input_is_integer(i));
    if layer.is_none() && !integer {
        return Ok(None);
    }
    explained.map(Some)
}

/// The layer a request names (`None`: the host's default, the explained input's embedding).
pub fn layer_param<'a>(request: &Request<'a>) -> Result<Option<&'a str>, Error> {
    Ok(request.text("layer")?.filter(|l| !l.is_empty()))
}

/// A host error about the layer ("layer: ...", from the ABI 1.5 layer functions) as a refusal
/// of the request's `parameters.layer`, which is what the client set.
pub fn as_parameter_error(e: Error) -> Error {
    match e.message.strip_prefix("layer:") {
        Some(rest) => Error::new(e.code, format!("parameters.layer:{rest}")),
        None => e,
    }
}

/// A layer that extends an input's shape ([N, *input] -> [N, *input, *embedding]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Embedding {
    /// Elements of one input row.
    pub input_row: usize,
    /// Elements of one layer row.
    pub layer_row: usize,
    /// Layer elements per input element (the embedding's size).
    pub width: usize,
    /// The layer's shape, batch axis first.
    pub shape: Vec<i64>,
}

impl Embedding {
    /// Checks that `layer_shape` (batch first) extends `input_shape`: an invalid argument
    /// naming `layer` otherwise.
    pub fn of(layer: &str, layer_shape: &[i64], input: &str, input_shape: &[i64]) -> Result<Self, Error> {
        let input_row: i64 = input_shape.iter().skip(1).product();
        let layer_row: i64 = layer_shape.iter().skip(1).product();
        let extends = layer_shape.len() > input_shape.len() && layer_shape[1..input_shape.len()] == input_shape[1..];
        if !extends || input_row <= 0 || layer_row % input_row != 0 {
            return Err(Error::invalid_argument(format!(
                "parameters.layer: {layer:?} has shape {:?}, which does not extend input {input:?}'s {:?}; attribution at a layer is \
                 given per input element, so the layer must be an embedding of the input",
                &layer_shape[1..],
                &input_shape[1..]
            )));
        }
        Ok(Embedding {
            input_row: input_row as usize,
            layer_row: layer_row as usize,
            width: (layer_row / input_row) as usize,
            shape: layer_shape.to_vec(),
        })
    }

    /// Adds `weight · g · d` to the per-position sums `positions` (one input row) and, when
    /// given, elementwise to `layer_out` (one layer row). `g` and `d` are one layer row.
    pub fn add_weighted(&self, positions: &mut [f32], layer_out: Option<&mut [f32]>, g: &[f32], d: &[f32], weight: f32) {
        for (e, out) in positions.iter_mut().enumerate() {
            let span = e * self.width..(e + 1) * self.width;
            *out += weight * g[span.clone()].iter().zip(&d[span]).map(|(g, d)| g * d).sum::<f32>();
        }
        if let Some(layer_out) = layer_out {
            for ((out, g), d) in layer_out.iter_mut().zip(g).zip(d) {
                *out += weight * g * d;
            }
        }
    }

    /// The `layer_attributions` extra [N, T, *layer_shape] when the request asks for it.
    pub fn layer_results<'c>(&self, ctx: &'c Context<'_>, request: &Request<'_>) -> Result<Option<&'c mut [f32]>, Error> {
        if !request.flag("layer_attributions")? {
            return Ok(None);
        }
        let mut shape = vec![request.batch_size() as i64, request.num_targets() as i64];
        shape.extend(&self.shape[1..]);
        ctx.extra("layer_attributions", &shape).map(Some)
    }
}

/// The model inputs of a batch of layer rows: for each batch row, the request's row it was
/// built from, of every input (the values the rest of the model reads while the layer's are
/// set).
pub struct HeldRows {
    rows: usize,
    data: Vec<Vec<f32>>,
    shapes: Vec<Vec<i64>>,
}

impl HeldRows {
    pub fn new(request: &Request<'_>) -> Self {
        let inputs = request.inputs();
        HeldRows { rows: 0, data: vec![Vec::new(); inputs.len()], shapes: inputs.iter().map(|x| x.shape.to_vec()).collect() }
    }

    pub fn clear(&mut self) {
        self.rows = 0;
        self.data.iter_mut().for_each(Vec::clear);
    }

    /// Appends request row `n` of every input.
    pub fn push(&mut self, request: &Request<'_>, n: usize) {
        for (input, rows) in request.inputs().iter().zip(&mut self.data) {
            rows.extend_from_slice(input.row(n));
        }
        self.rows += 1;
    }

    /// The rows pushed since the last `clear`, one view per model input.
    pub fn views(&mut self) -> Vec<TensorView<'_>> {
        for shape in &mut self.shapes {
            shape[0] = self.rows as i64;
        }
        self.shapes.iter().zip(&self.data).map(|(s, d)| TensorView::new(s, d)).collect()
    }
}

/// `shape` with its first (batch) axis set to `rows`.
pub fn with_rows(shape: &[i64], rows: usize) -> Vec<i64> {
    std::iter::once(rows as i64).chain(shape.iter().skip(1).copied()).collect()
}

/// Writes base values and the residual extra `name`: per (input row, target), Σφ over the
/// row's `results` minus (f(x) − base), with `base(i, target)` the base value.
pub fn report_residual(
    ctx: &Context<'_>,
    request: &Request<'_>,
    results: &[f32],
    base: impl Fn(usize, usize) -> f64,
    name: &str,
) -> Result<(), Error> {
    let (n, t) = (request.batch_size(), request.num_targets());
    let base_values = ctx.base_values()?;
    let residual = ctx.extra(name, &[n as i64, t as i64])?;
    let len = results.len() / (n * t).max(1);
    let mut ticker = ctx.ticker();
    for i in 0..n {
        for (j, &target) in request.targets(i).iter().enumerate() {
            ticker.tick(len + 1)?;
            let k = i * t + j;
            let b = base(i, target as usize);
            base_values[k] = b as f32;
            let sum: f64 = results[k * len..(k + 1) * len].iter().map(|&v| v as f64).sum();
            residual[k] = (sum - (request.outputs().row(i)[target as usize] as f64 - b)) as f32;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_embedding_extends_the_input_shape() {
        let e = Embedding::of("emb", &[2, 10, 32], "ids", &[2, 10]).unwrap();
        assert_eq!((e.input_row, e.layer_row, e.width), (10, 320, 32));
        let err = Embedding::of("conv", &[2, 8, 5, 5], "image", &[2, 3, 5, 5]).unwrap_err();
        assert!(
            err.message
                .starts_with("parameters.layer: \"conv\" has shape [8, 5, 5], which does not extend input \"image\"'s [3, 5, 5]")
        );
        let host = Error::invalid_argument("layer: model m has no tensor named \"x\"");
        assert_eq!(as_parameter_error(host).message, "parameters.layer: model m has no tensor named \"x\"");
        assert!(Embedding::of("same", &[2, 10], "ids", &[2, 10]).is_err(), "a layer of the input's own shape is no embedding");
    }

    #[test]
    fn positions_sum_their_embedding() {
        let e = Embedding::of("emb", &[1, 2, 3], "ids", &[1, 2]).unwrap();
        let (mut positions, mut layer) = (vec![0f32; 2], vec![0f32; 6]);
        let g = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let d = [1.0, 1.0, 1.0, 0.5, 0.0, -1.0];
        e.add_weighted(&mut positions, Some(&mut layer), &g, &d, 2.0);
        assert_eq!(positions, [12.0, 2.0 * (2.0 - 6.0)]);
        assert_eq!(layer, [2.0, 4.0, 6.0, 4.0, 0.0, -12.0]);
    }
}

//! Elementwise operators: `Identity`, `Dropout`, `Cast`, `Neg`, the arithmetic `Add`, `Sub`,
//! `Sum`, `Mul` and `Div` (with numpy broadcasting), the unary nonlinearities `Relu`,
//! `LeakyRelu`, `PRelu`, `Elu`, `Selu`, `Celu`, `Sigmoid`, `Tanh`, `Exp`, `Log`, `Softplus`,
//! `Softsign`, `Erf`, `Sqrt`, `Reciprocal`, `Abs`, `Sin`, `Cos`, `Pow` (constant exponent) and
//! `Clip`, and the n-ary `Min` and `Max` (with broadcasting; on ties the first input holding
//! the extreme gets the whole gradient).

use super::{Emitter, VjpResult, VjpRule, form, input as x, no_gradients, output};
use explaind_onnx::proto::tensor_proto::DataType;
use explaind_onnx::{AttributeProto, NodeProto};

pub(crate) const RULES: &[(&str, VjpRule)] = &[
    ("Identity", pass_through),
    ("Dropout", pass_through),
    ("Cast", cast),
    ("Neg", neg),
    ("Add", add_sub),
    ("Sub", add_sub),
    ("Sum", sum),
    ("Mul", mul),
    ("Div", div),
    ("Relu", relu),
    ("LeakyRelu", leaky_relu),
    ("Elu", elu),
    ("Sigmoid", sigmoid),
    ("Tanh", tanh),
    ("Exp", exp),
    ("Softplus", softplus),
    ("Erf", erf),
    ("Sqrt", sqrt),
    ("Reciprocal", reciprocal),
    ("Clip", clip),
    ("Abs", abs),
    ("Log", log),
    ("Sin", sin),
    ("Cos", cos),
    ("Softsign", softsign),
    ("Selu", selu),
    ("Celu", celu),
    ("PRelu", prelu),
    ("Pow", pow),
    ("Min", min_max),
    ("Max", min_max),
];

/// The gradient of the first input is `g` itself.
fn first(node: &NodeProto, g: String) -> VjpResult {
    let mut out = no_gradients(node);
    out[0] = Some(g);
    Ok(out)
}

fn pass_through(_: &mut Emitter<'_>, node: &NodeProto, g0: &str, _: &[bool]) -> VjpResult {
    first(node, g0.to_string())
}

fn cast(_: &mut Emitter<'_>, node: &NodeProto, g0: &str, _: &[bool]) -> VjpResult {
    let to = node.attr_int("to").unwrap_or(0);
    let float_types = [DataType::Float, DataType::Double, DataType::Float16, DataType::Bfloat16];
    if float_types.iter().any(|t| *t as i64 == to) {
        return first(node, g0.to_string());
    }
    Ok(no_gradients(node))
}

fn neg(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, _: &[bool]) -> VjpResult {
    first(node, e.node("Neg", &[g0], vec![]))
}

fn add_sub(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, varies: &[bool]) -> VjpResult {
    let mut out = no_gradients(node);
    if varies[0] {
        out[0] = Some(e.unbroadcast_to_input(g0, node, 0));
    }
    if varies[1] {
        // Negated after any reduction to the operand's shape (a mean subtracted from a row is
        // one value per row), which is exact and smaller.
        let g1 = e.unbroadcast_to_input(g0, node, 1);
        out[1] = Some(if node.op_type() == "Sub" { e.node("Neg", &[&g1], vec![]) } else { g1 });
    }
    Ok(out)
}

fn sum(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, varies: &[bool]) -> VjpResult {
    let mut out = no_gradients(node);
    for i in 0..node.input.len() {
        if varies[i] {
            out[i] = Some(e.unbroadcast_to_input(g0, node, i));
        }
    }
    Ok(out)
}

fn mul(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, varies: &[bool]) -> VjpResult {
    let mut out = no_gradients(node);
    if varies[0] {
        let p = e.node("Mul", &[g0, x(node, 1)], vec![]);
        out[0] = Some(e.unbroadcast_to_input(&p, node, 0));
    }
    if varies[1] {
        let p = e.node("Mul", &[g0, x(node, 0)], vec![]);
        out[1] = Some(e.unbroadcast_to_input(&p, node, 1));
    }
    Ok(out)
}

fn div(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, varies: &[bool]) -> VjpResult {
    let mut out = no_gradients(node);
    if varies[0] {
        let p = e.node("Div", &[g0, x(node, 1)], vec![]);
        out[0] = Some(e.unbroadcast_to_input(&p, node, 0));
    }
    if varies[1] {
        // d(a/b)/db = -a/b² = -y/b
        let p = e.node("Mul", &[g0, output(node)], vec![]);
        let p = e.node("Div", &[&p, x(node, 1)], vec![]);
        let p = e.node("Neg", &[&p], vec![]);
        out[1] = Some(e.unbroadcast_to_input(&p, node, 1));
    }
    Ok(out)
}

fn relu(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, _: &[bool]) -> VjpResult {
    let zero = e.scalar(0.0);
    let positive = e.node("Greater", &[x(node, 0), &zero], vec![]);
    first(node, e.mask(&positive, g0))
}

fn leaky_relu(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, _: &[bool]) -> VjpResult {
    let alpha = e.scalar(node.attr_float("alpha").unwrap_or(0.01));
    let zero = e.scalar(0.0);
    let positive = e.node("Greater", &[x(node, 0), &zero], vec![]);
    let scaled = e.node("Mul", &[g0, &alpha], vec![]);
    first(node, e.select(&positive, g0, &scaled))
}

fn elu(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, _: &[bool]) -> VjpResult {
    // For x <= 0: y = alpha (exp(x) - 1), so dy/dx = y + alpha.
    let alpha = e.scalar(node.attr_float("alpha").unwrap_or(1.0));
    let zero = e.scalar(0.0);
    let positive = e.node("Greater", &[x(node, 0), &zero], vec![]);
    let slope = e.node("Add", &[output(node), &alpha], vec![]);
    let scaled = e.node("Mul", &[g0, &slope], vec![]);
    first(node, e.select(&positive, g0, &scaled))
}

fn sigmoid(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, _: &[bool]) -> VjpResult {
    let y = output(node);
    let one = e.scalar(1.0);
    let rest = e.node("Sub", &[&one, y], vec![]);
    let slope = e.node("Mul", &[y, &rest], vec![]);
    first(node, e.node("Mul", &[g0, &slope], vec![]))
}

fn tanh(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, _: &[bool]) -> VjpResult {
    let y = output(node);
    let one = e.scalar(1.0);
    let square = e.node("Mul", &[y, y], vec![]);
    let slope = e.node("Sub", &[&one, &square], vec![]);
    first(node, e.node("Mul", &[g0, &slope], vec![]))
}

fn exp(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, _: &[bool]) -> VjpResult {
    first(node, e.node("Mul", &[g0, output(node)], vec![]))
}

fn softplus(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, _: &[bool]) -> VjpResult {
    let slope = e.node("Sigmoid", &[x(node, 0)], vec![]);
    first(node, e.node("Mul", &[g0, &slope], vec![]))
}

fn erf(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, _: &[bool]) -> VjpResult {
    let c = e.scalar(2.0 / std::f32::consts::PI.sqrt());
    let square = e.node("Mul", &[x(node, 0), x(node, 0)], vec![]);
    let negated = e.node("Neg", &[&square], vec![]);
    let bell = e.node("Exp", &[&negated], vec![]);
    let slope = e.node("Mul", &[&bell, &c], vec![]);
    first(node, e.node("Mul", &[g0, &slope], vec![]))
}

fn sqrt(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, _: &[bool]) -> VjpResult {
    let half = e.scalar(0.5);
    let p = e.node("Mul", &[g0, &half], vec![]);
    first(node, e.node("Div", &[&p, output(node)], vec![]))
}

fn reciprocal(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, _: &[bool]) -> VjpResult {
    let y = output(node);
    let square = e.node("Mul", &[y, y], vec![]);
    let p = e.node("Mul", &[g0, &square], vec![]);
    first(node, e.node("Neg", &[&p], vec![]))
}

fn clip(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, _: &[bool]) -> VjpResult {
    let n = node.input.len();
    let mut inside: Option<String> = None;
    if n > 1 && !x(node, 1).is_empty() {
        inside = Some(e.node("GreaterOrEqual", &[x(node, 0), x(node, 1)], vec![]));
    }
    if n > 2 && !x(node, 2).is_empty() {
        let below = e.node("LessOrEqual", &[x(node, 0), x(node, 2)], vec![]);
        inside = Some(match inside {
            Some(above) => e.node("And", &[&above, &below], vec![]),
            None => below,
        });
    }
    first(
        node,
        match inside {
            Some(mask) => e.mask(&mask, g0),
            None => g0.to_string(),
        },
    )
}

fn abs(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, _: &[bool]) -> VjpResult {
    // Sign is 0 at 0: the subgradient 0 there.
    let sign = e.node("Sign", &[x(node, 0)], vec![]);
    first(node, e.node("Mul", &[g0, &sign], vec![]))
}

fn log(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, _: &[bool]) -> VjpResult {
    first(node, e.node("Div", &[g0, x(node, 0)], vec![]))
}

fn sin(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, _: &[bool]) -> VjpResult {
    let slope = e.node("Cos", &[x(node, 0)], vec![]);
    first(node, e.node("Mul", &[g0, &slope], vec![]))
}

fn cos(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, _: &[bool]) -> VjpResult {
    let sine = e.node("Sin", &[x(node, 0)], vec![]);
    let slope = e.node("Neg", &[&sine], vec![]);
    first(node, e.node("Mul", &[g0, &slope], vec![]))
}

fn softsign(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, _: &[bool]) -> VjpResult {
    // y = x / (1 + |x|): dy/dx = 1 / (1 + |x|)².
    let one = e.scalar(1.0);
    let magnitude = e.node("Abs", &[x(node, 0)], vec![]);
    let denominator = e.node("Add", &[&one, &magnitude], vec![]);
    let square = e.node("Mul", &[&denominator, &denominator], vec![]);
    first(node, e.node("Div", &[g0, &square], vec![]))
}

fn selu(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, _: &[bool]) -> VjpResult {
    // y = γ x for x > 0, γ α (exp(x) − 1) otherwise: dy/dx = γ, or y + γ α.
    let alpha = node.attr_float("alpha").unwrap_or(1.673_263_2);
    let gamma = node.attr_float("gamma").unwrap_or(1.050_701);
    let zero = e.scalar(0.0);
    let positive = e.node("Greater", &[x(node, 0), &zero], vec![]);
    let gamma_s = e.scalar(gamma);
    let gamma_alpha = e.scalar(gamma * alpha);
    let inside = e.node("Mul", &[g0, &gamma_s], vec![]);
    let slope = e.node("Add", &[output(node), &gamma_alpha], vec![]);
    let outside = e.node("Mul", &[g0, &slope], vec![]);
    first(node, e.select(&positive, &inside, &outside))
}

fn celu(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, _: &[bool]) -> VjpResult {
    // y = max(0, x) + min(0, α (exp(x / α) − 1)): dy/dx = 1 for x > 0, exp(x / α) otherwise.
    let alpha = e.scalar(node.attr_float("alpha").unwrap_or(1.0));
    let zero = e.scalar(0.0);
    let positive = e.node("Greater", &[x(node, 0), &zero], vec![]);
    let scaled = e.node("Div", &[x(node, 0), &alpha], vec![]);
    let slope = e.node("Exp", &[&scaled], vec![]);
    let outside = e.node("Mul", &[g0, &slope], vec![]);
    first(node, e.select(&positive, g0, &outside))
}

fn prelu(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, varies: &[bool]) -> VjpResult {
    if varies.get(1).copied().unwrap_or(false) {
        return Err(form(node, "the slope must not vary (a constant initializer)"));
    }
    // The slope broadcasts to x (unidirectionally), so the result has x's shape.
    let zero = e.scalar(0.0);
    let positive = e.node("Greater", &[x(node, 0), &zero], vec![]);
    let scaled = e.node("Mul", &[g0, x(node, 1)], vec![]);
    first(node, e.select(&positive, g0, &scaled))
}

fn pow(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, varies: &[bool]) -> VjpResult {
    if varies[1] {
        return Err(form(node, "the exponent must not vary (only x^c with a constant c is supported)"));
    }
    // d(x^c)/dx = c · x^(c − 1), the exponent cast to float whatever its type.
    let c = e.node("Cast", &[x(node, 1)], vec![AttributeProto::int("to", DataType::Float as i64)]);
    let one = e.scalar(1.0);
    let lowered = e.node("Sub", &[&c, &one], vec![]);
    let power = e.node("Pow", &[x(node, 0), &lowered], vec![]);
    let slope = e.node("Mul", &[&power, &c], vec![]);
    let p = e.node("Mul", &[g0, &slope], vec![]);
    if pow_keeps_shape(e, node, 0) {
        return first(node, p);
    }
    // An exponent with several elements may broadcast x.
    first(node, e.unbroadcast_to_input(&p, node, 0))
}

/// Whether `Pow`'s exponent is one constant element that cannot broadcast the base to
/// another shape; `base_rank_at_least` is a rank the caller knows the base has (DeepLIFT's
/// varying values all have a batch axis).
pub(crate) fn pow_keeps_shape(e: &Emitter<'_>, node: &NodeProto, base_rank_at_least: usize) -> bool {
    let exponent = x(node, 1);
    let count = e.constant_f32(exponent).map(|(_, v)| v.len()).or_else(|| e.constant_ints(exponent).map(|v| v.len()));
    let exponent_rank = e.rank(exponent);
    count == Some(1)
        && match exponent_rank {
            Some(0) => true,
            Some(r) if r <= base_rank_at_least => true,
            Some(r) => e
                .rank(x(node, 0))
                .or_else(|| crate::layers::tensor_ranks(e.source).get(x(node, 0)).copied())
                .is_some_and(|base| base >= r),
            None => false,
        }
}

/// The 0/1 masks (float, shaped like the output) of which input each element of `Min`/`Max`'s
/// output comes from: the first input equal to it, so ties give the whole gradient to the first.
pub(crate) fn min_max_masks(e: &mut Emitter<'_>, node: &NodeProto) -> Vec<String> {
    let y = output(node);
    let mut masks = Vec::new();
    let mut free: Option<String> = None;
    for i in 0..node.input.len() {
        let equal = e.node("Equal", &[x(node, i), y], vec![]);
        let taken = match &free {
            Some(free) => e.node("And", &[&equal, free], vec![]),
            None => equal.clone(),
        };
        masks.push(e.float_mask(&taken));
        let other = e.node("Not", &[&equal], vec![]);
        free = Some(match free {
            Some(free) => e.node("And", &[&free, &other], vec![]),
            None => other,
        });
    }
    masks
}

fn min_max(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, varies: &[bool]) -> VjpResult {
    let mut out = no_gradients(node);
    let masks = min_max_masks(e, node);
    for (i, mask) in masks.iter().enumerate() {
        if varies[i] {
            let p = e.node("Mul", &[g0, mask], vec![]);
            out[i] = Some(e.unbroadcast_to_input(&p, node, i));
        }
    }
    Ok(out)
}

//! Linear algebra: `MatMul` and `Gemm`.

use super::{Emitter, VjpResult, VjpRule, input as x, no_gradients};
use explaind_onnx::{AttributeProto, NodeProto};

pub(crate) const RULES: &[(&str, VjpRule)] = &[("MatMul", matmul), ("Gemm", gemm)];

fn matmul(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, varies: &[bool]) -> VjpResult {
    let mut out = no_gradients(node);
    if varies[0] {
        let bt = e.swap_last_two(x(node, 1), x(node, 1), node)?;
        let p = e.node("MatMul", &[g0, &bt], vec![]);
        out[0] = Some(e.unbroadcast_matmul_operand(&p, node, 0));
    }
    if varies[1] {
        let at = e.swap_last_two(x(node, 0), x(node, 0), node)?;
        let p = e.node("MatMul", &[&at, g0], vec![]);
        out[1] = Some(e.unbroadcast_matmul_operand(&p, node, 1));
    }
    Ok(out)
}

fn gemm(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, varies: &[bool]) -> VjpResult {
    let mut out = no_gradients(node);
    // Y = alpha · A' · B' + beta · C, with A' = A or Aᵀ (transA), B' likewise.
    let alpha = node.attr_float("alpha").unwrap_or(1.0);
    let beta = node.attr_float("beta").unwrap_or(1.0);
    let trans_a = node.attr_int("transA").unwrap_or(0) != 0;
    let trans_b = node.attr_int("transB").unwrap_or(0) != 0;
    let gemm = |e: &mut Emitter<'_>, a: &str, b: &str, ta: bool, tb: bool| {
        e.node(
            "Gemm",
            &[a, b],
            vec![
                AttributeProto::float("alpha", alpha),
                AttributeProto::int("transA", ta as i64),
                AttributeProto::int("transB", tb as i64),
            ],
        )
    };
    if varies[0] {
        // dA' = alpha · g · B'ᵀ; dA = dA'ᵀ = alpha · B' · gᵀ when transA.
        out[0] = Some(if trans_a { gemm(e, x(node, 1), g0, trans_b, true) } else { gemm(e, g0, x(node, 1), false, !trans_b) });
    }
    if varies[1] {
        // dB' = alpha · A'ᵀ · g; dB = dB'ᵀ = alpha · gᵀ · A' when transB.
        out[1] = Some(if trans_b { gemm(e, g0, x(node, 0), true, trans_a) } else { gemm(e, x(node, 0), g0, !trans_a, false) });
    }
    if node.input.len() > 2 && varies[2] {
        let scaled = if beta == 1.0 {
            g0.to_string()
        } else {
            let beta = e.scalar(beta);
            e.node("Mul", &[g0, &beta], vec![])
        };
        out[2] = Some(e.unbroadcast(&scaled, x(node, 2)));
    }
    Ok(out)
}

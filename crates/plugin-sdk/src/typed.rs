//! Inputs of every element type (ABI 1.5, `EXD_CAP_TYPED_INPUTS`), seen as float32 values.
//!
//! Perturbation explainers (occlusion, Kernel SHAP, LIME over tokens) never compute with input
//! values: they copy them, from the input or from a replacement, into the rows they build. So
//! the SDK lets them keep their float32 code: a plugin that declares
//! [`PluginInfo::typed_inputs`](crate::PluginInfo::typed_inputs) reads every input as float32
//! values ([`Request::inputs`](crate::Request::inputs)), and [`Context::forward`](crate::Context::forward)
//! turns the rows it builds back into the model's declared types before the host runs them.
//!
//! Both directions are exact or an error, never a rounding: int64 and int32 values beyond
//! ±2^24 and doubles that float32 cannot hold are refused when the request is read, and a
//! value that is not one of the declared type (1.5 for an int64 input, 2 for a bool) is refused
//! when the rows go to the model, naming the input.

use crate::Error;

/// The largest integer magnitude float32 holds exactly (every integer up to it).
const EXACT_INTEGER: i64 = 1 << 24;

/// Float32 copies of `count` elements of `element_type` at `data`, or the reason the values do
/// not fit float32 exactly. `what` names the tensor in errors.
///
/// # Safety
/// `data` must point to `count` valid, aligned elements of the type.
pub(crate) unsafe fn values_of(element_type: i32, data: *const u8, count: usize, what: &str) -> Result<Vec<f32>, Error> {
    fn read<'x, T: Copy>(data: *const u8, count: usize) -> &'x [T] {
        // SAFETY: the caller's contract (count valid, aligned elements).
        if count == 0 { &[] } else { unsafe { std::slice::from_raw_parts(data.cast::<T>(), count) } }
    }
    let too_big = |i: usize, v: String| {
        Error::invalid_argument(format!(
            "{what}: element {i} is {v}; this explainer moves values through float32, which holds integers up to 2^24 \
             and only some doubles exactly"
        ))
    };
    let ints = |values: &mut dyn Iterator<Item = i64>| -> Result<Vec<f32>, Error> {
        values
            .enumerate()
            .map(|(i, v)| if v.abs() <= EXACT_INTEGER { Ok(v as f32) } else { Err(too_big(i, v.to_string())) })
            .collect()
    };
    match element_type {
        1 => Ok(read::<f32>(data, count).to_vec()),
        2 => Ok(read::<u8>(data, count).iter().map(|&v| v as f32).collect()),
        3 => Ok(read::<i8>(data, count).iter().map(|&v| v as f32).collect()),
        6 => ints(&mut read::<i32>(data, count).iter().map(|&v| v as i64)),
        7 => ints(&mut read::<i64>(data, count).iter().copied()),
        9 => Ok(read::<u8>(data, count).iter().map(|&v| v as f32).collect()),
        10 => Ok(read::<u16>(data, count).iter().map(|&bits| f16_to_f32(bits)).collect()),
        11 => read::<f64>(data, count)
            .iter()
            .enumerate()
            .map(|(i, &v)| if (v as f32) as f64 == v { Ok(v as f32) } else { Err(too_big(i, v.to_string())) })
            .collect(),
        other => Err(Error::internal(format!("{what}: the host passed element type {other}"))),
    }
}

/// Float32 values of `count` elements of `element_type` at `data`, rounded where they must
/// be (doubles; integers past 2^24): for inputs the plugin holds and never rebuilds.
///
/// # Safety
/// As [`values_of`].
pub(crate) unsafe fn rounded_values_of(element_type: i32, data: *const u8, count: usize) -> Vec<f32> {
    fn read<'x, T: Copy>(data: *const u8, count: usize) -> &'x [T] {
        // SAFETY: the caller's contract (count valid, aligned elements).
        if count == 0 { &[] } else { unsafe { std::slice::from_raw_parts(data.cast::<T>(), count) } }
    }
    match element_type {
        6 => read::<i32>(data, count).iter().map(|&v| v as f32).collect(),
        7 => read::<i64>(data, count).iter().map(|&v| v as f32).collect(),
        11 => read::<f64>(data, count).iter().map(|&v| v as f32).collect(),
        // Every other type fits float32 exactly.
        other => unsafe { values_of(other, data, count, "") }.unwrap_or_else(|_| vec![0.0; count]),
    }
}

/// Elements of a declared type, made from float32 values, with storage aligned for the type.
pub(crate) enum Elements {
    Float(Vec<f32>),
    Uint8(Vec<u8>),
    Int8(Vec<i8>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Bool(Vec<u8>),
    Float16(Vec<u16>),
    Double(Vec<f64>),
}

impl Elements {
    pub(crate) fn as_ptr(&self) -> *const u8 {
        match self {
            Elements::Float(v) => v.as_ptr().cast(),
            Elements::Uint8(v) | Elements::Bool(v) => v.as_ptr(),
            Elements::Int8(v) => v.as_ptr().cast(),
            Elements::Int32(v) => v.as_ptr().cast(),
            Elements::Int64(v) => v.as_ptr().cast(),
            Elements::Float16(v) => v.as_ptr().cast(),
            Elements::Double(v) => v.as_ptr().cast(),
        }
    }
}

/// `values` as elements of `element_type`, each exactly (an integer for integer types, 0 or 1
/// for bool, a float16 value for float16). `what` names the tensor in errors.
pub(crate) fn elements_of(values: &[f32], element_type: i32, what: &str) -> Result<Elements, Error> {
    let type_name = match element_type {
        2 => "uint8",
        3 => "int8",
        6 => "int32",
        7 => "int64",
        9 => "bool",
        10 => "float16",
        _ => "",
    };
    let refuse = |i: usize, v: f32| {
        Error::invalid_argument(format!("{what}: element {i} is {v}, which is not a {type_name} value (the model's input type)"))
    };
    fn integers<T: TryFrom<i64>>(values: &[f32], refuse: &dyn Fn(usize, f32) -> Error) -> Result<Vec<T>, Error> {
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let whole = v.is_finite() && v.fract() == 0.0;
                whole.then(|| T::try_from(v as i64).ok()).flatten().ok_or_else(|| refuse(i, v))
            })
            .collect()
    }
    Ok(match element_type {
        1 => Elements::Float(values.to_vec()),
        2 => Elements::Uint8(integers(values, &refuse)?),
        3 => Elements::Int8(integers(values, &refuse)?),
        6 => Elements::Int32(integers(values, &refuse)?),
        7 => Elements::Int64(integers(values, &refuse)?),
        9 => Elements::Bool(
            values
                .iter()
                .enumerate()
                .map(|(i, &v)| match v {
                    0.0 => Ok(0),
                    1.0 => Ok(1),
                    _ => Err(refuse(i, v)),
                })
                .collect::<Result<_, _>>()?,
        ),
        10 => Elements::Float16(
            values
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let bits = f32_to_f16_exact(v);
                    bits.ok_or_else(|| refuse(i, v))
                })
                .collect::<Result<_, _>>()?,
        ),
        11 => Elements::Double(values.iter().map(|&v| v as f64).collect()),
        other => return Err(Error::internal(format!("{what}: the model declares element type {other}"))),
    })
}

/// IEEE half precision to single (every half is a single exactly).
fn f16_to_f32(bits: u16) -> f32 {
    let sign = ((bits >> 15) as u32) << 31;
    let exponent = ((bits >> 10) & 0x1f) as u32;
    let mantissa = (bits & 0x3ff) as u32;
    let magnitude = match (exponent, mantissa) {
        (0, 0) => 0,
        // Subnormal half: value = mantissa * 2^-24, a normal single.
        (0, m) => {
            let v = m as f32 * 2f32.powi(-24);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, m) => 0x7f80_0000 | (m << 13),
        (e, m) => ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(sign | magnitude)
}

/// The half with exactly the value `v`, if there is one.
fn f32_to_f16_exact(v: f32) -> Option<u16> {
    // Try every half whose single value could be `v`: build it from `v`'s bits and check the
    // round trip, which rejects what does not fit (too many mantissa bits, out of range).
    let bits = v.to_bits();
    let sign = ((bits >> 31) as u16) << 15;
    if v == 0.0 {
        return Some(sign);
    }
    if v.is_nan() || v.is_infinite() {
        return Some(sign | 0x7c00 | if v.is_nan() { 0x200 } else { 0 });
    }
    let exponent = ((bits >> 23) & 0xff) as i32 - 127;
    let half = if exponent >= -14 {
        let e = (exponent + 15) as u32;
        if e >= 0x1f {
            return None;
        }
        sign | (e << 10) as u16 | ((bits >> 13) & 0x3ff) as u16
    } else {
        // Subnormal half: the value is m * 2^-24 for an integer m below 1024.
        let m = v.abs() * 2f32.powi(24);
        if m.fract() != 0.0 || m >= 1024.0 {
            return None;
        }
        sign | m as u16
    };
    (f16_to_f32(half) == v).then_some(half)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_round_trip_exactly_and_refuse_what_float32_cannot_hold() {
        let ids = [0i64, 101, -7, 1 << 24];
        let values = unsafe { values_of(7, ids.as_ptr().cast(), ids.len(), "inputs.input_ids") }.unwrap();
        assert_eq!(values, vec![0.0, 101.0, -7.0, 16777216.0]);
        match elements_of(&values, 7, "forward input 0").unwrap() {
            Elements::Int64(back) => assert_eq!(back, ids),
            _ => panic!("int64 expected"),
        }
        let big = [(1i64 << 24) + 1];
        let err = unsafe { values_of(7, big.as_ptr().cast(), 1, "inputs.input_ids") }.unwrap_err();
        assert!(err.message.starts_with("inputs.input_ids: element 0 is 16777217"), "{}", err.message);
        let err = elements_of(&[1.5], 7, "forward input 0 (input_ids)").err().unwrap();
        assert_eq!(
            err.message,
            "forward input 0 (input_ids): element 0 is 1.5, which is not a int64 value (the model's input type)"
        );
        assert!(elements_of(&[300.0], 2, "x").is_err(), "uint8 holds 0..=255");
        assert!(elements_of(&[2.0], 9, "x").is_err(), "a bool is 0 or 1");
    }

    #[test]
    fn halves_convert_exactly_both_ways() {
        // Every finite half survives half -> single -> half.
        for bits in 0..=u16::MAX {
            let v = f16_to_f32(bits);
            if v.is_finite() {
                assert_eq!(f32_to_f16_exact(v).map(f16_to_f32), Some(v), "half bits {bits:#06x}");
            }
        }
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f32_to_f16_exact(0.1), None, "0.1 is not a half");
        assert_eq!(f32_to_f16_exact(1e6), None, "past the half range");
    }
}

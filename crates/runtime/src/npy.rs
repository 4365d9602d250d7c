//! Reading and writing `.npy` files (NumPy's array format, versions 1–3) for float32 arrays.
//!
//! Small enough to own: the format is a magic string, a Python-dict header and the raw
//! elements. Only little-endian, C-order arrays are read; `<f4` as is, `<f8`, `<i8` and `<i4`
//! converted to float32 (backgrounds and inputs are often saved as float64 by NumPy defaults).

use ndarray::{ArrayD, IxDyn};
use std::io::{Read, Write};

#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("not an .npy file (bad magic)")]
    BadMagic,
    #[error("unsupported .npy header: {0}")]
    Header(String),
    #[error("unsupported element type {0:?}: expected <f4, <f8, <i4 or <i8")]
    Dtype(String),
    #[error("Fortran-order arrays are not supported")]
    FortranOrder,
    #[error("file holds {got} bytes of data, the header promises {expected}")]
    Truncated { expected: usize, got: usize },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Parses a `.npy` byte buffer into a float32 array.
pub fn read_f32(bytes: &[u8]) -> Result<ArrayD<f32>, NpyError> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(NpyError::BadMagic);
    }
    let major = bytes[6];
    let (header_len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        _ => return Err(NpyError::Header(format!("version {major}"))),
    };
    let header = bytes
        .get(start..start + header_len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| NpyError::Header("header is cut short or not text".into()))?;
    let descr = dict_value(header, "descr").and_then(quoted).ok_or_else(|| NpyError::Header("no 'descr' string".into()))?;
    if dict_value(header, "fortran_order").map(|v| v.starts_with("True")).unwrap_or(false) {
        return Err(NpyError::FortranOrder);
    }
    let shape_text = dict_value(header, "shape").ok_or_else(|| NpyError::Header("no 'shape'".into()))?;
    let shape: Vec<usize> = shape_text
        .trim_start_matches('(')
        .split(')')
        .next()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| NpyError::Header(format!("bad shape {shape_text}"))))
        .collect::<Result<_, _>>()?;
    let count: usize = shape.iter().product();
    let data = &bytes[start + header_len..];
    let width = match descr {
        "<f4" | "<i4" => 4,
        "<f8" | "<i8" => 8,
        other => return Err(NpyError::Dtype(other.to_string())),
    };
    if data.len() < count * width {
        return Err(NpyError::Truncated { expected: count * width, got: data.len() });
    }
    let values: Vec<f32> = match descr {
        "<f4" => data.chunks_exact(4).take(count).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
        "<f8" => data.chunks_exact(8).take(count).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
        "<i4" => data.chunks_exact(4).take(count).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
        _ => data.chunks_exact(8).take(count).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
    };
    Ok(ArrayD::from_shape_vec(IxDyn(&shape), values).expect("count matches shape"))
}

/// Reads a `.npy` file into a float32 array.
pub fn read_f32_file(path: &std::path::Path) -> Result<ArrayD<f32>, NpyError> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.read_to_end(&mut bytes)?;
    read_f32(&bytes)
}

/// Writes a float32 array as a version-1.0 `.npy` file.
pub fn write_f32(out: &mut impl Write, shape: &[usize], data: &[f32]) -> std::io::Result<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}");
    // Pad so that the data starts on a multiple of 64 bytes, ending the header with '\n'.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    out.write_all(b"\x93NUMPY\x01\x00")?;
    out.write_all(&(header.len() as u16).to_le_bytes())?;
    out.write_all(header.as_bytes())?;
    for v in data {
        out.write_all(&v.to_le_bytes())?;
    }
    Ok(())
}

/// The contents of the quoted string at the start of `text`.
fn quoted(text: &str) -> Option<&str> {
    let quote = text.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let rest = &text[1..];
    Some(&rest[..rest.find(quote)?])
}

/// The text after `'key':` in a Python dict literal, up to the end of the header.
fn dict_value<'h>(header: &'h str, key: &str) -> Option<&'h str> {
    let at = header.find(&format!("'{key}'"))?;
    let rest = &header[at + key.len() + 2..];
    Some(rest.trim_start().strip_prefix(':')?.trim_start())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        write_f32(&mut buf, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.5]).unwrap();
        assert_eq!((buf.len() - 6 * 4) % 64, 0, "data starts on a 64-byte boundary");
        let a = read_f32(&buf).unwrap();
        assert_eq!(a.shape(), &[2, 3]);
        assert_eq!(a.as_slice().unwrap(), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.5]);
    }

    #[test]
    fn reads_float64_written_by_hand() {
        // A header as NumPy writes it for np.array([[1.5], [-2.0]]) (float64).
        let header = "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 1), }";
        let mut buf = b"\x93NUMPY\x01\x00".to_vec();
        let padded = format!("{header:<117}\n");
        buf.extend((padded.len() as u16).to_le_bytes());
        buf.extend(padded.as_bytes());
        buf.extend(1.5f64.to_le_bytes());
        buf.extend((-2.0f64).to_le_bytes());
        let a = read_f32(&buf).unwrap();
        assert_eq!(a.shape(), &[2, 1]);
        assert_eq!(a.as_slice().unwrap(), &[1.5, -2.0]);
    }

    #[test]
    fn rejects_truncated_and_foreign_files() {
        assert!(matches!(read_f32(b"PK\x03\x04 not npy"), Err(NpyError::BadMagic)));
        let mut buf = Vec::new();
        write_f32(&mut buf, &[4], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        buf.truncate(buf.len() - 2);
        assert!(matches!(read_f32(&buf), Err(NpyError::Truncated { .. })));
    }
}

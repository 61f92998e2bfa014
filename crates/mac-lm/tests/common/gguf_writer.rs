//! Writes GGUF v3 files: small (and deliberately broken) ones for the
//! loader tests.

use mac_lm::gguf::GgufValue;

/// A tensor to write: name, row-major shape, ggml type id and raw bytes.
pub struct RawTensor {
    /// Tensor name.
    pub name: String,
    /// Row-major shape.
    pub shape: Vec<usize>,
    /// ggml type id (0 = F32, 1 = F16, 2 = Q4_0, 3 = Q4_1, 8 = Q8_0).
    pub type_id: u32,
    /// Encoded data.
    pub data: Vec<u8>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &GgufValue, with_type: bool) {
    let (ty, body): (u32, Vec<u8>) = match v {
        GgufValue::U64(x) => (10, x.to_le_bytes().to_vec()),
        GgufValue::I64(x) => (11, x.to_le_bytes().to_vec()),
        GgufValue::F64(x) => (6, (*x as f32).to_le_bytes().to_vec()),
        GgufValue::Bool(b) => (7, vec![*b as u8]),
        GgufValue::Str(s) => {
            let mut b = Vec::new();
            put_str(&mut b, s);
            (8, b)
        }
        GgufValue::Array(items) => {
            let mut b = Vec::new();
            let item_ty = items.first().map(type_of).unwrap_or(4);
            b.extend_from_slice(&item_ty.to_le_bytes());
            b.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for it in items {
                put_value(&mut b, it, false);
            }
            (9, b)
        }
    };
    if with_type {
        out.extend_from_slice(&ty.to_le_bytes());
    }
    out.extend_from_slice(&body);
}

fn type_of(v: &GgufValue) -> u32 {
    match v {
        GgufValue::U64(_) => 10,
        GgufValue::I64(_) => 11,
        GgufValue::F64(_) => 6,
        GgufValue::Bool(_) => 7,
        GgufValue::Str(_) => 8,
        GgufValue::Array(_) => 9,
    }
}

/// Encodes metadata and tensors as GGUF v3 bytes (alignment 32).
pub fn encode(metadata: &[(String, GgufValue)], tensors: &[RawTensor]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        put_str(&mut out, k);
        put_value(&mut out, v, true);
    }
    let mut offset = 0u64;
    let mut offsets = Vec::new();
    for t in tensors {
        put_str(&mut out, &t.name);
        out.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
        for d in t.shape.iter().rev() {
            out.extend_from_slice(&(*d as u64).to_le_bytes());
        }
        out.extend_from_slice(&t.type_id.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        offsets.push(offset);
        offset = (offset + t.data.len() as u64).div_ceil(32) * 32;
    }
    while out.len() % 32 != 0 {
        out.push(0);
    }
    let start = out.len();
    for (t, off) in tensors.iter().zip(offsets) {
        out.resize(start + off as usize, 0);
        out.extend_from_slice(&t.data);
    }
    out
}

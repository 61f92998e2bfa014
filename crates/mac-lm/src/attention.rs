//! Scaled dot-product attention over `[prefix | cached | new]` keys, shared by
//! the Llama and GPT-2 blocks (and, through [`masked_attention`], the BERT encoder).

use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Tensor};

/// Repeats key/value heads for grouped-query attention:
/// `[B, H_kv, S, d] -> [B, H_kv * n_rep, S, d]`, head `h` using KV head `h / n_rep`.
pub(crate) fn repeat_kv(x: Tensor<4>, n_rep: usize) -> Tensor<4> {
    if n_rep == 1 {
        return x;
    }
    let [b, h, s, d] = x.dims();
    x.unsqueeze_dim::<5>(2)
        .expand([b, h, n_rep, s, d])
        .reshape([b, h * n_rep, s, d])
}

/// Attention of queries `[B, H, T, d]` over keys/values `[B, H_kv, S, d]`,
/// with optional prefix keys/values `[B, H_kv, p, d]` in front. Returns
/// `[B, T, H * d]`.
pub(crate) fn attend(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    prefix: Option<&(Tensor<4>, Tensor<4>)>,
    mask: &Tensor<4, Bool>,
) -> Tensor<3> {
    let [b, h, t, d] = q.dims();
    let n_rep = h / k.dims()[1];
    let (k, v) = match prefix {
        Some((pk, pv)) => (
            Tensor::cat(vec![pk.clone(), k], 2),
            Tensor::cat(vec![pv.clone(), v], 2),
        ),
        None => (k, v),
    };
    let k = repeat_kv(k, n_rep);
    let v = repeat_kv(v, n_rep);
    masked_attention(q, k, v, mask.clone())
        .swap_dims(1, 2)
        .reshape([b, t, h * d])
}

/// `softmax(q kᵀ / √d + mask) v` over `[B, H, T, d]` queries and `[B, H, S, d]`
/// keys/values; `mask` is `[B, H, T, S]` with `true` = not attended.
pub fn masked_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: Tensor<4, Bool>,
) -> Tensor<4> {
    attention(
        q,
        k,
        v,
        Some(mask),
        None,
        AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: false,
        },
    )
}

//! Linear layers and matrix products on the fastest kernel the device has.
//!
//! On Burn's CPU backend (`flex`) matrix products go through the `gemm`
//! crate, which reaches about a third of what an optimised BLAS does on the
//! same cores (docs/results.md). With the `blas` feature (default) these
//! products call the system's OpenBLAS `sgemm` instead, through a Burn
//! backend extension with its own backward pass: `∂a = ∂y · bᵀ` and
//! `∂b = aᵀ · ∂y`, each one more `sgemm`, and only for operands that need
//! a gradient (a frozen weight, such as the base LM's, gets none, and its
//! input is not kept for one). Every other device (and a build without
//! `blas`) uses Burn's own matmul.

use burn::tensor::Tensor;

/// `x [.., K] · w [K, N] + bias` → `[.., N]`, with gradients for every
/// operand that requires one (Burn's `linear`, on BLAS where it can).
pub fn linear<const D: usize>(x: Tensor<D>, w: Tensor<2>, bias: Option<Tensor<1>>) -> Tensor<D> {
    let dims = x.dims();
    let k = dims[D - 1];
    let n = w.dims()[1];
    let rows = dims[..D - 1].iter().product();
    let mut out_dims = dims;
    out_dims[D - 1] = n;
    let y = matmul(x.reshape([rows, k]), w).reshape(out_dims);
    match bias {
        Some(b) => y + b.unsqueeze::<D>(),
        None => y,
    }
}

/// A Burn [`burn::nn::Linear`] layer applied through [`linear`].
pub fn linear_layer<const D: usize>(layer: &burn::nn::Linear, x: Tensor<D>) -> Tensor<D> {
    linear(x, layer.weight.val(), layer.bias.as_ref().map(|b| b.val()))
}

/// `a [M, K] · b [K, N]` → `[M, N]`, with a gradient for each operand that requires one.
pub fn matmul(a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    #[cfg(feature = "blas")]
    if blas::serves(&a) && blas::serves(&b) {
        return blas::matmul(a, b);
    }
    a.matmul(b)
}

/// `a [.., M, K] · b [.., K, N]` → `[.., M, N]` over equal leading
/// dimensions (attention's `q·kᵀ` and `p·v`), with a gradient for each
/// operand that requires one. On BLAS, for rank 3 and 4: one `sgemm` per
/// matrix of the batch, each read in place wherever the batch axes' strides
/// put it (heads split off a projection, transposed keys, a broadcast
/// operand), the batch spread over the CPU backend's threads; otherwise
/// Burn's matmul (which also broadcasts unequal batch axes).
pub fn batched_matmul<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "blas")]
    if (3..=4).contains(&D) && blas::serves(&a) && blas::serves(&b) {
        let (da, db) = (a.dims(), b.dims());
        if da[..D - 2] == db[..D - 2] && da[D - 1] == db[D - 2] {
            return blas::matmul(a, b);
        }
    }
    a.matmul(b)
}

#[cfg(feature = "blas")]
pub(crate) use blas::sgemm_slices;

/// Whether products on `device` take the BLAS path.
pub fn accelerated(device: &burn::tensor::Device) -> bool {
    #[cfg(feature = "blas")]
    {
        blas::serves_device(device)
    }
    #[cfg(not(feature = "blas"))]
    {
        let _ = device;
        false
    }
}

#[cfg(feature = "blas")]
mod blas;

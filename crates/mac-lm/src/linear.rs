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
mod blas {
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{binary, Backward, Ops, OpsKind};
    use burn::backend::flex::{FlexTensor, Layout};
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{backend_extension, Autodiff, Backend, DispatchDevice, Flex};
    use burn::tensor::{DType, Device, Shape, Tensor};

    /// Whether `device` is the CPU backend (with or without autodiff).
    pub(super) fn serves_device(device: &Device) -> bool {
        matches!(
            device.as_dispatch().clone().inner(),
            DispatchDevice::Flex(_)
        )
    }

    /// Whether `x` is an f32 tensor on the CPU backend.
    pub(super) fn serves(x: &Tensor<2>) -> bool {
        x.dtype() == DType::F32 && serves_device(&x.device())
    }

    pub(super) fn matmul(a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
        let out = <burn::backend::Dispatch as BlasMatmul>::blas_matmul(
            a.into_dispatch(),
            b.into_dispatch(),
        );
        Tensor::from_dispatch(out)
    }

    /// The matrix product on BLAS as a backend operation.
    #[backend_extension(Flex, Autodiff)]
    pub trait BlasMatmul: Backend {
        /// `a [M, K] · b [K, N]`, a gradient for each operand that is tracked.
        fn blas_matmul(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self>;
    }

    impl BlasMatmul for Flex {
        fn blas_matmul(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
            sgemm(&a, &b)
        }
    }

    impl<B: Backend + BlasMatmul, C: CheckpointStrategy> BlasMatmul for Autodiff<B, C> {
        fn blas_matmul(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
            #[derive(Debug)]
            struct Product;

            impl<B: Backend + BlasMatmul> Backward<B, 2> for Product {
                /// What the gradients need: `a` when `b` is tracked, `b`
                /// when `a` is (a frozen weight keeps no input alive).
                type State = (
                    Option<B::FloatTensorPrimitive>,
                    Option<B::FloatTensorPrimitive>,
                );

                fn backward(
                    self,
                    ops: Ops<Self::State, 2>,
                    grads: &mut Gradients,
                    _checkpointer: &mut Checkpointer,
                ) {
                    let (a, b) = ops.state;
                    let kept = "kept for the tracked operand";
                    binary::<B, _, _>(
                        ops.parents,
                        ops.node,
                        grads,
                        |grad| B::blas_matmul(grad, B::float_transpose(b.expect(kept))),
                        |grad| B::blas_matmul(B::float_transpose(a.expect(kept)), grad),
                    );
                }
            }

            let (a_tracked, b_tracked) = (a.is_tracked(), b.is_tracked());
            let (a, a_node) = a.into_parts();
            let (b, b_node) = b.into_parts();
            match Product
                .prepare::<C>([a_node, b_node])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => {
                    let out = B::blas_matmul(a.clone(), b.clone());
                    let state = (b_tracked.then_some(a), a_tracked.then_some(b));
                    prep.finish(state, out)
                }
                OpsKind::UnTracked(prep) => prep.finish(B::blas_matmul(a, b)),
            }
        }
    }

    #[allow(non_camel_case_types)]
    type blasint = i32;
    const ROW_MAJOR: i32 = 101;
    const NO_TRANS: i32 = 111;
    const TRANS: i32 = 112;

    /// Below this many rows (or columns) per thread a product is not split.
    const MIN_PART: usize = 16;

    /// The operands' and the output's memory, shared by the parts of a
    /// split product (each writes its own rows or columns of `c`).
    struct Shared {
        a: *const f32,
        b: *const f32,
        c: *mut f32,
    }
    // SAFETY: the parts only read `a` and `b` and write disjoint parts of
    // `c`, all of which outlive the rayon scope that uses them.
    unsafe impl Sync for Shared {}

    /// Keeps OpenBLAS to the calling thread (set once per process).
    fn single_threaded_blas() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        // SAFETY: sets OpenBLAS's thread count before any product of ours runs.
        ONCE.call_once(|| unsafe { openblas_set_num_threads(1) });
    }

    #[link(name = "openblas")]
    extern "C" {
        fn openblas_set_num_threads(n: i32);
        fn cblas_sgemm(
            order: i32,
            trans_a: i32,
            trans_b: i32,
            m: blasint,
            n: blasint,
            k: blasint,
            alpha: f32,
            a: *const f32,
            lda: blasint,
            b: *const f32,
            ldb: blasint,
            beta: f32,
            c: *mut f32,
            ldc: blasint,
        );
    }

    /// How BLAS reads a 2-D operand in place: transposed or not, and its
    /// leading dimension; `None` when its strides do not describe a
    /// row- or column-major matrix (broadcast, flipped, or gapped in both).
    fn operand(layout: &Layout) -> Option<(i32, blasint)> {
        let (shape, strides) = (layout.shape(), layout.strides());
        let (rows, cols) = (shape[0], shape[1]);
        let lead = |stride: isize, inner: usize, outer: usize| -> Option<blasint> {
            let ld = if outer == 1 {
                inner
            } else {
                usize::try_from(stride).ok()?
            };
            (ld >= inner.max(1))
                .then(|| blasint::try_from(ld).ok())
                .flatten()
        };
        if strides[1] == 1 || cols == 1 {
            if let Some(ld) = lead(strides[0], cols, rows) {
                return Some((NO_TRANS, ld));
            }
        }
        if strides[0] == 1 || rows == 1 {
            if let Some(ld) = lead(strides[1], rows, cols) {
                return Some((TRANS, ld));
            }
        }
        None
    }

    /// `x · w` by OpenBLAS `sgemm` on the CPU tensors' memory (strided
    /// operands read in place, others made contiguous first).
    fn sgemm(x: &FlexTensor, w: &FlexTensor) -> FlexTensor {
        let (m, k) = (x.layout().shape()[0], x.layout().shape()[1]);
        let n = w.layout().shape()[1];
        assert_eq!(
            w.layout().shape()[0],
            k,
            "blas_matmul: inner dimensions differ"
        );
        let mut out = FlexTensor::empty(Shape::from(vec![m, n]), DType::F32);
        if m == 0 || n == 0 {
            return out;
        }
        if k == 0 {
            return FlexTensor::zeros(Shape::from(vec![m, n]), DType::F32);
        }
        let readable = |t: &FlexTensor| match operand(t.layout()) {
            Some(op) => (t.clone(), op),
            None => {
                let c = t.to_contiguous();
                let op = operand(c.layout()).expect("a contiguous matrix has a unit stride");
                (c, op)
            }
        };
        let (x, (ta, lda)) = readable(x);
        let (w, (tb, ldb)) = readable(w);
        let a = x.storage::<f32>()[x.layout().start_offset()..].as_ptr();
        let b = w.storage::<f32>()[w.layout().start_offset()..].as_ptr();
        let c = out.storage_mut::<f32>().as_mut_ptr();
        // The output is split over the rayon pool (the CPU backend's own
        // threads) by rows, or by columns when it has few rows, each part
        // one single-threaded `sgemm`: OpenBLAS's own thread pool would spin
        // beside rayon's.
        single_threaded_blas();
        let threads = rayon::current_num_threads();
        let by_rows = m >= threads * MIN_PART;
        let along = if by_rows { m } else { n };
        let parts = threads.min(along / MIN_PART).max(1);
        let per_part = along.div_ceil(parts);
        let (lda, ldb) = (lda as usize, ldb as usize);
        // Element offsets of row `i` of `x` and column `j` of `w` in their storage.
        let x_row = |i: usize| if ta == NO_TRANS { i * lda } else { i };
        let w_col = |j: usize| if tb == NO_TRANS { j } else { j * ldb };
        let shared = Shared { a, b, c };
        rayon::scope(|scope| {
            for start in (0..along).step_by(per_part) {
                let len = per_part.min(along - start);
                let (rows, cols, a_off, b_off, c_off) = if by_rows {
                    (len, n, x_row(start), 0, start * n)
                } else {
                    (m, len, 0, w_col(start), start)
                };
                let shared = &shared;
                scope.spawn(move |_| {
                    let dim = |d: usize| blasint::try_from(d).expect("matrix dimension fits BLAS");
                    // SAFETY: the offsets select rows `start..start + len` of
                    // the `m × k` left operand (or columns of the `k × n`
                    // right one) within their storage, as described by
                    // (transpose, leading dimension) from their layouts; the
                    // parts write disjoint rows (or columns) of the fresh
                    // contiguous `m × n` output, which outlives the scope.
                    unsafe {
                        cblas_sgemm(
                            ROW_MAJOR,
                            ta,
                            tb,
                            dim(rows),
                            dim(cols),
                            dim(k),
                            1.0,
                            shared.a.add(a_off),
                            dim(lda),
                            shared.b.add(b_off),
                            dim(ldb),
                            0.0,
                            shared.c.add(c_off),
                            dim(n),
                        );
                    }
                });
            }
        });
        out
    }
}

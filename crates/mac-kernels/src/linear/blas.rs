//! Matrix products on OpenBLAS for the CPU backend: `sgemm`/`sgemv` on the
//! tensors' memory (strided operands read in place), split over rayon's
//! threads, as a Burn backend extension with its backward. (Over 500
//! lines: the forward products and their backward share one set of
//! strided-operand helpers, kept in one file.)

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{binary, Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Autodiff, Backend, DispatchDevice, Flex};
use burn::tensor::{DType, Device, Shape, Tensor, TensorData};

/// Whether `device` is the CPU backend (with or without autodiff).
pub(super) fn serves_device(device: &Device) -> bool {
    matches!(
        device.as_dispatch().clone().inner(),
        DispatchDevice::Flex(_)
    )
}

/// Whether `x` is an f32 tensor on the CPU backend.
pub(super) fn serves<const D: usize>(x: &Tensor<D>) -> bool {
    x.dtype() == DType::F32 && serves_device(&x.device())
}

/// The product of matrices `[M, K]·[K, N]`, or of batches of them
/// (one or two batch axes, equal in both).
pub(super) fn matmul<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    let out =
        <burn::backend::Dispatch as BlasMatmul>::blas_matmul(a.into_dispatch(), b.into_dispatch());
    Tensor::from_dispatch(out)
}

/// The matrix product on BLAS as a backend operation.
#[backend_extension(Flex, Autodiff)]
pub trait BlasMatmul: Backend {
    /// `a [M, K] · b [K, N]` (or batches of them over one or two equal
    /// batch axes), a gradient for each operand that is tracked.
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

/// One single-threaded `sgemm` on contiguous row-major memory:
/// `c[m×n] (leading dimension ldc) = alpha · a[m×k] · b[k×n]`, where
/// `a` is stored transposed (`k × m`) when `ta`, and `b` (`n × k`)
/// when `tb`.
///
/// # Panics
/// When a slice is too short for the matrix it holds.
pub(crate) fn sgemm_slices(
    (a, ta): (&[f32], bool),
    (b, tb): (&[f32], bool),
    c: &mut [f32],
    ldc: usize,
    (m, n, k): (usize, usize, usize),
    alpha: f32,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        a.len() >= m * k && b.len() >= k * n && ldc >= n && c.len() >= (m - 1) * ldc + n,
        "sgemm_slices: a slice is shorter than its matrix"
    );
    single_threaded_blas();
    let product = Product {
        a: a.as_ptr(),
        b: b.as_ptr(),
        c: c.as_mut_ptr(),
        ta: if ta { TRANS } else { NO_TRANS },
        lda: if ta { m } else { k }.max(1),
        tb: if tb { TRANS } else { NO_TRANS },
        ldb: if tb { k } else { n }.max(1),
        ldc,
        m,
        n,
        k,
        alpha,
    };
    // SAFETY: the slices hold the matrices their (transpose, leading
    // dimension) describe (checked above), and `c` is borrowed mutably.
    unsafe { product.part(0, m, 0, n) }
}

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
    fn cblas_sgemv(
        order: i32,
        trans: i32,
        m: blasint,
        n: blasint,
        alpha: f32,
        a: *const f32,
        lda: blasint,
        x: *const f32,
        incx: blasint,
        beta: f32,
        y: *mut f32,
        incy: blasint,
    );
}

/// How BLAS reads a matrix of `shape` and `strides` (its last two axes)
/// in place: transposed or not, and its leading dimension; `None` when
/// its strides do not describe a row- or column-major matrix
/// (broadcast, flipped, or gapped in both).
fn operand(shape: &[usize], strides: &[isize]) -> Option<(i32, blasint)> {
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

/// The sizes (or strides) of up to two batch axes as `[outer, inner]`,
/// `absent` for an axis the tensor does not have.
fn batch_axes<T: Copy>(axes: &[T], absent: T) -> [T; 2] {
    match *axes {
        [] => [absent, absent],
        [inner] => [absent, inner],
        [outer, inner] => [outer, inner],
        _ => panic!("blas_matmul: at most two batch axes"),
    }
}

/// A matrix operand as BLAS reads it: the tensor (made contiguous when
/// its layout is not readable in place), (transpose, leading
/// dimension), and the strides of its up to two batch axes (0 for an
/// axis it does not have, or broadcasts).
fn readable(t: &FlexTensor) -> (FlexTensor, (i32, blasint), [usize; 2]) {
    let read = |t: &FlexTensor| {
        let (shape, strides) = (t.layout().shape(), t.layout().strides());
        let r = shape.len();
        let op = operand(&shape[r - 2..], &strides[r - 2..])?;
        let [outer, inner] = batch_axes(&strides[..r - 2], 0);
        Some((
            op,
            [usize::try_from(outer).ok()?, usize::try_from(inner).ok()?],
        ))
    };
    match read(t) {
        Some((op, batch)) => (t.clone(), op, batch),
        None => {
            let c = t.to_contiguous();
            let (op, batch) = read(&c).expect("a contiguous tensor is readable");
            (c, op, batch)
        }
    }
}

/// One matrix product `c = a · b` (`m × k` by `k × n`, `c` contiguous).
#[derive(Clone, Copy)]
struct Product {
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ta: i32,
    lda: usize,
    tb: i32,
    ldb: usize,
    /// Leading dimension of `c` (`n` for a contiguous output).
    ldc: usize,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
}
// SAFETY: a product only reads `a` and `b` and writes its own `c`; the
// callers keep all three alive, and the `c`s of concurrent products
// (or parts of one) are disjoint.
unsafe impl Sync for Product {}
unsafe impl Send for Product {}

impl Product {
    /// Product `i` of a batch: its operands start `a_off` and `b_off`
    /// elements in, its output `i · m · n`.
    ///
    /// # Safety
    /// Matrix `i` exists at those offsets in all three buffers.
    unsafe fn nth(&self, i: usize, a_off: usize, b_off: usize) -> Product {
        Product {
            a: self.a.add(a_off),
            b: self.b.add(b_off),
            c: self.c.add(i * self.m * self.n),
            ..*self
        }
    }

    /// Rows `r0..r0 + rows` and columns `c0..c0 + cols` of `c`, by one
    /// single-threaded `sgemm`.
    ///
    /// # Safety
    /// The pointers describe the operands (per `ta`, `lda`, `tb`, `ldb`)
    /// and an `m × n` output of leading dimension `ldc`, all alive, and
    /// no other thread writes this part of `c`.
    unsafe fn part(&self, r0: usize, rows: usize, c0: usize, cols: usize) {
        let dim = |d: usize| blasint::try_from(d).expect("matrix dimension fits BLAS");
        let a_off = if self.ta == NO_TRANS {
            r0 * self.lda
        } else {
            r0
        };
        let b_off = if self.tb == NO_TRANS {
            c0
        } else {
            c0 * self.ldb
        };
        if self.m == 1 {
            // One row of output is a matrix–vector product: `sgemv`
            // streams `b` once, where `sgemm` would first pack a copy
            // of it (for the LM head, 113 MB per decoded token).
            let x_stride = if self.ta == NO_TRANS { 1 } else { self.lda };
            let (b_rows, b_cols) = if self.tb == NO_TRANS {
                (self.k, cols)
            } else {
                (cols, self.k)
            };
            // Row-major `b` read as `b_rows × b_cols`: `c = bᵀ·x` when
            // it is `k × n`, `c = b·x` when it is stored `n × k`.
            let trans = if self.tb == NO_TRANS { TRANS } else { NO_TRANS };
            cblas_sgemv(
                ROW_MAJOR,
                trans,
                dim(b_rows),
                dim(b_cols),
                self.alpha,
                self.b.add(b_off),
                dim(self.ldb),
                self.a.add(a_off),
                dim(x_stride),
                0.0,
                self.c.add(r0 * self.ldc + c0),
                1,
            );
            return;
        }
        cblas_sgemm(
            ROW_MAJOR,
            self.ta,
            self.tb,
            dim(rows),
            dim(cols),
            dim(self.k),
            self.alpha,
            self.a.add(a_off),
            dim(self.lda),
            self.b.add(b_off),
            dim(self.ldb),
            0.0,
            self.c.add(r0 * self.ldc + c0),
            dim(self.ldc),
        );
    }

    /// The whole product, split over the rayon pool (the CPU backend's
    /// own threads) by rows, or by columns when it has few rows, each
    /// part one single-threaded `sgemm`: OpenBLAS's own thread pool
    /// would spin beside rayon's.
    ///
    /// # Safety
    /// As for [`Product::part`], for the whole of `c`.
    unsafe fn run_split(&self) {
        let threads = rayon::current_num_threads();
        // Each part packs its share of the split operand and all of the
        // other: split the larger one (for a layer over a few hundred
        // tokens, the weight), so no thread packs all of it.
        let by_rows =
            self.m >= threads * MIN_PART && (self.m >= self.n || self.n < threads * MIN_PART);
        let along = if by_rows { self.m } else { self.n };
        let parts = threads.min(along / MIN_PART).max(1);
        let per_part = along.div_ceil(parts);
        let run = move |start: usize| {
            let len = per_part.min(along - start);
            // SAFETY: the parts cover disjoint rows (or columns) of `c`.
            unsafe {
                if by_rows {
                    self.part(start, len, 0, self.n)
                } else {
                    self.part(0, self.m, start, len)
                }
            }
        };
        if self.m == 1 {
            // A matrix–vector product (decoding): the calling thread
            // computes the first part itself rather than sleeping while
            // the pool does all of them, one thread fewer to wake per
            // product (a decoded token makes some 200). For a matrix
            // product the pool alone is faster (an idle worker would
            // spin beside the calling thread).
            rayon::in_place_scope(|scope| {
                for start in (per_part..along).step_by(per_part) {
                    scope.spawn(move |_| run(start));
                }
                run(0);
            });
        } else {
            rayon::scope(|scope| {
                for start in (0..along).step_by(per_part) {
                    scope.spawn(move |_| run(start));
                }
            });
        }
    }
}

/// `x · w` by OpenBLAS `sgemm` on the CPU tensors' memory (strided
/// operands read in place, others made contiguous first): `[M, K]·[K,
/// N]`, or batches `[G, M, K]·[G, K, N]` and `[G1, G2, M, K]·[G1, G2, K,
/// N]` (each batch axis with its own stride, so the heads of an
/// attention are read where they lie), whose matrices are spread over
/// the threads (each product split on its own when the batch is smaller
/// than the pool).
fn sgemm(x: &FlexTensor, w: &FlexTensor) -> FlexTensor {
    let (xs, ws) = (x.layout().shape(), w.layout().shape());
    let rank = xs.len();
    assert!(
        (2..=4).contains(&rank) && ws.len() == rank,
        "blas_matmul: operands of rank 2 to 4"
    );
    let (m, k, n) = (xs[rank - 2], xs[rank - 1], ws[rank - 1]);
    assert!(
        ws[rank - 2] == k && xs[..rank - 2] == ws[..rank - 2],
        "blas_matmul: inner or batch dimensions differ"
    );
    let dims = batch_axes(&xs[..rank - 2], 1);
    let g = dims[0] * dims[1];
    let mut out_shape = xs[..rank - 2].to_vec();
    out_shape.extend([m, n]);
    if g == 0 || m == 0 || n == 0 {
        return FlexTensor::empty(Shape::from(out_shape), DType::F32);
    }
    if k == 0 {
        return FlexTensor::zeros(Shape::from(out_shape), DType::F32);
    }
    let mut out = Output::new(out_shape, m);
    let (x, (ta, lda), x_batch) = readable(x);
    let (w, (tb, ldb), w_batch) = readable(w);
    let a = x.storage::<f32>()[x.layout().start_offset()..].as_ptr();
    let b = w.storage::<f32>()[w.layout().start_offset()..].as_ptr();
    let c = out.as_mut_ptr();
    single_threaded_blas();
    let first = Product {
        a,
        b,
        c,
        ta,
        lda: lda as usize,
        tb,
        ldb: ldb as usize,
        ldc: n,
        m,
        n,
        k,
        alpha: 1.0,
    };
    let offset =
        |i: usize, strides: [usize; 2]| (i / dims[1]) * strides[0] + (i % dims[1]) * strides[1];
    // SAFETY: matrix `i` of the batch starts where its operands'
    // layouts put it (batch indices times batch strides) and `i · m ·
    // n` into the fresh contiguous output; the products write disjoint
    // outputs, and every buffer outlives them.
    let nth = |i: usize| unsafe { first.nth(i, offset(i, x_batch), offset(i, w_batch)) };
    if g < rayon::current_num_threads() {
        for i in 0..g {
            // SAFETY: see `nth`; one product at a time, split over the threads.
            unsafe { nth(i).run_split() };
        }
    } else {
        use rayon::prelude::*;
        (0..g).into_par_iter().for_each(|i| {
            // SAFETY: see `nth`; each thread writes its own matrices.
            unsafe { nth(i).part(0, m, 0, n) };
        });
    }
    // SAFETY: the products above wrote every element of the output.
    unsafe { out.into_tensor() }
}

/// The output buffer of a product, left uninitialised where BLAS
/// writes every element without reading it (`sgemm` with `beta = 0`)
/// and zeroed where it may read it first (`sgemv` scales `y` by
/// `beta`). Wrapped as it is at the end: `FlexTensor::empty` zeroes a
/// byte vector and then copies it to realign it.
struct Output {
    values: Vec<std::mem::MaybeUninit<f32>>,
    shape: Vec<usize>,
}

impl Output {
    fn new(shape: Vec<usize>, rows: usize) -> Self {
        let len = shape.iter().product();
        let values = if rows == 1 {
            vec![std::mem::MaybeUninit::new(0.0); len]
        } else {
            let mut values = Vec::with_capacity(len);
            // SAFETY: `MaybeUninit` needs no initialisation.
            unsafe { values.set_len(len) };
            values
        };
        Output { values, shape }
    }

    fn as_mut_ptr(&mut self) -> *mut f32 {
        self.values.as_mut_ptr().cast()
    }

    /// # Safety
    /// Every element has been written.
    unsafe fn into_tensor(self) -> FlexTensor {
        let mut values = std::mem::ManuallyDrop::new(self.values);
        let (ptr, len, cap) = (values.as_mut_ptr(), values.len(), values.capacity());
        // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and every
        // element is initialised (the caller's promise).
        let values = unsafe { Vec::from_raw_parts(ptr.cast::<f32>(), len, cap) };
        FlexTensor::from_data(TensorData::new(values, self.shape))
    }
}

//! Tensor helpers the trainers share: seeded initialisation, leaves
//! without a graph, index tensors.

use anyhow::Result;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Int, Tensor, TensorData};

/// Held while a trainer seeds the backend's generator and initialises its model.
pub(crate) static SEEDED_INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Draws every parameter's initial value now: Burn initialises parameters
/// lazily, on first use, which would put the draws outside the lock.
pub(crate) fn draw_initial_weights<M: Module>(model: &M) {
    struct Draw;
    impl ModuleVisitor for Draw {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let _ = param.val();
        }
    }
    model.visit(&mut Draw);
}

/// `t` (from the plain device) as a leaf without a graph on the autodiff
/// device `ad`.
pub(crate) fn detached(t: Tensor<3>, ad: &Device) -> Result<Tensor<3>> {
    let dims = t.dims();
    let data: Vec<f32> = t
        .try_to_vec_as::<f32>()
        .map_err(|e| anyhow::anyhow!("reading modulations: {e:?}"))?;
    Ok(Tensor::from_data(TensorData::new(data, dims), ad))
}

/// A 1-D index tensor of `rows` on `device`.
pub(crate) fn index_tensor(rows: &[usize], device: &Device) -> Tensor<1, Int> {
    let ids: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
    Tensor::from_data(TensorData::new(ids, [rows.len()]), device)
}

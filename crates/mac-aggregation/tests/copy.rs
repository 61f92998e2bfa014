//! Copy mode: with sharp attention the head stores, and the reader hands
//! the LM, exactly the embeddings of the tokens attended to; the prior
//! moves the reader's attention between documents; gradients reach every
//! parameter of both.

use burn::module::Param;
use burn::tensor::{Bool, Device, Distribution, Tensor, TensorData};
use mac_aggregation::{CopyHeadConfig, CopyReaderConfig};

fn device() -> Device {
    mac_device::select("flex").unwrap()
}

fn max_abs_diff(a: Tensor<3>, b: Tensor<3>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

/// `rows` one-hot rows of width `d`, hot at `hot[i]`, times `scale`.
fn one_hot(hot: &[usize], d: usize, scale: f32, device: &Device) -> Tensor<2> {
    let mut v = vec![0f32; hot.len() * d];
    for (i, &h) in hot.iter().enumerate() {
        v[i * d + h] = scale;
    }
    Tensor::from_data(TensorData::new(v, [hot.len(), d]), device)
}

fn identity(d: usize, device: &Device) -> Tensor<2> {
    one_hot(&(0..d).collect::<Vec<_>>(), d, 1.0, device)
}

#[test]
fn a_sharp_head_stores_the_embeddings_of_the_tokens_it_attends_to() {
    let device = device();
    let (d, t, k) = (8, 6, 3);
    let mut head = CopyHeadConfig::new(d, k, d).init(&device);
    // Slot j's query points at context dimension `targets[j]`; token i's
    // context is hot at dimension i, so slot j attends to token targets[j].
    let targets = [4usize, 0, 2];
    head.queries = Param::from_tensor(one_hot(&targets, d, 40.0, &device));
    head.w_score = Param::from_tensor(identity(d, &device) * 40.0);
    let context = one_hot(&(0..t).collect::<Vec<_>>(), d, 1.0, &device).unsqueeze_dim::<3>(0);
    let embeddings = Tensor::<3>::random([1, t, d], Distribution::Normal(0.0, 1.0), &device);
    let valid = Tensor::<2, Bool>::from_data(TensorData::new(vec![true; t], [1, t]), &device);
    let slots = head.forward(context, embeddings.clone(), valid);
    assert_eq!(slots.dims(), [1, k, 2 * d]);
    let copied = slots.narrow(2, d, d);
    let index = Tensor::<1, burn::tensor::Int>::from_data(
        TensorData::new(targets.iter().map(|&i| i as i64).collect(), [k]),
        &device,
    );
    let want = embeddings.select(1, index);
    let diff = max_abs_diff(copied, want);
    assert!(diff < 1e-5, "copied embeddings differ by {diff}");
}

#[test]
fn padded_tokens_are_never_copied() {
    let device = device();
    let (d, t, k) = (8, 5, 2);
    let head = CopyHeadConfig::new(d, k, 4).init(&device);
    let context = Tensor::<3>::random([1, t, d], Distribution::Normal(0.0, 1.0), &device);
    let mut embeddings = vec![0f32; t * d];
    // The last two tokens are padding with huge embeddings: any weight on
    // them would show.
    for v in &mut embeddings[3 * d..] {
        *v = 1e6;
    }
    let embeddings = Tensor::<3>::from_data(TensorData::new(embeddings, [1, t, d]), &device);
    let valid = Tensor::<2, Bool>::from_data(
        TensorData::new(vec![true, true, true, false, false], [1, t]),
        &device,
    );
    let slots = head.forward(context, embeddings, valid);
    let worst = slots.narrow(2, 4, d).abs().max().into_scalar::<f32>();
    assert!(worst < 1e-3, "padding leaked into a slot: {worst}");
}

#[test]
fn a_sharp_reader_hands_the_lm_the_slots_it_attends_to_and_the_prior_moves_it() {
    let device = device();
    let (dq, d_key, d_lm, p, slots, docs) = (6, 4, 5, 2, 2, 2);
    let mut reader = CopyReaderConfig::new(dq, d_key, d_lm, p).init(&device);
    // The question plays no part: output r's query is its position row,
    // pointing at key dimension r; slot keys are one-hot.
    reader.w_query = Param::from_tensor(Tensor::zeros([dq, d_key], &device));
    reader.positions = Param::from_tensor(one_hot(&[1, 3], d_key, 40.0, &device));
    // Slot keys: doc 0 slot 0 hot at 0, slot 1 at 1; doc 1 slot 0 at 2, slot 1 at 3.
    let keys = one_hot(&[0, 1, 2, 3], d_key, 40.0, &device);
    let values = Tensor::<2>::random(
        [slots * docs, d_lm],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let memory = Tensor::cat(vec![keys, values.clone()], 1).unsqueeze_dim::<3>(0);
    let question = Tensor::<3>::random([1, 3, dq], Distribution::Normal(0.0, 1.0), &device);
    let agg = reader.read(question.clone(), memory, slots, None);
    assert_eq!(agg.modulation.dims(), [1, p, d_lm]);
    let index =
        Tensor::<1, burn::tensor::Int>::from_data(TensorData::new(vec![1i64, 3], [2]), &device);
    let want = values.clone().select(0, index).unsqueeze_dim::<3>(0);
    let diff = max_abs_diff(agg.modulation, want);
    assert!(diff < 1e-5, "read tokens differ by {diff}");
    // One output in each document: half the attention each.
    let shares = &agg.doc_weights[0];
    assert!(
        (shares[0] - 0.5).abs() < 1e-4 && (shares[1] - 0.5).abs() < 1e-4,
        "{shares:?}"
    );
    // Mild attention, then a prior for document 1 moves the shares to it.
    let keys = one_hot(&[0, 1, 2, 3], d_key, 1.0, &device);
    let memory = Tensor::cat(vec![keys, values], 1).unsqueeze_dim::<3>(0);
    reader.positions = Param::from_tensor(one_hot(&[1, 3], d_key, 1.0, &device));
    let before = reader.read(question.clone(), memory.clone(), slots, None);
    let prior = Tensor::<2>::from_data(TensorData::new(vec![0f32, 3.0], [1, docs]), &device);
    let after = reader.read(question, memory, slots, Some(prior));
    assert!(
        after.doc_weights[0][1] > before.doc_weights[0][1] + 0.2,
        "{:?} -> {:?}",
        before.doc_weights,
        after.doc_weights
    );
}

#[test]
fn gradients_reach_every_copy_parameter() {
    let device = device().autodiff();
    let (d, t, k, dq, p) = (8, 5, 3, 6, 2);
    let head = CopyHeadConfig::new(d, k, 4).init(&device);
    let reader = CopyReaderConfig::new(dq, 4, d, p).init(&device);
    let context = Tensor::<3>::random([2, t, d], Distribution::Normal(0.0, 1.0), &device);
    let embeddings = Tensor::<3>::random([2, t, d], Distribution::Normal(0.0, 1.0), &device);
    let valid = Tensor::<2, Bool>::from_data(TensorData::new(vec![true; 2 * t], [2, t]), &device);
    let slots = head.forward(context, embeddings, valid); // two documents
    let memory = slots.reshape([1, 2 * k, 4 + d]).expand([3, 2 * k, 4 + d]);
    let question = Tensor::<3>::random([3, 4, dq], Distribution::Normal(0.0, 1.0), &device);
    let target = Tensor::<3>::random([3, p, d], Distribution::Normal(0.0, 1.0), &device);
    let out = reader.read(question, memory, k, None).modulation;
    let grads = (out - target).powi_scalar(2).sum().backward();
    let norm = |t: Tensor<2>| t.grad(&grads).map(|g| g.abs().sum().into_scalar::<f32>());
    for (name, g) in [
        ("head.queries", norm(head.queries.val())),
        ("head.w_score", norm(head.w_score.val())),
        ("reader.w_query", norm(reader.w_query.val())),
        ("reader.positions", norm(reader.positions.val())),
    ] {
        let g = g.unwrap_or(0.0);
        assert!(g > 0.0 && g.is_finite(), "{name}: gradient {g}");
    }
}

/// Hard attention: every slot is exactly one token's embedding and every
/// read token exactly one slot, whatever the (random) weights; gradients
/// still reach the parameters through the soft weights.
#[test]
fn hard_attention_copies_exactly_and_still_trains() {
    let device = device().autodiff();
    let (d, t, k, dq, p, dk) = (8, 5, 3, 6, 2, 4);
    let reader = CopyReaderConfig::new(dq, dk, d, p)
        .with_hard(true)
        .with_format_tokens(1)
        .init(&device);
    let is_a_row = |v: &[f32], rows: &[f32]| {
        rows.chunks(v.len())
            .any(|r| r.iter().zip(v).all(|(a, b)| (a - b).abs() < 1e-5))
    };
    // A random head can copy the same token into every slot (about one draw
    // in twenty here); the reader's attention then cannot matter and its
    // queries rightly get no gradient. Draw until two slots differ.
    let (head, slots, emb) = (0..100)
        .find_map(|_| {
            let head = CopyHeadConfig::new(d, k, dk).with_hard(true).init(&device);
            let context = Tensor::<3>::random([1, t, d], Distribution::Normal(0.0, 1.0), &device);
            let embeddings =
                Tensor::<3>::random([1, t, d], Distribution::Normal(0.0, 1.0), &device);
            let valid =
                Tensor::<2, Bool>::from_data(TensorData::new(vec![true; t], [1, t]), &device);
            let slots = head.forward(context, embeddings.clone(), valid);
            let emb: Vec<f32> = embeddings.try_to_vec_as::<f32>().unwrap();
            let stored: Vec<f32> = slots
                .clone()
                .narrow(2, dk, d)
                .try_to_vec_as::<f32>()
                .unwrap();
            for slot in stored.chunks(d) {
                assert!(
                    is_a_row(slot, &emb),
                    "a slot is not one token's embedding: {slot:?}"
                );
            }
            let first = &stored[..d];
            stored
                .chunks(d)
                .any(|s| s != first)
                .then_some((head, slots, emb))
        })
        .expect("a random head that stores two different tokens");
    let question = Tensor::<3>::random([1, 3, dq], Distribution::Normal(0.0, 1.0), &device);
    let out = reader.read(question, slots, k, None).modulation;
    assert_eq!(
        out.dims(),
        [1, 1 + p, d],
        "one format token, then the read ones"
    );
    let read: Vec<f32> = out.clone().narrow(1, 1, p).try_to_vec_as::<f32>().unwrap();
    for token in read.chunks(d) {
        assert!(
            is_a_row(token, &emb),
            "a read token is not a document token"
        );
    }
    let target = Tensor::<3>::random([1, 1 + p, d], Distribution::Normal(0.0, 1.0), &device);
    let grads = (out - target).powi_scalar(2).sum().backward();
    for (name, param) in [
        ("head.queries", head.queries.val()),
        ("reader.positions", reader.positions.val()),
        ("reader.w_format", reader.w_format.as_ref().unwrap().val()),
    ] {
        let g = param
            .grad(&grads)
            .map(|g| g.abs().sum().into_scalar::<f32>())
            .unwrap_or(0.0);
        assert!(g > 0.0 && g.is_finite(), "{name}: gradient {g}");
    }
}

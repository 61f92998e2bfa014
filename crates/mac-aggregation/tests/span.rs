//! The span selector's logits against a direct computation, the prior
//! spread over a document's tokens, and gradients to every parameter.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Bool, Distribution, Tensor, TensorData};
use mac_aggregation::{per_token, SpanSelectorConfig};

fn device() -> burn::tensor::Device {
    mac_device::select("flex").unwrap()
}

fn rows(t: Tensor<2>) -> Vec<Vec<f32>> {
    let [r, c] = t.dims();
    let v = t.try_to_vec_as::<f32>().unwrap();
    (0..r).map(|i| v[i * c..(i + 1) * c].to_vec()).collect()
}

#[test]
fn logits_are_scaled_dot_products_of_start_and_end_halves() {
    let device = device();
    let selector = SpanSelectorConfig::new(6).with_d_key(3).init(&device);
    let normal = Distribution::Normal(0.0, 1.0);
    let queries = Tensor::<2>::random([2, 6], normal, &device);
    let keys = Tensor::<2>::random([5, 6], normal, &device);
    let bias_docs = Tensor::<2>::from_data(
        TensorData::new(vec![1.0f32, -2.0, 0.5, 3.0], [2, 2]),
        &device,
    );
    // Two documents, of 2 and 3 tokens.
    let token_documents = [0, 0, 1, 1, 1];
    let bias = per_token(bias_docs, &[2, 3]);
    let got = selector.logits(queries.clone(), keys.clone(), Some(bias));
    let (q, k) = (rows(queries), rows(keys));
    let (start, end) = (rows(got.start), rows(got.end));
    let doc_bias = [[1.0f32, -2.0], [0.5, 3.0]];
    for i in 0..2 {
        for m in 0..5 {
            let dot = |h: usize| {
                (0..3)
                    .map(|j| q[i][h * 3 + j] * k[m][h * 3 + j])
                    .sum::<f32>()
                    / 3f32.sqrt()
            };
            let b = doc_bias[i][token_documents[m]];
            assert!((start[i][m] - (dot(0) + b)).abs() < 1e-5, "start {i},{m}");
            assert!((end[i][m] - (dot(1) + b)).abs() < 1e-5, "end {i},{m}");
        }
    }
}

/// Parameters of a selector that get a non-zero gradient from a loss over
/// all its outputs, and those that get none.
fn parameters_with_gradients(train_match: bool) -> (usize, usize) {
    let ad = device().autodiff();
    let selector = SpanSelectorConfig::new(8)
        .with_d_key(4)
        .with_train_match(train_match)
        .init(&ad);
    let normal = Distribution::Normal(0.0, 1.0);
    let keys = selector.token_keys(Tensor::<2>::random([7, 8], normal, &ad));
    let queries = selector.question_queries(Tensor::<2>::random([3, 16], normal, &ad));
    let states = Tensor::<2>::random([7, 8], normal, &ad);
    let match_keys = selector.match_keys(states).reshape([1, 7, 64]);
    let asked = selector
        .match_keys(Tensor::<2>::random([3, 8], normal, &ad))
        .reshape([3, 1, 64]);
    let valid = |r: usize, c: usize| {
        Tensor::<2, Bool>::from_data(TensorData::new(vec![true; r * c], [r, c]), &ad)
    };
    let documents = selector.document_logits(asked, valid(3, 1), match_keys, valid(1, 7));
    let logits = selector.logits(queries, keys, Some(documents.expand([3, 7])));
    let loss = (logits.start.powi_scalar(2) + logits.end).sum();
    let grads = loss.backward();
    struct Count<'a>(&'a burn::tensor::Gradients, usize, usize);
    impl ModuleVisitor for Count<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            match param.val().grad(self.0) {
                Some(g) if g.clone().abs().sum().into_scalar::<f32>() > 0.0 => self.1 += 1,
                _ => self.2 += 1,
            }
        }
    }
    let mut count = Count(&grads, 0, 0);
    selector.visit(&mut count);
    (count.1, count.2)
}

#[test]
fn every_parameter_gets_a_gradient_unless_frozen() {
    // Three norms (scale, bias), three projections, the match scale.
    assert_eq!(parameters_with_gradients(true), (10, 0));
    // The matching projection frozen: everything else still learns.
    assert_eq!(parameters_with_gradients(false), (9, 1));
}

#[test]
fn document_logits_average_each_question_tokens_best_cosine() {
    let device = device();
    let selector = SpanSelectorConfig::new(4)
        .with_match_scale(2.0)
        .init(&device);
    let unit =
        |v: Vec<f32>, shape: [usize; 3]| Tensor::<3>::from_data(TensorData::new(v, shape), &device);
    // Two documents of up to 3 tokens (the second has 2), keys in 2-D.
    let documents = unit(
        vec![1.0, 0.0, 0.0, 1.0, 0.6, 0.8, 0.0, -1.0, -1.0, 0.0, 0.0, 1.0],
        [2, 3, 2],
    );
    let document_valid = Tensor::<2, Bool>::from_data(
        TensorData::new(vec![true, true, true, true, true, false], [2, 3]),
        &device,
    );
    // One question of two tokens, the second padding.
    let questions = unit(vec![0.0, 1.0, 1.0, 0.0], [1, 2, 2]);
    let question_valid =
        Tensor::<2, Bool>::from_data(TensorData::new(vec![true, false], [1, 2]), &device);
    let matches = selector.document_matches(
        questions.clone(),
        question_valid.clone(),
        documents.clone(),
        document_valid.clone(),
    );
    // Each question token's best cosine per document, `[Q, N, Tq]`: the
    // padded question token reads zero.
    let tokens = matches.tokens.try_to_vec_as::<f32>().unwrap();
    let expected = [1.0, 0.0, 0.0, 0.0];
    assert!(
        tokens
            .iter()
            .zip(expected)
            .all(|(a, b)| (a - b).abs() < 1e-6),
        "{tokens:?}"
    );
    let got = rows(selector.document_logits(questions, question_valid, documents, document_valid));
    assert_eq!(got, rows(matches.logits));
    // Document 0: the best cosine of (0, 1) is 1; document 1: its third key,
    // (0, 1), is padding, so the best is 0 (from (-1, 0)), not 1.
    assert!((got[0][0] - 2.0).abs() < 1e-6, "{got:?}");
    assert!((got[0][1] - 0.0).abs() < 1e-6, "{got:?}");
}

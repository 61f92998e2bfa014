//! [`BaseLm`]: one frozen causal LM of either architecture (loaded from a
//! GGUF file or a Hugging Face directory by the `load` module), with
//! forward, loss, generation (greedy or sampled) and perplexity.

use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use mac_kernels::quantized::Activations;

use crate::batch::{Padding, PassContext, TokenBatch};
use crate::cache::KvCache;
use crate::error::{LmError, Result};
use crate::gpt2::Gpt2;
use crate::llama::{HostDecoder, Llama};
use crate::prefix::{KvLayout, PrefixKv};
use crate::sampling::{pick, Sampling};
use crate::tokenizer::TextTokenizer;

/// A frozen decoder of one of the supported architectures.
#[derive(Module, Debug)]
pub enum BaseLm {
    /// Llama family (SmolLM2, LLaMA-2, ...).
    Llama(Llama),
    /// GPT-2 family.
    Gpt2(Gpt2),
}

/// What a generation starts from besides its prompts.
#[derive(Debug, Clone, Default)]
pub struct Generation<'a> {
    /// Per-layer prefix key/values in front of everything.
    pub prefix: Option<&'a PrefixKv>,
    /// Keys and values of earlier tokens (empty, or one row per prompt).
    pub cache: KvCache,
}

/// A loaded model with its tokenizer.
#[derive(Debug, Clone)]
pub struct LoadedLm {
    /// The model.
    pub model: BaseLm,
    /// Its tokenizer.
    pub tokenizer: TextTokenizer,
}

/// Options of decoding.
#[derive(Debug, Clone, Copy)]
pub struct GenerateOptions {
    /// Most tokens to generate per row.
    pub max_new_tokens: usize,
    /// Stop a row when it produces EOS (the EOS id is not returned).
    pub stop_at_eos: bool,
    /// How each token is picked (greedy unless set).
    pub sampling: Sampling,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 16,
            stop_at_eos: true,
            sampling: Sampling::GREEDY,
        }
    }
}

/// Picks a row's next token in place of its [`Sampling`]: a decoding
/// restricted to some tokens (see [`BaseLm::generate_choosing`]).
pub trait TokenChoice {
    /// Row `row`'s next token after its tokens `so_far`, from its logits
    /// `[V]`; `None` leaves the pick to the row's sampling.
    fn choose(&mut self, row: usize, so_far: &[u32], logits: &[f32]) -> Option<u32>;
}

impl BaseLm {
    /// Shapes a prefix must have.
    pub fn kv_layout(&self) -> KvLayout {
        match self {
            BaseLm::Llama(m) => m.kv_layout(),
            BaseLm::Gpt2(m) => m.kv_layout(),
        }
    }

    /// Whether decode steps read the weights as the GGUF file keeps them
    /// (the default where it keeps them in blocks) or dequantised to f32;
    /// a model from any other file always reads f32.
    pub fn set_quantized_decode(&mut self, on: bool) {
        if let BaseLm::Llama(m) = self {
            m.set_quantized_decode(on);
        }
    }

    /// Whether decode steps on the file's blocks run over host buffers (the
    /// default) or as tensor operations; a model without blocks is
    /// unchanged.
    pub fn set_host_decode(&mut self, on: bool) {
        if let BaseLm::Llama(m) = self {
            m.set_host_decode(on);
        }
    }

    /// What decode steps on the file's blocks keep the activations as: f32
    /// (the default) or eight bits with integer dot products, as llama.cpp
    /// does; a model without blocks is unchanged.
    pub fn set_decode_activations(&mut self, activations: Activations) {
        if let BaseLm::Llama(m) = self {
            m.set_decode_activations(activations);
        }
    }

    /// Longest sequence (prompt + generation) the model supports.
    pub fn max_positions(&self) -> usize {
        match self {
            BaseLm::Llama(m) => m.config().max_position_embeddings,
            BaseLm::Gpt2(m) => m.config().n_positions,
        }
    }

    /// Width of the hidden state (what [`Self::logits`] reads).
    pub fn hidden_width(&self) -> usize {
        match self {
            BaseLm::Llama(m) => m.embed_tokens.dims()[1],
            BaseLm::Gpt2(m) => m.wte.dims()[1],
        }
    }

    /// The input token embeddings `[B, T, d]` of `ids` (no position
    /// information; the LM's own lookup table).
    pub fn token_embeddings(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let table = match self {
            BaseLm::Llama(m) => m.embed_tokens.val(),
            BaseLm::Gpt2(m) => m.wte.val(),
        };
        burn::tensor::module::embedding(table, ids)
    }

    /// A prefix of *virtual tokens*: hidden vectors `[B, P, d]` that every
    /// layer turns into keys and values with its own norm and projections,
    /// as if a token with that hidden state stood at position 0 in every
    /// layer. Differentiable with respect to `hidden` (the weights stay frozen).
    pub fn virtual_token_prefix(&self, hidden: Tensor<3>) -> Result<PrefixKv> {
        self.check_hidden_width(&hidden, "virtual tokens")?;
        Ok(match self {
            BaseLm::Llama(m) => m.virtual_token_kv(hidden),
            BaseLm::Gpt2(m) => m.virtual_token_kv(hidden),
        })
    }

    /// A prefix made by running input embeddings `[B, P, d]` (*soft-prompt
    /// tokens*) through the frozen decoder as a causal context placed just
    /// before the real tokens: every layer's prefix keys and values are the
    /// ones the LM itself computes for that context, so the LM reads the
    /// prefix the way it reads text. Differentiable with respect to
    /// `embeds`. Needs rotary positions (Llama): GPT-2's learned absolute
    /// positions have no slot before position 0.
    pub fn soft_prompt_prefix(&self, embeds: Tensor<3>) -> Result<PrefixKv> {
        self.check_hidden_width(&embeds, "soft-prompt tokens")?;
        match self {
            BaseLm::Llama(m) => Ok(m.soft_prompt_kv(embeds)),
            BaseLm::Gpt2(_) => Err(LmError::Input(
                "soft-prompt prefixes need rotary positions (Llama); GPT-2's learned \
                 absolute positions have no slot before position 0"
                    .into(),
            )),
        }
    }

    /// The residual stream `[B, T, d]` after the first `n_layers` layers
    /// (no final norm; `0` = the input embeddings, with GPT-2's positions).
    pub fn residual_stream(&self, batch: &TokenBatch, n_layers: usize) -> Result<Tensor<3>> {
        let total = self.kv_layout().n_layers;
        if n_layers > total {
            return Err(LmError::Input(format!(
                "asked for the residual stream after {n_layers} layers; the model has {total}"
            )));
        }
        self.run_layers(batch, None, None, n_layers)
    }

    /// An error naming `what` unless `x [B, P, d]` is the model's hidden width.
    fn check_hidden_width(&self, x: &Tensor<3>, what: &str) -> Result<()> {
        let d = x.dims()[2];
        if d != self.hidden_width() {
            return Err(LmError::Input(format!(
                "{what} are {d} wide, the model's hidden width is {}",
                self.hidden_width()
            )));
        }
        Ok(())
    }

    /// Device the weights live on.
    pub fn device(&self) -> Device {
        match self {
            BaseLm::Llama(m) => m.embed_tokens.val().device(),
            BaseLm::Gpt2(m) => m.wte.val().device(),
        }
    }

    fn n_heads(&self) -> usize {
        match self {
            BaseLm::Llama(m) => m.n_heads(),
            BaseLm::Gpt2(m) => m.n_heads(),
        }
    }

    /// Final hidden states `[B, T, d]` for a batch, optionally with a prefix and a cache
    /// (which is extended with the batch's keys and values).
    pub fn forward_hidden(
        &self,
        batch: &TokenBatch,
        prefix: Option<&PrefixKv>,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor<3>> {
        let n_layers = self.kv_layout().n_layers;
        let x = self.run_layers(batch, prefix, cache, n_layers)?;
        Ok(match self {
            BaseLm::Llama(m) => m.norm.forward(x),
            BaseLm::Gpt2(m) => m.ln_f.forward(x),
        })
    }

    /// The residual stream after the first `n_layers` layers over a batch,
    /// with the checks and the pass context every pass needs.
    fn run_layers(
        &self,
        batch: &TokenBatch,
        prefix: Option<&PrefixKv>,
        cache: Option<&mut KvCache>,
        n_layers: usize,
    ) -> Result<Tensor<3>> {
        let device = self.device();
        if let Some(p) = prefix {
            p.validate(&self.kv_layout(), batch.batch_size())?;
        }
        let past = cache.as_ref().map(|c| c.len()).unwrap_or(0);
        if past + batch.seq_len() > self.max_positions() {
            return Err(LmError::Input(format!(
                "{} positions exceed the model's limit of {}",
                past + batch.seq_len(),
                self.max_positions()
            )));
        }
        let mut cache = cache;
        let p = prefix.map(PrefixKv::len).unwrap_or(0);
        let ctx = PassContext::new(batch, p, self.n_heads(), cache.as_deref_mut(), &device)?;
        let ids = batch.ids_tensor(&device);
        Ok(match self {
            BaseLm::Llama(m) => m.residual(ids, &ctx, prefix, cache, n_layers),
            BaseLm::Gpt2(m) => m.residual(ids, &ctx, prefix, cache, n_layers),
        })
    }

    /// The keys and values of every layer over one row of tokens (positions
    /// `0..T`): what a generation that continues those tokens starts from.
    pub fn cache_of(&self, ids: &[u32]) -> Result<KvCache> {
        let mut cache = KvCache::new();
        self.extend_cache(&mut cache, ids)?;
        Ok(cache)
    }

    /// Reads `ids` after what a one-row `cache` holds, adding their keys
    /// and values to it: `cache_of(a)` extended by `b` is `cache_of(a ++ b)`
    /// (a shared beginning is read once).
    pub fn extend_cache(&self, cache: &mut KvCache, ids: &[u32]) -> Result<()> {
        if cache.rows() > 1 {
            return Err(LmError::Input(format!(
                "extending a cache of {} rows with one row of tokens",
                cache.rows()
            )));
        }
        self.run_layers(
            &TokenBatch::single(ids.to_vec())?,
            None,
            Some(cache),
            self.kv_layout().n_layers,
        )?;
        Ok(())
    }

    /// Vocabulary logits for hidden states.
    pub fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        match self {
            BaseLm::Llama(m) => m.logits(hidden),
            BaseLm::Gpt2(m) => m.logits(hidden),
        }
    }

    /// Logits `[B, T, V]` for a batch.
    pub fn forward(&self, batch: &TokenBatch, prefix: Option<&PrefixKv>) -> Result<Tensor<3>> {
        Ok(self.logits(self.forward_hidden(batch, prefix, None)?))
    }

    /// Mean negative log-likelihood of `targets[b][t]` (the token that should
    /// follow position `t`) over positions where `weights[b][t] > 0`,
    /// weighted. Differentiable with respect to the prefix.
    pub fn weighted_nll(
        &self,
        batch: &TokenBatch,
        targets: &[Vec<u32>],
        weights: &[Vec<f32>],
        prefix: Option<&PrefixKv>,
    ) -> Result<Tensor<1>> {
        let (b, t) = (batch.batch_size(), batch.seq_len());
        if targets.len() != b
            || weights.len() != b
            || targets.iter().any(|r| r.len() != t)
            || weights.iter().any(|r| r.len() != t)
        {
            return Err(LmError::Input(
                "targets/weights must match the batch shape".into(),
            ));
        }
        let total: f32 = weights.iter().flatten().sum();
        if total <= 0.0 {
            return Err(LmError::Input("no position carries loss weight".into()));
        }
        let device = self.device();
        // Vocabulary logits only where the loss reads them: the answer
        // positions are a few of each row, and the [rows, V] logits and
        // their softmax are a large share of a step's memory traffic.
        let (mut rows, mut tgt, mut w) = (Vec::new(), Vec::new(), Vec::new());
        for (r, (trow, wrow)) in targets.iter().zip(weights).enumerate() {
            for (c, (&target, &weight)) in trow.iter().zip(wrow).enumerate() {
                if weight > 0.0 {
                    rows.push((r * t + c) as i64);
                    tgt.push(target as i64);
                    w.push(weight);
                }
            }
        }
        let n = rows.len();
        let hidden = self.forward_hidden(batch, prefix, None)?;
        let d = hidden.dims()[2];
        let rows = Tensor::<1, Int>::from_data(TensorData::new(rows, [n]), &device);
        let picked_hidden = hidden
            .reshape([b * t, d])
            .select(0, rows)
            .reshape([1, n, d]);
        let logits = self.logits(picked_hidden);
        let v = logits.dims()[2];
        let logp = log_softmax(logits.reshape([n, v]), 1);
        let tgt = Tensor::<2, Int>::from_data(TensorData::new(tgt, [n, 1]), &device);
        let picked = logp.gather(1, tgt).reshape([n]);
        let w = Tensor::<1>::from_data(TensorData::new(w, [n]), &device);
        Ok((picked * w).sum().neg() / total)
    }

    /// Decoding with a KV cache, every prompt with the same options;
    /// returns the new tokens of every prompt (without the EOS that
    /// stopped it).
    pub fn generate(
        &self,
        prompts: &[Vec<u32>],
        prefix: Option<&PrefixKv>,
        pad_id: u32,
        eos_id: u32,
        opts: GenerateOptions,
    ) -> Result<Vec<Vec<u32>>> {
        let each = vec![opts; prompts.len()];
        self.generate_each(prompts, &each, prefix, pad_id, eos_id, &mut |_, _| true)
    }

    /// Decoding with a KV cache, prompt `i` with `opts[i]`, all in one
    /// batch. `on_token(i, tokens)` is called each time row `i` keeps a
    /// token, with the row's new tokens so far (that one last), and returns
    /// whether the row goes on (`false` ends it there, as EOS would).
    /// Returns the new tokens of every prompt (without the EOS that stopped
    /// it).
    pub fn generate_each(
        &self,
        prompts: &[Vec<u32>],
        opts: &[GenerateOptions],
        prefix: Option<&PrefixKv>,
        pad_id: u32,
        eos_id: u32,
        on_token: &mut dyn FnMut(usize, &[u32]) -> bool,
    ) -> Result<Vec<Vec<u32>>> {
        let start = Generation {
            prefix,
            cache: KvCache::new(),
        };
        self.generate_after(start, prompts, opts, pad_id, eos_id, on_token)
    }

    /// [`Self::generate_each`] after what `start` holds: a prefix, and a
    /// cache of earlier tokens' keys and values (one row per prompt, or
    /// empty) that the prompts continue, at the positions after the cache's.
    pub fn generate_after(
        &self,
        start: Generation<'_>,
        prompts: &[Vec<u32>],
        opts: &[GenerateOptions],
        pad_id: u32,
        eos_id: u32,
        on_token: &mut dyn FnMut(usize, &[u32]) -> bool,
    ) -> Result<Vec<Vec<u32>>> {
        self.generate_choosing(start, prompts, opts, (pad_id, eos_id), on_token, None)
    }

    /// [`Self::generate_after`] with `choice` picking each live row's
    /// token where it will (a restricted decoding), the row's
    /// [`Sampling`] elsewhere; `(pad_id, eos_id)` as there.
    pub fn generate_choosing(
        &self,
        start: Generation<'_>,
        prompts: &[Vec<u32>],
        opts: &[GenerateOptions],
        (pad_id, eos_id): (u32, u32),
        on_token: &mut dyn FnMut(usize, &[u32]) -> bool,
        mut choice: Option<&mut dyn TokenChoice>,
    ) -> Result<Vec<Vec<u32>>> {
        let Generation { prefix, mut cache } = start;
        if !cache.is_empty() && cache.rows() != prompts.len() {
            return Err(LmError::Input(format!(
                "{} prompts continue a cache of {} rows",
                prompts.len(),
                cache.rows()
            )));
        }
        if prompts.iter().any(Vec::is_empty) {
            return Err(LmError::Input(
                "cannot generate from an empty prompt".into(),
            ));
        }
        if opts.len() != prompts.len() {
            return Err(LmError::Input(format!(
                "{} prompts but {} sets of generation options",
                prompts.len(),
                opts.len()
            )));
        }
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let most_new = opts.iter().map(|o| o.max_new_tokens).max().unwrap_or(0);
        let before = cache
            .next_pos
            .iter()
            .copied()
            .max()
            .unwrap_or(0)
            .max(cache.len());
        if before + longest + most_new > self.max_positions() {
            return Err(LmError::Input(format!(
                "{before} cached positions + a prompt of {longest} tokens + {most_new} new tokens \
                 exceed the model's {} positions",
                self.max_positions()
            )));
        }
        let mut batch = TokenBatch::padded(prompts, pad_id, Padding::Left)?;
        let b = prompts.len();
        let mut out = vec![Vec::new(); b];
        let mut done: Vec<bool> = opts.iter().map(|o| o.max_new_tokens == 0).collect();
        let mut rngs: Vec<_> = opts.iter().map(|o| o.sampling.rng()).collect();
        let mut host: Option<HostDecoder<'_>> = None;
        while !done.iter().all(|&d| d) {
            let logits = match host.as_mut() {
                Some(decoder) => decoder.step(&batch)?,
                None => {
                    let hidden = self.forward_hidden(&batch, prefix, Some(&mut cache))?;
                    let t = hidden.dims()[1];
                    self.logits(hidden.narrow(1, t - 1, 1))
                }
            };
            let next = self.pick_tokens(
                logits,
                opts,
                (&done, &out),
                &mut rngs,
                choice.as_deref_mut(),
            )?;
            let mut ids = Vec::with_capacity(b);
            let mut valid = Vec::with_capacity(b);
            for (row, &tok) in next.iter().enumerate() {
                if !done[row] && opts[row].stop_at_eos && tok == eos_id {
                    done[row] = true;
                }
                if done[row] {
                    ids.push(vec![pad_id]);
                    valid.push(vec![false]);
                } else {
                    out[row].push(tok);
                    ids.push(vec![tok]);
                    valid.push(vec![true]);
                    let go_on = on_token(row, &out[row]);
                    done[row] = !go_on || out[row].len() >= opts[row].max_new_tokens;
                }
            }
            batch = TokenBatch { ids, valid };
            if let (None, BaseLm::Llama(m)) = (&host, self) {
                // Every later step reads one token a row: on host buffers
                // where the model decodes on its blocks, started only when
                // a step follows (the cache is copied out once).
                if !done.iter().all(|&d| d) {
                    host = HostDecoder::start(m, prefix, &cache)?;
                }
            }
        }
        Ok(out)
    }

    /// The next token of every row from its last logits `[B, 1, V]`: argmax
    /// on the device when no live row samples and nothing restricts the
    /// choice, else each row as `choice` picks it or its [`Sampling`] says
    /// (finished rows get token 0, unread; `out`: each row's tokens so far).
    fn pick_tokens<'c>(
        &self,
        logits: Tensor<3>,
        opts: &[GenerateOptions],
        (done, out): (&[bool], &[Vec<u32>]),
        rngs: &mut [rand_chacha::ChaCha8Rng],
        mut choice: Option<&mut (dyn TokenChoice + 'c)>,
    ) -> Result<Vec<u32>> {
        let [b, _, v] = logits.dims();
        let read = |e| LmError::Input(format!("reading logits: {e:?}"));
        let sampled = opts
            .iter()
            .zip(done)
            .any(|(o, &d)| !d && !o.sampling.is_greedy());
        if !sampled && choice.is_none() {
            let next = logits
                .argmax(2)
                .reshape([b])
                .try_to_vec_as::<i64>()
                .map_err(read)?;
            return Ok(next.into_iter().map(|t| t as u32).collect());
        }
        let values = logits.try_to_vec_as::<f32>().map_err(read)?;
        Ok(values
            .chunks(v)
            .zip(opts.iter().zip(done).zip(rngs))
            .enumerate()
            .map(|(i, (row, ((o, &d), rng)))| {
                if d {
                    return 0;
                }
                let chosen = choice
                    .as_deref_mut()
                    .and_then(|c| c.choose(i, &out[i], row));
                chosen.unwrap_or_else(|| pick(row, &o.sampling, rng) as u32)
            })
            .collect())
    }

    /// Perplexity of a token sequence, evaluated in non-overlapping windows of
    /// at most `window` tokens (the first token of each window is not scored).
    pub fn perplexity(&self, ids: &[u32], window: usize) -> Result<f64> {
        if ids.len() < 2 {
            return Err(LmError::Input(
                "need at least two tokens for perplexity".into(),
            ));
        }
        let window = window.clamp(2, self.max_positions());
        let (mut nll, mut count) = (0f64, 0usize);
        for chunk in ids.chunks(window) {
            if chunk.len() < 2 {
                continue;
            }
            let input = TokenBatch::single(chunk[..chunk.len() - 1].to_vec())?;
            let targets = vec![chunk[1..].to_vec()];
            let weights = vec![vec![1f32; chunk.len() - 1]];
            let loss = self.weighted_nll(&input, &targets, &weights, None)?;
            let v: f32 = loss.into_scalar::<f32>();
            nll += v as f64 * (chunk.len() - 1) as f64;
            count += chunk.len() - 1;
        }
        Ok((nll / count as f64).exp())
    }
}

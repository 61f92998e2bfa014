//! How questions and answers are put to the base LM — one place, shared by
//! training and evaluation so the two cannot drift apart.

use mac_lm::{LmError, Padding, TextTokenizer, TokenBatch};

/// The prompt for a question: `Question: …\nAnswer:`; the answer follows
/// after one space and ends with the LM's EOS token.
pub fn question_prompt(question: &str) -> String {
    format!("Question: {}\nAnswer:", question.trim())
}

/// The prompt with the gold document in front (the *oracle context* reference).
pub fn oracle_prompt(document: &str, question: &str) -> String {
    format!("{}\n{}", document.trim(), question_prompt(question))
}

/// Tokens of `prompt` (with BOS when the tokenizer adds one).
pub fn prompt_ids(tokenizer: &TextTokenizer, prompt: &str) -> Result<Vec<u32>, LmError> {
    tokenizer.encode(prompt)
}

/// Tokens of a continuation: never a BOS.
pub fn continuation_ids(tokenizer: &TextTokenizer, text: &str) -> Result<Vec<u32>, LmError> {
    let mut ids = tokenizer.encode(text)?;
    if tokenizer.add_bos && tokenizer.bos_id.is_some() && ids.first().copied() == tokenizer.bos_id {
        ids.remove(0);
    }
    Ok(ids)
}

/// A teacher-forced batch: inputs, next-token targets and loss weights (1 on
/// the answer's tokens and the EOS, 0 on the prompt and padding).
#[derive(Debug, Clone)]
pub struct AnswerBatch {
    /// Right-padded inputs.
    pub batch: TokenBatch,
    /// `targets[b][t]`: the token that should follow position `t`.
    pub targets: Vec<Vec<u32>>,
    /// `weights[b][t]`: 1 where `targets[b][t]` is part of the answer.
    pub weights: Vec<Vec<f32>>,
}

/// Builds the teacher-forced batch for `(prompt, answer)` pairs.
pub fn answer_batch(
    tokenizer: &TextTokenizer,
    pairs: &[(String, String)],
    max_tokens: usize,
) -> Result<AnswerBatch, LmError> {
    let mut seqs = Vec::with_capacity(pairs.len());
    let mut starts = Vec::with_capacity(pairs.len());
    for (prompt, answer) in pairs {
        let mut ids = prompt_ids(tokenizer, prompt)?;
        let start = ids.len();
        ids.extend(continuation_ids(tokenizer, &format!(" {}", answer.trim()))?);
        ids.push(tokenizer.eos_id);
        if ids.len() > max_tokens {
            return Err(LmError::Input(format!(
                "question + answer is {} tokens, over the limit of {max_tokens}",
                ids.len()
            )));
        }
        seqs.push(ids);
        starts.push(start);
    }
    let batch = TokenBatch::padded(&seqs, tokenizer.pad_id, Padding::Right)?;
    let t = batch.seq_len();
    let mut targets = Vec::with_capacity(seqs.len());
    let mut weights = Vec::with_capacity(seqs.len());
    for (ids, &start) in seqs.iter().zip(&starts) {
        let mut tg = vec![tokenizer.pad_id; t];
        let mut w = vec![0.0; t];
        for pos in 0..ids.len() - 1 {
            tg[pos] = ids[pos + 1];
            if pos + 1 >= start {
                w[pos] = 1.0;
            }
        }
        targets.push(tg);
        weights.push(w);
    }
    Ok(AnswerBatch {
        batch,
        targets,
        weights,
    })
}

//! Answers from the frozen LM: a continuation of the question prompt, of at
//! most so many tokens, greedy or sampled; the answer is its first
//! non-empty line, trimmed. A row stops as soon as that line is complete, and the
//! answer so far can be watched as it grows (for streaming).

use mac_lm::{GenerateOptions, Generation, KvCache, LoadedLm, PrefixKv, Sampling, TokenChoice};
use serde::Serialize;

use crate::prompt::{continuation_ids, prompt_ids};
use crate::ModelError;

/// Most tokens of an answer unless a caller asks otherwise (the reference
/// code's limit).
pub const MAX_ANSWER_TOKENS: usize = 16;

/// How one answer is generated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnswerGeneration {
    /// Most tokens generated; the answer is the first line of them.
    pub max_tokens: usize,
    /// How each token is picked (greedy unless set).
    pub sampling: Sampling,
}

impl Default for AnswerGeneration {
    fn default() -> Self {
        Self {
            max_tokens: MAX_ANSWER_TOKENS,
            sampling: Sampling::GREEDY,
        }
    }
}

/// Where the time of a batch of answers went, in milliseconds: every
/// question of a batch waits for the whole batch, so each carries the
/// batch's times.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct AnswerTimings {
    /// Reading the bank and choosing what the LM is handed (the paper's
    /// aggregation; span memory's choice of a span).
    pub read_bank_ms: f64,
    /// Reading what was chosen and generating the answers.
    pub generate_ms: f64,
}

impl AnswerTimings {
    /// The times of a batch that started at `t0`, finished reading the
    /// bank at `read`, and is finished now.
    pub fn since(t0: std::time::Instant, read: std::time::Instant) -> Self {
        Self {
            read_bank_ms: 1000.0 * read.duration_since(t0).as_secs_f64(),
            generate_ms: 1000.0 * read.elapsed().as_secs_f64(),
        }
    }
}

/// One generated answer and how its generation ended.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedAnswer {
    /// The first line of the continuation, trimmed.
    pub text: String,
    /// The continuation reached its token limit before its first line ended
    /// (or EOS came): the answer may be cut short.
    pub hit_token_limit: bool,
    /// Tokens generated (up to the first line's end, without EOS).
    pub generated_tokens: usize,
    /// Tokens the LM read before answering: the prompt and any cached
    /// tokens it continued (a prefix of key/values is not counted).
    pub prompt_tokens: usize,
}

/// Greedy answers of at most `max_new_tokens` tokens from any loaded LM
/// (first line of each continuation).
pub fn generate_answers(
    lm: &LoadedLm,
    prompts: &[String],
    prefix: Option<&PrefixKv>,
    max_new_tokens: usize,
) -> Result<Vec<String>, ModelError> {
    let generation = vec![greedy(max_new_tokens); prompts.len()];
    let answers = answers_to_prompts(lm, prompts, &generation, prefix, &mut |_, _| {}, None)?;
    Ok(answers.into_iter().map(|a| a.text).collect())
}

/// [`generate_answers`] with answer `i` copied from the text `sources[i]`
/// (see [`CopiedAnswers`]): the text methods' answers where the memory
/// compared with them copies its own.
///
/// [`CopiedAnswers`]: crate::CopiedAnswers
pub fn generate_copied_answers(
    lm: &LoadedLm,
    prompts: &[String],
    sources: &[&str],
    max_new_tokens: usize,
) -> Result<Vec<String>, ModelError> {
    if sources.len() != prompts.len() {
        return Err(ModelError::Input(format!(
            "{} sources to copy from for {} prompts",
            sources.len(),
            prompts.len()
        )));
    }
    let tokens = sources
        .iter()
        .map(|s| continuation_ids(&lm.tokenizer, s).map(Some))
        .collect::<Result<Vec<_>, _>>()?;
    let mut copies = crate::CopiedAnswers::new(&lm.tokenizer, tokens)?;
    let generation = vec![greedy(max_new_tokens); prompts.len()];
    let answers = answers_to_prompts(
        lm,
        prompts,
        &generation,
        None,
        &mut |_, _| {},
        Some(&mut copies),
    )?;
    Ok(answers.into_iter().map(|a| a.text).collect())
}

/// Greedy generation of at most `max_tokens` tokens.
fn greedy(max_tokens: usize) -> AnswerGeneration {
    AnswerGeneration {
        max_tokens,
        sampling: Sampling::GREEDY,
    }
}

/// Answers to text prompts in one batch, after `prefix`, `on_text`
/// watching them grow and `choice` picking the tokens it will.
fn answers_to_prompts(
    lm: &LoadedLm,
    prompts: &[String],
    generation: &[AnswerGeneration],
    prefix: Option<&PrefixKv>,
    on_text: &mut dyn FnMut(usize, &str),
    choice: Option<&mut dyn TokenChoice>,
) -> Result<Vec<GeneratedAnswer>, ModelError> {
    let ids = prompts
        .iter()
        .map(|p| prompt_ids(&lm.tokenizer, p))
        .collect::<Result<Vec<_>, _>>()?;
    let start = Generation {
        prefix,
        cache: KvCache::new(),
    };
    generate_answers_after(lm, start, &ids, generation, on_text, choice)
}

/// Answers to `prompts`, prompt `i` generated as `generation[i]`, in one
/// batch. `on_text(i, so_far)` is called as answer `i` grows, with the part
/// of it that is settled (always a prefix of the final answer).
pub fn generate_answers_each(
    lm: &LoadedLm,
    prompts: &[String],
    generation: &[AnswerGeneration],
    prefix: Option<&PrefixKv>,
    on_text: &mut dyn FnMut(usize, &str),
) -> Result<Vec<GeneratedAnswer>, ModelError> {
    answers_to_prompts(lm, prompts, generation, prefix, on_text, None)
}

/// [`generate_answers_each`] from token ids that continue what `start`
/// holds (a prefix, and a cache of earlier tokens with one row per prompt);
/// `choice`, where given, picks the tokens it will (as [`CopiedAnswers`]
/// keeps an answer a copy of what the LM was handed).
///
/// [`CopiedAnswers`]: crate::CopiedAnswers
pub fn generate_answers_after(
    lm: &LoadedLm,
    start: Generation<'_>,
    ids: &[Vec<u32>],
    generation: &[AnswerGeneration],
    on_text: &mut dyn FnMut(usize, &str),
    choice: Option<&mut dyn TokenChoice>,
) -> Result<Vec<GeneratedAnswer>, ModelError> {
    let tok = &lm.tokenizer;
    let opts: Vec<GenerateOptions> = generation
        .iter()
        .map(|g| GenerateOptions {
            max_new_tokens: g.max_tokens,
            stop_at_eos: true,
            sampling: g.sampling,
        })
        .collect();
    let cached: Vec<usize> = (0..ids.len())
        .map(|row| {
            start
                .cache
                .valid
                .get(row)
                .map_or(0, |v| v.iter().filter(|&&r| r).count())
        })
        .collect();
    let mut decode_error = None;
    let out = lm.model.generate_choosing(
        start,
        ids,
        &opts,
        (tok.pad_id, tok.eos_id),
        &mut |row, tokens| match tok.decode(tokens) {
            Ok(text) => {
                let (settled, ended) = settled_answer(&text);
                on_text(row, settled);
                !ended
            }
            Err(e) => {
                decode_error.get_or_insert(e);
                false
            }
        },
        choice,
    )?;
    if let Some(e) = decode_error {
        return Err(e.into());
    }
    out.iter()
        .zip(generation)
        .zip(ids.iter().zip(cached))
        .map(|((tokens, g), (prompt, cached))| {
            let text = tok.decode(tokens)?;
            Ok(GeneratedAnswer {
                // Cut by the limit: neither a line's end nor EOS came first.
                hit_token_limit: !text.trim_start().contains('\n') && tokens.len() >= g.max_tokens,
                text: first_line(&text),
                generated_tokens: tokens.len(),
                prompt_tokens: prompt.len() + cached,
            })
        })
        .collect()
}

/// The answer is the first non-empty line of the continuation, trimmed
/// (an LM often starts its answer on a new line).
pub(crate) fn first_line(s: &str) -> String {
    s.trim_start()
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string()
}

/// The part of the answer that more tokens cannot change, and whether the
/// first non-empty line is complete: the whole line once a newline ended
/// it; before, the text without the whitespace the final trim may remove
/// and without a character still being decoded (U+FFFD).
fn settled_answer(decoded: &str) -> (&str, bool) {
    let text = decoded.trim_start();
    if let Some(end) = text.find('\n') {
        return (text[..end].trim(), true);
    }
    let text = text.trim_end_matches(|c: char| c.is_whitespace() || c == '\u{FFFD}');
    (text, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settled_answer_is_a_prefix_of_the_final_one() {
        let continuation = "  Port Vessa, in the north\nand more";
        let final_answer = first_line(continuation);
        assert_eq!(final_answer, "Port Vessa, in the north");
        for end in 0..=continuation.len() {
            if !continuation.is_char_boundary(end) {
                continue;
            }
            let (settled, ended) = settled_answer(&continuation[..end]);
            assert!(final_answer.starts_with(settled), "{end}: {settled:?}");
            assert_eq!(ended, continuation[..end].contains('\n'));
        }
        assert_eq!(settled_answer(continuation), (final_answer.as_str(), true));
        // A character still being decoded is held back.
        assert_eq!(settled_answer(" caf\u{FFFD}"), ("caf", false));
        // Empty lines before the answer are skipped, not taken for it.
        let late = "\n \nPort Vessa\nmore";
        assert_eq!(first_line(late), "Port Vessa");
        assert_eq!(settled_answer("\n \n"), ("", false));
        assert_eq!(settled_answer("\n \nPort"), ("Port", false));
        assert_eq!(settled_answer(late), ("Port Vessa", true));
    }
}

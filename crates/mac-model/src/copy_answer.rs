//! Answers copied from what the LM was handed: each token the LM picks
//! must keep its answer a run of whole words of the handed text, and the
//! answer may end only where a word of it ends. The LM still chooses which
//! words (its most probable token that keeps the copy is taken); it can no
//! longer write a word the text does not hold ("coral trombone" for a
//! handed "chromatic trombone") or stop inside one ("3" of "38").

use mac_lm::{TextTokenizer, TokenChoice};

use crate::ModelError;

/// The most probable tokens tried first, in order, at each step; then the
/// handed text's own tokens, likeliest first. When none of them keeps the
/// copy the answer ends.
const CANDIDATES: usize = 64;

/// What one answer is copied from: the text and its tokens.
struct Source {
    text: String,
    tokens: Vec<u32>,
}

/// A [`TokenChoice`] keeping row `i`'s answer a copy of the text of
/// `sources[i]` (rows without a source pick as their sampling says).
pub struct CopiedAnswers<'a> {
    tokenizer: &'a TextTokenizer,
    eos_id: u32,
    sources: Vec<Option<Source>>,
}

impl<'a> CopiedAnswers<'a> {
    /// Answers of row `i` copied from the text of the tokens `sources[i]`.
    pub fn new(
        tokenizer: &'a TextTokenizer,
        sources: Vec<Option<Vec<u32>>>,
    ) -> Result<Self, ModelError> {
        let sources = sources
            .into_iter()
            .map(|tokens| {
                tokens
                    .map(|mut tokens| {
                        let text = tokenizer.decode(&tokens)?;
                        tokens.sort_unstable();
                        tokens.dedup();
                        Ok(Source { text, tokens })
                    })
                    .transpose()
            })
            .collect::<Result<_, ModelError>>()?;
        Ok(Self {
            tokenizer,
            eos_id: tokenizer.eos_id,
            sources,
        })
    }

    /// Whether `next` after `so_far` keeps the answer a copy of `source`
    /// (an end — EOS or a line break — only after a whole word).
    fn keeps(&self, source: &str, so_far: &[u32], next: u32) -> bool {
        if next == self.eos_id {
            return match self.tokenizer.decode(so_far) {
                Ok(text) => copied(source, text.trim(), true),
                Err(_) => false,
            };
        }
        let mut ids = so_far.to_vec();
        ids.push(next);
        let Ok(text) = self.tokenizer.decode(&ids) else {
            return false;
        };
        let text = text.trim_start();
        if let Some(line_end) = text.find('\n') {
            return copied(source, text[..line_end].trim(), true);
        }
        // A character still being decoded (at most three bytes of one the
        // text could hold) is judged when it is whole.
        let whole = text.trim_end_matches('\u{FFFD}');
        let pending = text[whole.len()..].chars().count();
        match pending {
            0 => copied(source, text, false),
            1..=3 => !source.is_ascii() && copied(source, whole, false),
            _ => false,
        }
    }
}

impl TokenChoice for CopiedAnswers<'_> {
    fn choose(&mut self, row: usize, so_far: &[u32], logits: &[f32]) -> Option<u32> {
        let source = self.sources.get(row)?.as_ref()?;
        let by_logit = |a: &u32, b: &u32| {
            logits[*b as usize]
                .total_cmp(&logits[*a as usize])
                .then(a.cmp(b))
        };
        let mut top: Vec<u32> = (0..logits.len() as u32).collect();
        let k = CANDIDATES.min(top.len());
        if k > 0 {
            top.select_nth_unstable_by(k - 1, by_logit);
        }
        top.truncate(k);
        top.sort_by(by_logit);
        let mut own: Vec<u32> = source
            .tokens
            .iter()
            .copied()
            .filter(|&t| (t as usize) < logits.len())
            .collect();
        own.push(self.eos_id);
        own.sort_by(by_logit);
        let kept = top
            .into_iter()
            .chain(own)
            .find(|&t| self.keeps(&source.text, so_far, t));
        Some(kept.unwrap_or(self.eos_id))
    }
}

/// Whether `answer` occurs in `source` (its first letter in either case)
/// starting where a word starts and, when `complete`, ending where one
/// ends. An empty complete answer is no copy.
pub(crate) fn copied(source: &str, answer: &str, complete: bool) -> bool {
    let mut chars = answer.chars();
    let Some(first) = chars.next() else {
        return !complete;
    };
    let rest = chars.as_str();
    let word = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
    let cases = [
        first.to_lowercase().to_string(),
        first.to_uppercase().to_string(),
    ];
    cases.iter().any(|first| {
        let answer = format!("{first}{rest}");
        source.match_indices(answer.as_str()).any(|(i, _)| {
            let before = source[..i].chars().next_back();
            let after = source[i + answer.len()..].chars().next();
            let starts = !word(before) || !word(answer.chars().next());
            let ends = !word(after) || !word(answer.chars().next_back());
            starts && (!complete || ends)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::copied;

    #[test]
    fn a_copy_starts_and_ends_on_whole_words() {
        let source = "Siobhan Nakamura now plays the chromatic trombone, 38 times.";
        assert!(copied(source, "chromatic trombone", true));
        // The first letter in either case; no other.
        assert!(copied(source, "Chromatic", false));
        assert!(copied(source, "siobhan Nakamura", true));
        assert!(!copied(source, "chroMatic", false));
        assert!(copied(source, "the chromatic trombone,", true));
        // Inside a word, at either end, is no copy.
        assert!(!copied(source, "hromatic", false));
        assert!(copied(source, "3", false));
        assert!(!copied(source, "3", true));
        assert!(copied(source, "38", true));
        // A word the text does not hold.
        assert!(!copied(source, "coral trombone", false));
        assert!(!copied(source, "", true));
        assert!(copied(source, "", false));
    }
}

//! Answers copied from what the LM was handed: each token the LM picks
//! must keep its answer a run of the handed text that starts where a word
//! starts and ends where one of the text's own tokens ends (so the text's
//! next token can always carry it on), and the answer may end only where
//! a word ends. The LM still chooses which words (its most probable token
//! that keeps the copy is taken); it can no longer write a word the text
//! does not hold ("coral trombone" for a handed "chromatic trombone"),
//! stop inside one ("3" of "38") or strand itself inside one of the
//! text's tokens ("c" of " chromatic").

use mac_lm::{TextTokenizer, TokenChoice};

use crate::ModelError;

/// The most probable tokens tried first, in order, at each step; then the
/// handed text's own tokens, likeliest first. When none of them keeps the
/// copy the answer ends.
const CANDIDATES: usize = 64;

/// What one answer is copied from: the text, where each of its tokens
/// ends in it (bytes), and its tokens (sorted, once each).
struct Source {
    text: String,
    ends: Vec<usize>,
    tokens: Vec<u32>,
}

/// Where a copy may end.
#[derive(Clone, Copy)]
enum Until<'a> {
    /// Where a word of the source ends: a whole answer.
    Word,
    /// Where one of the source's tokens ends (these byte offsets).
    Token(&'a [usize]),
    /// Anywhere (a character still being decoded).
    Anywhere,
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
                        let ends = (1..=tokens.len())
                            .map(|n| tokenizer.decode(&tokens[..n]).map(|t| t.len()))
                            .collect::<Result<Vec<_>, _>>()?;
                        tokens.sort_unstable();
                        tokens.dedup();
                        Ok(Source { text, ends, tokens })
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
    fn keeps(&self, source: &Source, so_far: &[u32], next: u32) -> bool {
        let text = &source.text;
        if next == self.eos_id {
            return match self.tokenizer.decode(so_far) {
                Ok(answer) => copied(text, answer.trim(), Until::Word),
                Err(_) => false,
            };
        }
        let mut ids = so_far.to_vec();
        ids.push(next);
        let Ok(answer) = self.tokenizer.decode(&ids) else {
            return false;
        };
        let answer = answer.trim_start();
        if let Some(line_end) = answer.find('\n') {
            return copied(text, answer[..line_end].trim(), Until::Word);
        }
        // A character still being decoded (at most three bytes of one the
        // text could hold) is judged when it is whole.
        let whole = answer.trim_end_matches('\u{FFFD}');
        let pending = answer[whole.len()..].chars().count();
        match pending {
            0 => copied(text, answer, Until::Token(&source.ends)),
            1..=3 => !text.is_ascii() && copied(text, whole, Until::Anywhere),
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
            .find(|&t| self.keeps(source, so_far, t));
        Some(kept.unwrap_or(self.eos_id))
    }
}

/// Whether `answer` occurs in `source` (its first letter in either case)
/// starting where a word starts and ending as `until` says. An empty
/// answer is a copy only where it need not be whole.
fn copied(source: &str, answer: &str, until: Until<'_>) -> bool {
    let mut chars = answer.chars();
    let Some(first) = chars.next() else {
        return !matches!(until, Until::Word);
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
            let e = i + answer.len();
            let before = source[..i].chars().next_back();
            let starts = !word(before) || !word(answer.chars().next());
            let ends = match until {
                Until::Word => {
                    !word(source[e..].chars().next()) || !word(answer.chars().next_back())
                }
                Until::Token(ends) => e == source.len() || ends.binary_search(&e).is_ok(),
                Until::Anywhere => true,
            };
            starts && ends
        })
    })
}

#[cfg(test)]
mod tests {
    use super::{copied, Until};

    #[test]
    fn a_copy_starts_and_ends_on_whole_words() {
        let source = "Siobhan Nakamura now plays the chromatic trombone, 38 times.";
        let complete = |answer| copied(source, answer, Until::Word);
        let begun = |answer| copied(source, answer, Until::Anywhere);
        assert!(complete("chromatic trombone"));
        // The first letter in either case; no other.
        assert!(begun("Chromatic"));
        assert!(complete("siobhan Nakamura"));
        assert!(!begun("chroMatic"));
        assert!(complete("the chromatic trombone,"));
        // Inside a word, at either end, is no copy.
        assert!(!begun("hromatic"));
        assert!(begun("3"));
        assert!(!complete("3"));
        assert!(complete("38"));
        // A word the text does not hold.
        assert!(!begun("coral trombone"));
        assert!(!complete(""));
        assert!(begun(""));
    }

    #[test]
    fn a_copy_in_progress_ends_where_a_token_of_the_text_ends() {
        // " the", " chrom", "atic", " trom", "bone"
        let source = " the chromatic trombone";
        let ends = [4, 10, 14, 19, 23];
        let so_far = |answer| copied(source, answer, Until::Token(&ends));
        assert!(so_far("chrom") && so_far("chromatic") && so_far("chromatic trom"));
        assert!(!so_far("c") && !so_far("chromat") && !so_far("chromatic t"));
        assert!(so_far("the chromatic trombone"));
    }
}

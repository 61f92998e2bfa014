//! A later report read beside the value it replaces. A report of a change
//! often names the old value beside the new ("has put away the folk
//! accordion and now plays the lute"), and a small LM handed that sentence
//! may copy the first value it meets. Where span memory reads a later entry
//! instead of an earlier one ([`mac_aggregation::SpanChoice::passed_over`]),
//! the earlier entry's answer is the replaced value; the later entry's
//! sentence is then handed without it, only the part beside it.

use mac_lm::LoadedLm;

use crate::names::{bare_word, question_names};
use crate::ModelError;

/// Words too common to mark a value.
const FUNCTION_WORDS: [&str; 16] = [
    "the", "a", "an", "and", "or", "of", "in", "on", "at", "to", "for", "by", "with", "has", "is",
    "was",
];

/// The part of `document`'s tokens `handed` (first and last, inclusive)
/// beside the first place they state `replaced`: the longer run of tokens
/// before or after it (by letters and digits). `None` where they do not
/// state it, where `replaced` is only a name the `question` names or
/// function words, or where nothing but punctuation lies beside it.
pub fn beside_replaced(
    lm: &LoadedLm,
    document: &[u32],
    (a, b): (usize, usize),
    replaced: &str,
    question: &str,
) -> Result<Option<(usize, usize)>, ModelError> {
    let value = replaced.trim_matches(|c: char| !c.is_alphanumeric());
    if a > b || b >= document.len() || !marks_a_value(value, question) {
        return Ok(None);
    }
    let text = |i: usize, j: usize| lm.tokenizer.decode(&document[i..=j]);
    let mut last = None;
    for j in a..=b {
        if text(a, j)?.contains(value) {
            last = Some(j);
            break;
        }
    }
    let Some(s1) = last else {
        return Ok(None);
    };
    let mut s0 = a;
    for i in (a..=s1).rev() {
        if text(i, s1)?.contains(value) {
            s0 = i;
            break;
        }
    }
    let letters = |(i, j): (usize, usize)| -> Result<usize, ModelError> {
        Ok(text(i, j)?.chars().filter(|c| c.is_alphanumeric()).count())
    };
    let before = (s0 > a).then(|| (a, s0 - 1));
    let after = (s1 < b).then(|| (s1 + 1, b));
    let mut best: Option<((usize, usize), usize)> = None;
    for side in [before, after].into_iter().flatten() {
        let n = letters(side)?;
        if n > 0 && best.is_none_or(|(_, m)| n > m) {
            best = Some((side, n));
        }
    }
    Ok(best.map(|(side, _)| side))
}

/// Whether `value` can mark a replaced value: a number, or a word of three
/// letters or more that is neither a function word nor a word of a name
/// `question` names.
fn marks_a_value(value: &str, question: &str) -> bool {
    let names = question_names(question);
    value.split_whitespace().map(bare_word).any(|w| {
        let number = !w.is_empty() && w.chars().all(|c| c.is_ascii_digit());
        number
            || w.chars().filter(|c| c.is_alphanumeric()).count() >= 3
                && !FUNCTION_WORDS.contains(&w.to_lowercase().as_str())
                && !names.iter().flatten().any(|n| *n == w)
    })
}

#[cfg(test)]
mod tests {
    use super::marks_a_value;

    #[test]
    fn a_name_or_function_words_mark_no_value() {
        let q = "What instrument does Soren Oyelaran play?";
        assert!(marks_a_value("the folk accordion", q));
        assert!(marks_a_value("14", q));
        assert!(!marks_a_value("of", q));
        assert!(!marks_a_value("Soren Oyelaran", q));
        assert!(!marks_a_value("the", q));
        assert!(!marks_a_value("", q));
        assert!(marks_a_value("Oyelaran & Daughters", q));
    }
}

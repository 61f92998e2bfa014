//! The names a question names: what a later report must name too to be
//! about the same entity.

/// The capitalised words of `question` after its first word (its names:
/// people, places, firms), without surrounding punctuation or a possessive
/// `'s`.
pub fn question_names(question: &str) -> Vec<&str> {
    question
        .split_whitespace()
        .skip(1)
        .map(bare_word)
        .filter(|w| w.chars().next().is_some_and(char::is_uppercase))
        .collect()
}

/// Whether `text` holds every one of `names` as a word.
pub fn names_every(text: &str, names: &[&str]) -> bool {
    names
        .iter()
        .all(|name| text.split_whitespace().map(bare_word).any(|w| w == *name))
}

/// A word without the punctuation around it or a possessive `'s`.
fn bare_word(word: &str) -> &str {
    let w = word.trim_matches(|c: char| !c.is_alphanumeric());
    w.strip_suffix("'s")
        .or_else(|| w.strip_suffix("’s"))
        .unwrap_or(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_question_names_its_capitalised_words_after_the_first() {
        assert_eq!(
            question_names("Who is Siobhan Yilmaz's spouse?"),
            ["Siobhan", "Yilmaz"]
        );
        assert_eq!(
            question_names("Where does Hesdor Wexlar work?"),
            ["Hesdor", "Wexlar"]
        );
        assert!(question_names("What is the capital?").is_empty());
        let text = "Lately Siobhan Yilmaz has switched to the baroque bassoon.";
        assert!(names_every(
            text,
            &question_names("What does Siobhan Yilmaz play?")
        ));
        assert!(!names_every(
            text,
            &question_names("What does Siobhan Castellanos play?")
        ));
        // A name inside a longer word is not the name.
        assert!(!names_every("Yilmazova wrote.", &["Yilmaz"]));
        assert!(names_every("anything", &[]));
    }
}

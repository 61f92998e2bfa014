//! The names a question names: what a later report must name too to be
//! about the same entity.

/// The names of `question` after its first word (people, places, firms):
/// each a run of consecutive capitalised words, without surrounding
/// punctuation or a possessive `'s`.
pub fn question_names(question: &str) -> Vec<Vec<&str>> {
    let mut names: Vec<Vec<&str>> = Vec::new();
    let mut run: Vec<&str> = Vec::new();
    for word in question.split_whitespace().skip(1) {
        let w = bare_word(word);
        if w.chars().next().is_some_and(char::is_uppercase) {
            run.push(w);
        }
        // A name ends at a word that is not capitalised or that ends a clause.
        let ends = !w.chars().next().is_some_and(char::is_uppercase)
            || word.ends_with(|c: char| c != '\'' && !c.is_alphanumeric())
            || word.ends_with("'s")
            || word.ends_with("’s");
        if ends && !run.is_empty() {
            names.push(std::mem::take(&mut run));
        }
    }
    if !run.is_empty() {
        names.push(run);
    }
    names
}

/// Whether `text` names every one of `names`: each name's words one after
/// another, as words of the text.
pub fn names_every(text: &str, names: &[Vec<&str>]) -> bool {
    let words: Vec<&str> = text.split_whitespace().map(bare_word).collect();
    names.iter().all(|name| {
        name.is_empty()
            || words
                .windows(name.len())
                .any(|w| w.iter().zip(name).all(|(a, b)| a == b))
    })
}

/// A word without the punctuation around it or a possessive `'s`.
pub(crate) fn bare_word(word: &str) -> &str {
    let w = word.trim_matches(|c: char| !c.is_alphanumeric());
    w.strip_suffix("'s")
        .or_else(|| w.strip_suffix("’s"))
        .unwrap_or(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_question_names_its_runs_of_capitalised_words_after_the_first() {
        assert_eq!(
            question_names("Who is Siobhan Yilmaz's spouse?"),
            [vec!["Siobhan", "Yilmaz"]]
        );
        assert_eq!(
            question_names("Does Hesdor Wexlar work for Orvane Dynamics?"),
            [vec!["Hesdor", "Wexlar"], vec!["Orvane", "Dynamics"]]
        );
        assert_eq!(
            question_names("Did Ada Byron, Tom Lind meet?"),
            [vec!["Ada", "Byron"], vec!["Tom", "Lind"]]
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
        // Both words, but not one after the other: another entity.
        let apart = "Siobhan Fitzgerald now works for Castellanos & Daughters.";
        assert!(!names_every(
            apart,
            &question_names("Where did Siobhan Castellanos grow up?")
        ));
        // A name inside a longer word is not the name.
        assert!(!names_every("Yilmazova wrote.", &[vec!["Yilmaz"]]));
        assert!(names_every("anything", &[]));
    }
}

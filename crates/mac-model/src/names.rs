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
    let words: Vec<&str> = text.split_whitespace().collect();
    names
        .iter()
        .all(|name| name.is_empty() || (0..words.len()).any(|i| names_at(&words[i..], name)))
}

/// Whether `words` (as written) begin with `name`'s words, one after
/// another.
fn names_at(words: &[&str], name: &[&str]) -> bool {
    words.len() >= name.len() && words.iter().zip(name).all(|(w, n)| bare_word(w) == *n)
}

/// `text` with each of `names` (its words one after another) put as
/// "someone" ("their" where possessive), so that a sentence encoder judges
/// what the text says of its subject rather than who the subject is.
/// Words are joined by single spaces; a name's trailing punctuation stays.
pub fn without_names(text: &str, names: &[Vec<&str>]) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut out: Vec<String> = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        let rest = &words[i..];
        let named = names
            .iter()
            .find(|name| !name.is_empty() && names_at(rest, name));
        let Some(name) = named else {
            out.push(words[i].to_string());
            i += 1;
            continue;
        };
        out.push(stand_in(rest[name.len() - 1]));
        i += name.len();
    }
    out.join(" ")
}

/// What stands for a name whose last word is `last`: "their" for a
/// possessive, else "someone" with the word's trailing punctuation.
fn stand_in(last: &str) -> String {
    let core = last.trim_end_matches(|c: char| !c.is_alphanumeric());
    let tail = &last[core.len()..];
    match core.ends_with("'s") || core.ends_with("’s") {
        true => format!("their{tail}"),
        false => format!("someone{tail}"),
    }
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

    #[test]
    fn without_names_puts_someone_for_each_name_and_their_for_a_possessive() {
        let names = question_names("Whom did Siobhan Yilmaz marry at Porto Rena?");
        assert_eq!(
            without_names(
                "Lately Siobhan Yilmaz has  wed Henrik Obradovic in Porto Rena.",
                &names
            ),
            "Lately someone has wed Henrik Obradovic in someone."
        );
        assert_eq!(
            without_names("Siobhan Yilmaz's tally has grown.", &names),
            "their tally has grown."
        );
        // Another person sharing a first name keeps it; nothing named, the
        // text's words as they were.
        assert_eq!(
            without_names("Siobhan Castellanos, a Yilmaz.", &names),
            "Siobhan Castellanos, a Yilmaz."
        );
        assert_eq!(without_names("No name here.", &[]), "No name here.");
    }
}

//! One question's tests of the later entries a recency may read instead of
//! the best (see [`mac_aggregation::LaterTests`]): whether an entry names
//! what the question names, how well its best sentence matches the
//! question by the sentence encoder, and whether it restates the best
//! entry's fact the question asks about. Each entry's text is read once, from
//! wherever the caller keeps them ([`EntryTexts`]), and each test is asked
//! of it once.

use std::collections::HashMap;

use mac_aggregation::LaterTests;

use crate::{names_every, ModelError, SentenceCheck};

/// Where entries' texts are read from (a bank on disk, texts in memory).
pub trait EntryTexts {
    /// What reading can fail with.
    type Error: From<ModelError>;
    /// The text of `entry`.
    fn text(&mut self, entry: usize) -> Result<&str, Self::Error>;
}

/// Texts in memory: entry `e` is `texts[order[e]]`.
pub struct TextsInOrder<'a> {
    /// Every text.
    pub texts: &'a [String],
    /// Each entry's index into `texts`.
    pub order: &'a [usize],
}

impl EntryTexts for TextsInOrder<'_> {
    type Error = ModelError;

    fn text(&mut self, entry: usize) -> Result<&str, ModelError> {
        let at = self.order.get(entry).and_then(|&i| self.texts.get(i));
        at.map(String::as_str).ok_or_else(|| {
            ModelError::Input(format!(
                "entry {entry} is not among the {} texts",
                self.order.len()
            ))
        })
    }
}

/// One question's tests of later entries over `T`'s texts, each asked of
/// an entry once.
pub struct EntryTests<'t, 'q, T> {
    texts: &'t mut T,
    question: &'q str,
    names: &'q [Vec<&'q str>],
    check: Option<&'q SentenceCheck>,
    named: HashMap<usize, bool>,
    matched: HashMap<(usize, bool), f32>,
    restated: HashMap<(usize, usize, bool), bool>,
}

impl<'t, 'q, T: EntryTexts> EntryTests<'t, 'q, T> {
    /// The tests of `question` (naming `names`, see
    /// [`crate::question_names`]), matching sentences with `check` where
    /// there is one (without, the sentence test passes every entry).
    pub fn new(
        texts: &'t mut T,
        question: &'q str,
        names: &'q [Vec<&'q str>],
        check: Option<&'q SentenceCheck>,
    ) -> Self {
        Self {
            texts,
            question,
            names,
            check,
            named: HashMap::new(),
            matched: HashMap::new(),
            restated: HashMap::new(),
        }
    }

    /// How many sentence matches were computed (each entry and masking
    /// once).
    pub fn matches_computed(&self) -> usize {
        self.matched.len()
    }
}

impl<T: EntryTexts> LaterTests for EntryTests<'_, '_, T> {
    type Error = T::Error;

    fn names_the_same(&mut self, entry: usize) -> Result<bool, T::Error> {
        if let Some(&named) = self.named.get(&entry) {
            return Ok(named);
        }
        let named = names_every(self.texts.text(entry)?, self.names);
        self.named.insert(entry, named);
        Ok(named)
    }

    fn best_match(&mut self, entry: usize, without: bool) -> Result<Option<f32>, T::Error> {
        let Some(check) = self.check else {
            return Ok(None);
        };
        if let Some(&m) = self.matched.get(&(entry, without)) {
            return Ok(Some(m));
        }
        let text = self.texts.text(entry)?;
        let m = check.best_match(self.question, text, self.names, without)?;
        self.matched.insert((entry, without), m);
        Ok(Some(m))
    }

    fn restates(
        &mut self,
        later: usize,
        best: usize,
        without: bool,
    ) -> Result<Option<bool>, T::Error> {
        let Some(check) = self.check else {
            return Ok(None);
        };
        if let Some(&r) = self.restated.get(&(later, best, without)) {
            return Ok(Some(r));
        }
        let earlier = self.texts.text(best)?.to_owned();
        let texts = (earlier.as_str(), self.texts.text(later)?);
        let r = check.restates(self.question, texts, self.names, without)?;
        self.restated.insert((later, best, without), r);
        Ok(Some(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::question_names;

    /// Texts in memory that count how often each entry is read.
    struct Counted {
        texts: Vec<String>,
        reads: Vec<usize>,
    }

    impl EntryTexts for Counted {
        type Error = ModelError;
        fn text(&mut self, entry: usize) -> Result<&str, ModelError> {
            self.reads[entry] += 1;
            Ok(&self.texts[entry])
        }
    }

    #[test]
    fn each_entry_is_tested_once_and_without_an_encoder_every_sentence_passes() {
        let texts = ["Mira Holt plays the oboe.", "Tom Reyes plays the tuba."];
        let mut counted = Counted {
            texts: texts.map(String::from).to_vec(),
            reads: vec![0; 2],
        };
        let question = "What does Mira Holt play?";
        let names = question_names(question);
        let mut tests = EntryTests::new(&mut counted, question, &names, None);
        for _ in 0..3 {
            assert!(tests.names_the_same(0).unwrap());
            assert!(!tests.names_the_same(1).unwrap());
            assert_eq!(tests.best_match(1, true).unwrap(), None);
            assert_eq!(tests.restates(1, 0, true).unwrap(), None);
        }
        assert_eq!(tests.matches_computed(), 0);
        assert_eq!(counted.reads, [1, 1]);
    }

    #[test]
    fn texts_in_order_name_an_entry_out_of_range() {
        let texts = vec!["a".to_string(), "b".to_string()];
        let mut inorder = TextsInOrder {
            texts: &texts,
            order: &[1, 0, 7],
        };
        assert_eq!(inorder.text(0).unwrap(), "b");
        let err = inorder.text(2).unwrap_err().to_string();
        assert!(err.contains("entry 2"), "{err}");
        assert!(inorder.text(3).is_err());
    }
}

//! An *update* stream: knowledge that changes. People are introduced as in
//! the novel stream (its names, wording and values, none of them in
//! training); every third document is a later report that one of an
//! earlier person's facts has changed — a new employer, a new instrument, a
//! new spouse, more marathons run. The question about a changed fact sits
//! with the update and its answer is the new value; the replaced value is
//! kept as its `stale` answer, so an evaluation can tell an answer that
//! follows the latest document from one that repeats the earlier.

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::novel::{fill, introduce, person, pick, questions, value, Kind, ASIDES, KINDS};
use crate::{Dataset, Document, QaPair};

/// The kinds of fact a later document can change.
const MUTABLE: [Kind; 4] = [Kind::Firm, Kind::Instrument, Kind::Spouse, Kind::Marathons];

/// Sentences reporting a change (`{n}` the person, `{o}` the old value,
/// `{v}` the new one).
fn changes(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Firm => &[
            "{n} left {o} this year and now works for {v}.",
            "These days {n} draws a salary from {v}.",
            "After years at {o}, {n} has taken a post at {v}.",
        ],
        Kind::Instrument => &[
            "{n} has put away the {o} and now plays the {v}.",
            "Lately {n} has switched to the {v}.",
        ],
        Kind::Spouse => &[
            "{n} has divorced {o} and married {v}.",
            "Since the spring {n} has been married to {v}.",
        ],
        _ => &[
            "With the latest race, {n} has now completed {v} marathons.",
            "{n}'s tally has grown to {v} marathons.",
        ],
    }
}

/// A later value of `kind` that differs from `old`.
fn new_value(kind: Kind, old: &str, rng: &mut ChaCha8Rng) -> String {
    if kind == Kind::Marathons {
        let run: u32 = old.parse().unwrap_or(0);
        return (run + rng.random_range(1..=9)).to_string();
    }
    loop {
        let v = value(kind, rng);
        if v != old {
            return v;
        }
    }
}

/// One introduced person whose facts may still change.
struct Introduced {
    name: String,
    /// Index of the introducing document in the stream.
    at: usize,
    /// A mutable fact: its kind, its question's index there, its value.
    fact: (Kind, usize, String),
}

/// `n_documents` documents of the update stream, deterministic in `seed`:
/// two of every three introduce a new person (three facts, one of them
/// mutable), the third changes the mutable fact of a person introduced
/// earlier. Every answer occurs in its document's text.
pub fn update_stream(seed: u64, n_documents: usize) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut used = std::collections::HashSet::new();
    let mut waiting: Vec<Introduced> = Vec::new();
    let mut documents: Vec<Document> = Vec::with_capacity(n_documents);
    while documents.len() < n_documents.min(500) {
        if documents.len() % 3 == 2 && !waiting.is_empty() {
            let who = waiting.remove(rng.random_range(0..waiting.len()));
            let changed = update(&who, &mut documents, &mut rng);
            documents.push(changed);
            continue;
        }
        let name = person(&mut rng);
        if !used.insert(name.clone()) {
            continue;
        }
        let mutable = *MUTABLE.choose(&mut rng).unwrap_or(&Kind::Firm);
        let mut others: Vec<Kind> = KINDS.into_iter().filter(|&k| k != mutable).collect();
        rand::seq::SliceRandom::shuffle(&mut others[..], &mut rng);
        let mut kinds = vec![mutable, others[0], others[1]];
        rand::seq::SliceRandom::shuffle(&mut kinds[..], &mut rng);
        let (document, values) = introduce(name.clone(), &kinds, &mut rng);
        let i = kinds.iter().position(|&k| k == mutable).unwrap_or(0);
        waiting.push(Introduced {
            name,
            at: documents.len(),
            fact: (mutable, i, values[i].clone()),
        });
        documents.push(document);
    }
    Dataset { documents }
}

/// The document changing `who`'s mutable fact; the question about it moves
/// from the introduction (where its answer is now stale) to the update.
fn update(who: &Introduced, documents: &mut [Document], rng: &mut ChaCha8Rng) -> Document {
    let (kind, question, old) = &who.fact;
    let new = new_value(*kind, old, rng);
    let said = pick(changes(*kind), rng)
        .replace("{o}", old)
        .replace("{n}", &who.name)
        .replace("{v}", &new);
    let mut text = said;
    if rng.random_bool(0.5) {
        text = format!("{text} {}", fill(pick(&ASIDES, rng), &who.name, ""));
    }
    let introduction = &mut documents[who.at];
    introduction.qas.remove(*question);
    Document {
        id: format!("{} (update)", who.name),
        text,
        qas: vec![QaPair {
            question: fill(pick(questions(*kind), rng), &who.name, ""),
            answers: vec![new],
            stale: vec![old.clone()],
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_follow_their_introductions_and_carry_the_stale_value() {
        let s = update_stream(3, 90);
        assert_eq!(s, update_stream(3, 90));
        assert_eq!(s.documents.len(), 90);
        let updates: Vec<usize> = (0..90)
            .filter(|&i| s.documents[i].id.ends_with("(update)"))
            .collect();
        assert_eq!(updates.len(), 30);
        for &u in &updates {
            let d = &s.documents[u];
            let name = d.id.trim_end_matches(" (update)");
            let intro = s.documents[..u]
                .iter()
                .find(|e| e.id == name)
                .expect("introduced earlier");
            let qa = &d.qas[0];
            assert!(d.text.contains(&qa.answers[0]), "{}", d.text);
            assert!(intro.text.contains(&qa.stale[0]), "{}", intro.text);
            assert_ne!(qa.answers, qa.stale);
            // The introduction no longer asks what changed.
            assert!(intro.qas.iter().all(|q| q.answers != qa.stale));
            assert_eq!(intro.qas.len(), 2);
        }
        for d in &s.documents {
            for qa in &d.qas {
                assert!(d.text.contains(&qa.answers[0]), "{}", d.text);
            }
        }
    }
}

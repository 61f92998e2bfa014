//! Knowledge that changes, in the training generator's wording, for
//! choices made on validation: documents like the validation split's
//! (validation templates and values, entities of their own), and after
//! every two of them a short later document restating one of an earlier
//! entity's facts with a new value — its employer, field, award, patents
//! or address (and in the broad stream also its favourite book, home
//! language, pet or car), half of them naming the value replaced too. The held-out [`update_stream`](super::update_stream) has
//! its own wording, people and kinds of fact; nothing here is tested on.

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::open::Split;
use super::templates::{document_templates, FILLER};
use super::{
    fill, fresh_name, pick_template, stream_names, Attribute, FactStreamConfig, SplitRules,
    ValueVocabulary,
};
use std::collections::HashSet;

use crate::{Dataset, Document};

/// The attributes a later document may change.
const MUTABLE: [Attribute; 5] = [
    Attribute::Employer,
    Attribute::Field,
    Attribute::Award,
    Attribute::Patents,
    Attribute::Address,
];

/// The broad stream's further attributes a later document may change.
const BROAD_MUTABLE: [Attribute; 4] = [
    Attribute::Book,
    Attribute::Language,
    Attribute::Pet,
    Attribute::Vehicle,
];

/// Whether a later document of `config`'s stream may change `a`.
fn mutable(config: &FactStreamConfig, a: Attribute) -> bool {
    MUTABLE.contains(&a) || (config.values == ValueVocabulary::Broad && BROAD_MUTABLE.contains(&a))
}

/// An introduced entity whose fact may still change: its document's index
/// and the question (its index there) about a mutable attribute.
struct Waiting {
    at: usize,
    question: usize,
    attribute: Attribute,
}

/// `n_documents` documents of knowledge that changes, deterministic in the
/// stream's seed; no entity shares a name with `config`'s stream. A
/// changed fact's question moves to the later document, its answer the new
/// value and the replaced one kept as `stale`.
pub fn validation_updates(config: &FactStreamConfig, n_documents: usize) -> Dataset {
    updates_of(
        config,
        Split::Validation,
        0x00c4_a6e5,
        stream_names(config),
        n_documents,
    )
}

/// The same kind of stream from the training split's templates and values
/// (and its own seed and entities): knowledge that changes for training,
/// where an entity's later document is a document about the same name
/// that does not answer the questions about its other facts.
/// None of its entities is one of the first 1,000 documents' of
/// [`validation_updates`].
pub fn training_updates(config: &FactStreamConfig, n_documents: usize) -> Dataset {
    let mut used = stream_names(config);
    let validation = validation_updates(config, VALIDATION_HELD);
    used.extend(validation.documents.into_iter().map(|d| d.id));
    updates_of(config, Split::Train, 0x7a1e_0d47, used, n_documents)
}

/// Documents of [`validation_updates`] whose entities training never names.
const VALIDATION_HELD: usize = 1_000;

fn updates_of(
    config: &FactStreamConfig,
    split: Split,
    salt: u64,
    mut used: HashSet<String>,
    n_documents: usize,
) -> Dataset {
    let rules = SplitRules { config, split };
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ salt);
    let mut documents: Vec<Document> = Vec::with_capacity(n_documents);
    let mut waiting: Vec<Waiting> = Vec::new();
    while documents.len() < n_documents {
        if documents.len() % 3 == 2 && !waiting.is_empty() {
            let who = waiting.swap_remove(rng.random_range(0..waiting.len()));
            let later = changed(&rules, &who, &mut documents, &mut rng);
            documents.push(later);
            continue;
        }
        let Some(n) = fresh_name(&mut used, &mut rng) else {
            break;
        };
        let (document, attributes) = rules.stated(&n, &mut rng);
        let mutable: Vec<usize> = (0..attributes.len())
            .filter(|&i| mutable(config, attributes[i]))
            .collect();
        if let Some(&question) = mutable.choose(&mut rng) {
            waiting.push(Waiting {
                at: documents.len(),
                question,
                attribute: attributes[question],
            });
        }
        documents.push(document);
    }
    Dataset { documents }
}

/// The later document restating `who`'s fact with a new value; the
/// question moves there from the introduction.
fn changed(
    rules: &SplitRules<'_>,
    who: &Waiting,
    documents: &mut [Document],
    rng: &mut ChaCha8Rng,
) -> Document {
    let introduction = &mut documents[who.at];
    let mut qa = introduction.qas.remove(who.question);
    let old = qa.answers.first().cloned().unwrap_or_default();
    let new = loop {
        let v = rules.value(who.attribute, rng);
        if v != old {
            break v;
        }
    };
    let name = introduction.id.clone();
    let stated = fill(
        pick_template(document_templates(who.attribute), true, rng),
        &name,
        &new,
    );
    let said = if rng.random_bool(CHANGE_ONLY_SHARE) {
        let wording = pick_template(change_only(who.attribute), rules.held_out_too(), rng);
        fill(wording, &name, &new)
    } else {
        naming_the_replaced(stated, &old, rng)
    };
    let mut sentences = vec![said];
    if rng.random_bool(0.5) {
        if let Some(filler) = FILLER.choose(rng) {
            sentences.push(fill(filler, &name, ""));
        }
        sentences.shuffle(rng);
    }
    qa.stale = vec![old];
    qa.answers = vec![new];
    Document {
        id: format!("{name} (later)"),
        text: sentences.join(" "),
        qas: vec![qa],
    }
}

/// Share of later documents that speak only of the change (see
/// [`change_only`]).
const CHANGE_ONLY_SHARE: f64 = 1.0 / 3.0;

/// Sentences that give a new value (`{v}`) of `a` for a person (`{n}`)
/// as a change, in words of their own: not the attribute's statements' or
/// questions' (nor the held-out stream's), the kind of fact told by the
/// verb and the value. The last of each is validation's only.
fn change_only(a: Attribute) -> &'static [&'static str] {
    match a {
        Attribute::Employer => &[
            "{n} has since signed on with {v}.",
            "A move this year took {n} to a desk at {v}.",
        ],
        Attribute::Field => &[
            "{n} has since turned to {v}.",
            "Nowadays {n} pursues {v} instead.",
        ],
        Attribute::Award => &[
            "{n} has since picked up {v}.",
            "Newest on {n}'s shelf is {v}.",
        ],
        Attribute::Patents => &[
            "{n}'s filings at the office have since reached {v}.",
            "Another batch of filings brings {n}'s total to {v}.",
        ],
        Attribute::Address => &[
            "{n} has since relocated to {v}.",
            "{n} packed up and took rooms at {v}.",
        ],
        Attribute::Book => &[
            "{n} now swears by {v}.",
            "On {n}'s nightstand these days: {v}.",
        ],
        Attribute::Language => &[
            "{n}'s household has gone over to {v}.",
            "Over dinner {n}'s family now chats in {v}.",
        ],
        Attribute::Pet => &[
            "{n} has since taken in a new companion, {v}.",
            "A new companion greets {n} at the door: {v}.",
        ],
        _ => &[
            "{n} has since traded up to {v}.",
            "{n} gets about these days in {v}.",
        ],
    }
}

/// Half the time, `stated` (a sentence giving the new value) reworded to
/// name the value it replaces too, before or after it — in wording of this
/// stream's own, not the held-out stream's.
fn naming_the_replaced(stated: String, old: &str, rng: &mut ChaCha8Rng) -> String {
    if !rng.random_bool(0.5) {
        return stated;
    }
    let bare = stated.trim_end_matches('.');
    match rng.random_range(0..3) {
        0 => format!("{old} is a thing of the past: {stated}"),
        1 => format!("{bare}, no longer {old}."),
        _ => format!("Records giving {old} are out of date; {bare}."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FactStream;

    #[test]
    fn training_updates_are_their_own_entities() {
        let config = FactStreamConfig::open();
        // As many as the span preset trains on and validates with.
        let train = training_updates(&config, 600);
        let validation = validation_updates(&config, 96);
        assert_eq!(train.documents.len(), 600);
        let names: HashSet<&str> = validation.documents.iter().map(|d| d.id.as_str()).collect();
        assert!(train
            .documents
            .iter()
            .all(|d| !names.contains(d.id.as_str())));
        assert!(train.documents.iter().any(|d| d.id.ends_with(" (later)")));
        // Training speaks of a change in all but validation's own wording.
        let said = |d: &Document, w: &str| {
            let name = d.id.trim_end_matches(" (later)");
            d.qas
                .iter()
                .any(|qa| d.text.contains(&fill(w, name, &qa.answers[0])))
        };
        let wordings = MUTABLE.map(change_only);
        let held = wordings.iter().filter_map(|w| w.last());
        assert!(!train
            .documents
            .iter()
            .any(|d| held.clone().any(|w| said(d, w))));
        assert!(train
            .documents
            .iter()
            .any(|d| said(d, change_only(MUTABLE[0])[0])));
    }

    #[test]
    fn the_broad_stream_changes_its_further_kinds_too() {
        let config = FactStreamConfig::broad();
        let s = validation_updates(&config, 150);
        let later: Vec<&Document> = s
            .documents
            .iter()
            .filter(|d| d.id.ends_with(" (later)"))
            .collect();
        assert_eq!(later.len(), 50);
        // A later document whose question is one of a further kind's.
        let broad_kind = |d: &&Document| {
            let name = d.id.trim_end_matches(" (later)");
            BROAD_MUTABLE.iter().any(|&a| {
                super::super::templates::question_templates(a)
                    .iter()
                    .any(|t| fill(t, name, "") == d.qas[0].question)
            })
        };
        assert!(
            later.iter().filter(|d| broad_kind(d)).count() >= 10,
            "too few later books, languages, pets or cars"
        );
        for d in later {
            assert_ne!(d.qas[0].answers, d.qas[0].stale);
        }
    }

    #[test]
    fn later_documents_restate_an_earlier_fact_with_a_new_value() {
        let config = FactStreamConfig::open();
        let s = validation_updates(&config, 60);
        assert_eq!(s, validation_updates(&config, 60));
        assert_eq!(s.documents.len(), 60);
        let stream = FactStream::generate(&config);
        let names: HashSet<&str> = [&stream.train, &stream.validation, &stream.test]
            .into_iter()
            .flat_map(|d| d.documents.iter().map(|d| d.id.as_str()))
            .collect();
        let later: Vec<&Document> = s
            .documents
            .iter()
            .filter(|d| d.id.ends_with(" (later)"))
            .collect();
        assert_eq!(later.len(), 20);
        for d in &s.documents {
            assert!(
                !names.contains(d.id.trim_end_matches(" (later)")),
                "{}",
                d.id
            );
            for qa in &d.qas {
                assert!(d.text.contains(&qa.answers[0]), "{}", d.text);
            }
        }
        // Some later reports name the value they replace, some do not.
        let naming = later
            .iter()
            .filter(|d| d.text.contains(&d.qas[0].stale[0]))
            .count();
        assert!(
            (3..=17).contains(&naming),
            "{naming} of 20 name the old value"
        );
        // A third or so speak only of the change.
        let change_only = later
            .iter()
            .filter(|d| {
                let name = d.id.trim_end_matches(" (later)");
                let answer = &d.qas[0].answers[0];
                MUTABLE
                    .iter()
                    .flat_map(|&a| change_only(a))
                    .any(|w| d.text.contains(&fill(w, name, answer)))
            })
            .count();
        assert!((2..=14).contains(&change_only), "{change_only} of 20");
        for d in later {
            let name = d.id.trim_end_matches(" (later)");
            let at = s.documents.iter().position(|e| e.id == name).unwrap();
            let intro = &s.documents[at];
            let qa = &d.qas[0];
            assert!(d.text.contains(name) && intro.text.contains(&qa.stale[0]));
            assert_ne!(qa.answers, qa.stale);
            assert!(intro.qas.iter().all(|q| q.question != qa.question));
            assert!(s.documents[at..].iter().any(|e| std::ptr::eq(e, d)));
        }
    }
}

//! A *novel* fact stream: written apart from the training generator, so
//! that it measures whether a memory trained on [`super::FactStream`] reads
//! text or only recognises the generator's sentences.
//!
//! Everything differs from the training stream: the entities' names (first
//! names and surnames of many languages, not made-up syllables), the
//! wording of every sentence and question (none of the generator's
//! templates), the values (other constructions: Romance-style towns,
//! partnership firms, dates written month first), and four of its seven
//! attributes are kinds the generator never states (instrument, university,
//! spouse, marathons run). Each document states three facts among up to two
//! sentences that state nothing asked about.

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::MONTHS;
use crate::{Dataset, Document, QaPair};

/// What a novel document can state about its person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    BirthDate,
    Hometown,
    Firm,
    Instrument,
    University,
    Spouse,
    Marathons,
}

pub(super) const KINDS: [Kind; 7] = [
    Kind::BirthDate,
    Kind::Hometown,
    Kind::Firm,
    Kind::Instrument,
    Kind::University,
    Kind::Spouse,
    Kind::Marathons,
];

const FIRST_NAMES: [&str; 40] = [
    "Ingrid",
    "Tomasz",
    "Amara",
    "Kenji",
    "Lucia",
    "Oluwaseun",
    "Mateus",
    "Freya",
    "Dmitri",
    "Leila",
    "Anouk",
    "Rafael",
    "Siobhan",
    "Arjun",
    "Elif",
    "Henrik",
    "Yara",
    "Matteo",
    "Noor",
    "Bogdan",
    "Chiara",
    "Emeka",
    "Hana",
    "Joaquin",
    "Katarzyna",
    "Lars",
    "Mireille",
    "Nikolai",
    "Priya",
    "Rosalind",
    "Soren",
    "Thandiwe",
    "Ugo",
    "Valentina",
    "Wojciech",
    "Ximena",
    "Yusuf",
    "Zofia",
    "Aurelio",
    "Beatriz",
];
const SURNAMES: [&str; 40] = [
    "Achebe",
    "Lindqvist",
    "Okafor",
    "Marchetti",
    "Nakamura",
    "Szymanski",
    "Delacroix",
    "Haddad",
    "Oyelaran",
    "Castellanos",
    "Bergstrom",
    "Kowalczyk",
    "Fitzgerald",
    "Iyer",
    "Yilmaz",
    "Vasquez",
    "Thorvaldsen",
    "Mbeki",
    "Rossetti",
    "Ivanova",
    "Gallagher",
    "Moreau",
    "Adeyemi",
    "Petrovic",
    "Sandoval",
    "Horvath",
    "Quintero",
    "Eriksen",
    "Baptiste",
    "Kuznetsov",
    "Fontaine",
    "Mwangi",
    "Lombardi",
    "Novak",
    "Albrecht",
    "Obradovic",
    "Salazar",
    "Whitlock",
    "Zielinski",
    "Abernathy",
];

const TOWN_STARTS: [&str; 8] = [
    "San", "Santa", "Villa", "Porto", "Monte", "Castel", "Val", "Borgo",
];
const TOWN_HEARTS: [&str; 24] = [
    "Verde", "Rocca", "Amara", "Lucente", "Serra", "Oliva", "Bruna", "Chiara", "Dorata", "Ferro",
    "Galena", "Lago", "Mirto", "Nebbia", "Orsa", "Piana", "Quercia", "Rena", "Salvia", "Torre",
    "Ulivo", "Vento", "Zolla", "Corva",
];
const TOWN_ENDS: [&str; 6] = ["", "", "", " di Sopra", " Marina", " Alta"];

const FIRM_FORMS: [&str; 5] = [
    "{a} & {b}",
    "{a}, {b} and Partners",
    "{a} Brothers",
    "{a} & Daughters",
    "{a} {b} Holdings",
];

const INSTRUMENT_KINDS: [&str; 12] = [
    "baroque",
    "bass",
    "alto",
    "tenor",
    "electric",
    "twelve-string",
    "piccolo",
    "soprano",
    "folk",
    "chromatic",
    "fretless",
    "wooden",
];
const INSTRUMENTS: [&str; 16] = [
    "oboe",
    "clarinet",
    "cello",
    "viola",
    "mandolin",
    "harmonica",
    "bassoon",
    "flute",
    "guitar",
    "recorder",
    "zither",
    "accordion",
    "saxophone",
    "trombone",
    "banjo",
    "lute",
];

const UNIVERSITY_HEADS: [&str; 20] = [
    "Karv", "Lom", "Ester", "Wend", "Brae", "Tull", "Oster", "Hask", "Mire", "Quill", "Ren",
    "Sund", "Thale", "Vard", "Ystr", "Cold", "Dray", "Fjel", "Grym", "Hollow",
];
const UNIVERSITY_TAILS: [&str; 10] = [
    "holm", "ridge", "by", "vik", "stow", "combe", "garth", "lund", "wold", "shaw",
];

/// Sentences stating a fact (`{n}` the person, `{v}` the value).
fn sentences(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::BirthDate => &[
            "According to the parish register, {n} arrived on {v}.",
            "{n}, whose birthday falls on {v}, is the youngest of four.",
            "The midwife's notes give {v} as the day {n} was born.",
        ],
        Kind::Hometown => &[
            "{n} grew up in the hill town of {v}.",
            "Childhood summers in {v} shaped {n}, who was raised there.",
            "{n} still calls {v}, the town of a happy childhood, home.",
        ],
        Kind::Firm => &[
            "For a living, {n} keeps the accounts at {v}.",
            "Since last spring {n} has been on the payroll of {v}.",
            "{n} signed a contract with {v} and has stayed there since.",
        ],
        Kind::Instrument => &[
            "In the evenings {n} plays the {v}.",
            "{n} has practised the {v} for over a decade.",
            "At family gatherings {n} is asked to play the {v}.",
        ],
        Kind::University => &[
            "{n} took a degree at {v}.",
            "After school {n} enrolled at {v} and graduated with honours.",
            "{n} is an alumnus of {v}.",
        ],
        Kind::Spouse => &[
            "{n} is married to {v}.",
            "{n} wed {v} in a small ceremony.",
            "{n} and {v} have been husband and wife for years.",
        ],
        Kind::Marathons => &[
            "{n} has completed {v} marathons.",
            "By the latest count, {n} has finished {v} marathons.",
            "A keen runner, {n} has {v} marathons behind them.",
        ],
    }
}

/// Questions about a fact (`{n}` the person).
pub(super) fn questions(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::BirthDate => &[
            "On what day did {n} come into the world?",
            "Which date is {n}'s birthday?",
        ],
        Kind::Hometown => &["Which town did {n} grow up in?", "Where was {n} raised?"],
        Kind::Firm => &["Which firm pays {n}'s wages?", "Who is {n}'s employer?"],
        Kind::Instrument => &[
            "What instrument does {n} play?",
            "Which musical instrument is {n} known to play?",
        ],
        Kind::University => &[
            "Where did {n} get a degree?",
            "Which university did {n} attend?",
        ],
        Kind::Spouse => &["Who is {n}'s spouse?", "Whom did {n} marry?"],
        Kind::Marathons => &[
            "How many marathons has {n} run?",
            "What number of marathons has {n} finished?",
        ],
    }
}

pub(super) const ASIDES: [&str; 8] = [
    "{n} is fond of crossword puzzles.",
    "Little is known about how {n} spends weekends.",
    "{n} once missed a train and walked home through the rain.",
    "Colleagues say {n} laughs easily.",
    "{n} collects old maps.",
    "Most mornings {n} swims before breakfast.",
    "{n} dislikes loud restaurants.",
    "Every winter {n} bakes bread for the neighbours.",
];

pub(super) fn pick(xs: &[&'static str], rng: &mut ChaCha8Rng) -> &'static str {
    xs.choose(rng).copied().unwrap_or("")
}

pub(super) fn person(rng: &mut ChaCha8Rng) -> String {
    format!("{} {}", pick(&FIRST_NAMES, rng), pick(&SURNAMES, rng))
}

pub(super) fn value(kind: Kind, rng: &mut ChaCha8Rng) -> String {
    match kind {
        Kind::BirthDate => format!(
            "{} {}, {}",
            pick(&MONTHS, rng),
            rng.random_range(1..=28),
            rng.random_range(1931..=2001)
        ),
        Kind::Hometown => format!(
            "{} {}{}",
            pick(&TOWN_STARTS, rng),
            pick(&TOWN_HEARTS, rng),
            pick(&TOWN_ENDS, rng)
        ),
        Kind::Firm => pick(&FIRM_FORMS, rng)
            .replace("{a}", pick(&SURNAMES, rng))
            .replace("{b}", pick(&SURNAMES, rng)),
        Kind::Instrument => format!(
            "{} {}",
            pick(&INSTRUMENT_KINDS, rng),
            pick(&INSTRUMENTS, rng)
        ),
        Kind::University => format!(
            "the University of {}{}",
            pick(&UNIVERSITY_HEADS, rng),
            pick(&UNIVERSITY_TAILS, rng)
        ),
        Kind::Spouse => person(rng),
        Kind::Marathons => rng.random_range(2..=60).to_string(),
    }
}

pub(super) fn fill(template: &str, name: &str, value: &str) -> String {
    template.replace("{n}", name).replace("{v}", value)
}

/// `n_documents` documents of the novel stream, deterministic in `seed`;
/// every person's name is distinct, and every answer occurs in its
/// document's text.
pub fn novel_stream(seed: u64, n_documents: usize) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let capacity = FIRST_NAMES.len() * SURNAMES.len();
    let mut used = std::collections::HashSet::new();
    let mut documents = Vec::with_capacity(n_documents);
    while documents.len() < n_documents.min(capacity / 2) {
        let name = person(&mut rng);
        if !used.insert(name.clone()) {
            continue;
        }
        let mut kinds = KINDS.to_vec();
        kinds.shuffle(&mut rng);
        documents.push(introduce(name, &kinds[..3], &mut rng).0);
    }
    Dataset { documents }
}

/// A document introducing `name` with one fact of each of `kinds` (and up
/// to two asides); with it, each fact's value.
pub(super) fn introduce(
    name: String,
    kinds: &[Kind],
    rng: &mut ChaCha8Rng,
) -> (Document, Vec<String>) {
    let mut lines = Vec::new();
    let mut qas = Vec::new();
    let mut values = Vec::new();
    for &kind in kinds {
        let v = value(kind, rng);
        lines.push(fill(pick(sentences(kind), rng), &name, &v));
        qas.push(QaPair {
            question: fill(pick(questions(kind), rng), &name, ""),
            answers: vec![v.clone()],
            stale: Vec::new(),
        });
        values.push(v);
    }
    let n_asides = rng.random_range(0..=2);
    for aside in ASIDES.choose_multiple(rng, n_asides) {
        let at = rng.random_range(0..=lines.len());
        lines.insert(at, fill(aside, &name, ""));
    }
    let document = Document {
        id: name,
        text: lines.join(" "),
        qas,
    };
    (document, values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::{FactStream, FactStreamConfig};

    #[test]
    fn deterministic_distinct_and_answerable() {
        let a = novel_stream(7, 200);
        assert_eq!(a, novel_stream(7, 200));
        assert_ne!(a, novel_stream(8, 200));
        assert_eq!(a.documents.len(), 200);
        let names: std::collections::HashSet<_> = a.documents.iter().map(|d| &d.id).collect();
        assert_eq!(names.len(), 200);
        for d in &a.documents {
            assert_eq!(d.qas.len(), 3);
            for qa in &d.qas {
                assert!(
                    d.text.contains(&qa.answers[0]),
                    "{}: {}",
                    d.text,
                    qa.answers[0]
                );
                assert!(qa.question.contains(&d.id));
            }
        }
    }

    #[test]
    fn shares_no_names_and_no_answer_values_with_the_training_stream() {
        let novel = novel_stream(7, 200);
        let train = FactStream::generate(&FactStreamConfig::open()).train;
        let values: std::collections::HashSet<String> = train
            .documents
            .iter()
            .flat_map(|d| d.qas.iter().map(|q| q.answers[0].clone()))
            .collect();
        let train_names: std::collections::HashSet<&str> =
            train.documents.iter().map(|d| d.id.as_str()).collect();
        for d in &novel.documents {
            assert!(!train_names.contains(d.id.as_str()), "{}", d.id);
            for qa in &d.qas {
                // Marathon counts are small numbers, which the training
                // stream's patent counts may share; every other value is
                // built differently.
                if qa.answers[0].parse::<u32>().is_err() {
                    assert!(!values.contains(&qa.answers[0]), "{}", qa.answers[0]);
                }
            }
        }
    }
}

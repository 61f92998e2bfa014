//! A seeded stream of facts about fictional entities — the embedded default
//! dataset.
//!
//! Each entity (a made-up person) has attributes — birth date, birth city,
//! employer, field and award, and with open values also a number of patents
//! and a home address. A document states some of the entity's facts, in
//! random order, each with one of at least five sentence templates, between
//! sentences that state nothing asked about; each stated fact gets a
//! question from its own set of at least three paraphrases. Splits are **by
//! entity** (no name is shared), and the last document template and the
//! last question template of every attribute are held out of training, so
//! validation and test measure generalisation to unseen phrasings as well as
//! unseen entities.
//!
//! Where the answer values come from is [`ValueVocabulary`]: small closed
//! pools shared by every split, or open vocabularies whose values are rare
//! and belong to one split each, so that only the memory can supply a test
//! answer.

mod broad;
mod changes;
mod closed;
mod novel;
mod open;
mod templates;
mod updates;

use std::collections::HashSet;

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{Dataset, Document, QaPair};
pub use changes::{training_updates, validation_updates};
pub use novel::novel_stream;
use open::Split;
use templates::{document_templates, question_templates, FILLER};
pub use updates::update_stream;

/// Where a fact stream's answer values come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueVocabulary {
    /// Small pools (32 cities, 32 employers, 24 fields, 24 awards) shared by
    /// every split, five attributes: a model can answer from values it
    /// memorised in training. Configurations written before open values
    /// existed mean this.
    #[default]
    Closed,
    /// Thousands of generated values per attribute, seven attributes; each
    /// value belongs to one split (by a stable hash), so validation and test
    /// answers never occur in training.
    Open,
    /// Open values of fourteen attributes: the seven open ones and seven
    /// more (second persons' names, book titles, heights with units, dates
    /// in five forms, languages, pets' names, cars), none a kind the novel
    /// stream asks about.
    Broad,
}

/// Size and seed of a generated fact stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FactStreamConfig {
    /// Seed of the generator: the same seed gives the same stream.
    pub seed: u64,
    /// Entities (documents) in the training split.
    pub n_train: usize,
    /// Entities in the validation split.
    pub n_validation: usize,
    /// Entities in the test split.
    pub n_test: usize,
    /// Facts stated per document (1..=5 closed, 1..=7 open).
    pub facts_per_document: usize,
    /// Where answer values come from.
    #[serde(default)]
    pub values: ValueVocabulary,
    /// Most sentences per document that state nothing asked about (each
    /// document gets between 0 and this many, so lengths vary).
    #[serde(default)]
    pub filler_sentences: usize,
}

impl Default for FactStreamConfig {
    /// 4000 training entities, closed value pools, three facts per document.
    fn default() -> Self {
        Self {
            seed: 2024,
            n_train: 4000,
            n_validation: 64,
            n_test: 200,
            facts_per_document: 3,
            values: ValueVocabulary::Closed,
            filler_sentences: 0,
        }
    }
}

impl FactStreamConfig {
    /// The default sizes with open values (test answers never seen in
    /// training) and up to three filler sentences per document.
    pub fn open() -> Self {
        Self {
            values: ValueVocabulary::Open,
            filler_sentences: 3,
            ..Self::default()
        }
    }

    /// [`Self::open`] with the broad stream's fourteen attributes, four
    /// facts and up to four filler sentences per document (lengths vary
    /// more).
    pub fn broad() -> Self {
        Self {
            values: ValueVocabulary::Broad,
            facts_per_document: 4,
            filler_sentences: 4,
            ..Self::default()
        }
    }
}

/// The three splits of a generated stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FactStream {
    /// Training documents (seen templates only).
    pub train: Dataset,
    /// Validation documents (all templates).
    pub validation: Dataset,
    /// Test documents (all templates): the stream evaluated online.
    pub test: Dataset,
}

/// The attributes an entity has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Attribute {
    BirthDate,
    BirthCity,
    Employer,
    Field,
    Award,
    Patents,
    Address,
    Mentor,
    Book,
    Height,
    StartDate,
    Language,
    Pet,
    Vehicle,
}

/// Every attribute, in the order the streams take them: the closed stream
/// the first five, the open stream the first seven, the broad stream all.
const ATTRIBUTES: [Attribute; 14] = [
    Attribute::BirthDate,
    Attribute::BirthCity,
    Attribute::Employer,
    Attribute::Field,
    Attribute::Award,
    Attribute::Patents,
    Attribute::Address,
    Attribute::Mentor,
    Attribute::Book,
    Attribute::Height,
    Attribute::StartDate,
    Attribute::Language,
    Attribute::Pet,
    Attribute::Vehicle,
];

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

const NAME_ONSETS: [&str; 24] = [
    "Ka", "Vel", "Mor", "Tha", "Zen", "Ori", "Bel", "Qua", "Ris", "Dov", "Fen", "Lur", "Sab",
    "Tor", "Yel", "Nim", "Pra", "Gal", "Hes", "Ul", "Cor", "Ivo", "Mar", "Eda",
];
const NAME_CODAS: [&str; 16] = [
    "ra", "vin", "dor", "lia", "mus", "nex", "ta", "rion", "sa", "ko", "wen", "lis", "dra", "mir",
    "tov", "ena",
];
const SURNAME_PARTS: [&str; 20] = [
    "Quell", "Varn", "Osk", "Thrim", "Brask", "Dellow", "Fairn", "Gorv", "Hald", "Istr", "Jorv",
    "Kess", "Lamb", "Mordr", "Nyst", "Prell", "Rusk", "Sorv", "Tamm", "Wexl",
];
const SURNAME_ENDS: [&str; 10] = [
    "ington", "ova", "sen", "ard", "ic", "ley", "mann", "ez", "holt", "ar",
];

fn name(rng: &mut ChaCha8Rng) -> String {
    let pick = |xs: &[&'static str], rng: &mut ChaCha8Rng| xs.choose(rng).copied().unwrap_or("");
    format!(
        "{}{} {}{}",
        pick(&NAME_ONSETS, rng),
        pick(&NAME_CODAS, rng),
        pick(&SURNAME_PARTS, rng),
        pick(&SURNAME_ENDS, rng)
    )
}

fn fill(template: &str, name: &str, value: &str) -> String {
    let s = template.replace("{n}", name).replace("{v}", value);
    // A sentence that opens with the value starts with a capital letter.
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().collect::<String>() + chars.as_str(),
        None => s,
    }
}

/// Whether template `i` of a list of `len` may be used in a split.
fn allowed(i: usize, len: usize, held_out_too: bool) -> bool {
    held_out_too || i + 1 < len
}

fn pick_template(
    list: &'static [&'static str],
    held_out_too: bool,
    rng: &mut ChaCha8Rng,
) -> &'static str {
    let usable: Vec<&'static str> = list
        .iter()
        .enumerate()
        .filter(|(i, _)| allowed(*i, list.len(), held_out_too))
        .map(|(_, t)| *t)
        .collect();
    usable.choose(rng).copied().unwrap_or(list[0])
}

/// How one split's documents are made.
struct SplitRules<'a> {
    config: &'a FactStreamConfig,
    /// The split the documents are for.
    split: Split,
}

impl SplitRules<'_> {
    /// Whether held-out templates may be used: everywhere but in training.
    fn held_out_too(&self) -> bool {
        self.split != Split::Train
    }

    fn attributes(&self) -> &'static [Attribute] {
        attributes_of(self.config.values)
    }

    fn value(&self, a: Attribute, rng: &mut ChaCha8Rng) -> String {
        match self.config.values {
            ValueVocabulary::Closed => closed::value(a, rng),
            ValueVocabulary::Open | ValueVocabulary::Broad => open::value(a, self.split, rng),
        }
    }

    fn document(&self, name: &str, rng: &mut ChaCha8Rng) -> Document {
        self.stated(name, rng).0
    }

    /// A document about `name` and the attributes its questions ask, in
    /// the order of its questions.
    fn stated(&self, name: &str, rng: &mut ChaCha8Rng) -> (Document, Vec<Attribute>) {
        let mut attributes = self.attributes().to_vec();
        attributes.shuffle(rng);
        attributes.truncate(self.config.facts_per_document.clamp(1, attributes.len()));
        let mut sentences = Vec::new();
        let mut qas = Vec::new();
        for &a in &attributes {
            let v = self.value(a, rng);
            sentences.push(fill(
                pick_template(document_templates(a), self.held_out_too(), rng),
                name,
                &v,
            ));
            let q = fill(
                pick_template(question_templates(a), self.held_out_too(), rng),
                name,
                "",
            );
            // Awards are stated with their article; the answer span keeps it and
            // the SQuAD normalisation ignores it.
            qas.push(QaPair {
                question: q,
                answers: vec![v],
                stale: Vec::new(),
            });
        }
        if self.config.filler_sentences > 0 {
            let fillers = rng.random_range(0..=self.config.filler_sentences);
            for filler in FILLER.choose_multiple(rng, fillers) {
                let at = rng.random_range(0..=sentences.len());
                sentences.insert(at, fill(filler, name, ""));
            }
        }
        let document = Document {
            id: name.to_string(),
            text: sentences.join(" "),
            qas,
        };
        (document, attributes)
    }
}

impl FactStream {
    /// Generates the three splits. Deterministic in `config.seed`; entity
    /// names are unique across all splits, and with open values so are the
    /// answer values.
    pub fn generate(config: &FactStreamConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let total = config.n_train + config.n_validation + config.n_test;
        let capacity =
            NAME_ONSETS.len() * NAME_CODAS.len() * SURNAME_PARTS.len() * SURNAME_ENDS.len();
        let total = total.min(capacity / 2);
        let mut seen = HashSet::new();
        let mut names = Vec::with_capacity(total);
        while names.len() < total {
            let n = name(&mut rng);
            if seen.insert(n.clone()) {
                names.push(n);
            }
        }
        let make = |names: &[String], split: Split, rng: &mut ChaCha8Rng| {
            let rules = SplitRules { config, split };
            Dataset {
                documents: names.iter().map(|n| rules.document(n, rng)).collect(),
            }
        };
        let (train_names, rest) = names.split_at(config.n_train.min(names.len()));
        let (val_names, test_names) = rest.split_at(config.n_validation.min(rest.len()));
        let train = make(train_names, Split::Train, &mut rng);
        let validation = make(val_names, Split::Validation, &mut rng);
        let test = make(test_names, Split::Test, &mut rng);
        Self {
            train,
            validation,
            test,
        }
    }
}

/// The names of every entity in `config`'s stream.
fn stream_names(config: &FactStreamConfig) -> HashSet<String> {
    let stream = FactStream::generate(config);
    [stream.train, stream.validation, stream.test]
        .into_iter()
        .flat_map(|d| d.documents.into_iter().map(|d| d.id))
        .collect()
}

/// A name not in `used`, added to it (`None` after many tries: the names
/// are spent).
fn fresh_name(used: &mut HashSet<String>, rng: &mut ChaCha8Rng) -> Option<String> {
    (0..10_000)
        .map(|_| name(rng))
        .find(|n| used.insert(n.clone()))
}

/// Up to `n` documents made as the training split's are (its templates
/// and values) about entities `config`'s stream never names: unrelated
/// documents to fill a bank with, beyond the stream's own.
pub fn unrelated_documents(config: &FactStreamConfig, n: usize) -> Dataset {
    if n == 0 {
        // Every evaluation of a generated stream asks; most need none.
        return Dataset::default();
    }
    let mut used = stream_names(config);
    let rules = SplitRules {
        config,
        split: Split::Train,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x0075_e1a7);
    let mut documents = Vec::with_capacity(n);
    while documents.len() < n {
        let Some(name) = fresh_name(&mut used, &mut rng) else {
            break;
        };
        documents.push(rules.document(&name, &mut rng));
    }
    Dataset { documents }
}

/// The attributes a stream with `values` states.
fn attributes_of(values: ValueVocabulary) -> &'static [Attribute] {
    match values {
        ValueVocabulary::Closed => &ATTRIBUTES[..5],
        ValueVocabulary::Open => &ATTRIBUTES[..7],
        ValueVocabulary::Broad => &ATTRIBUTES,
    }
}

/// The held-out document and question templates of a stream with
/// `values`, for tests and reports.
pub fn held_out_templates(values: ValueVocabulary) -> Vec<&'static str> {
    attributes_of(values)
        .iter()
        .flat_map(|&a| {
            let d = document_templates(a);
            let q = question_templates(a);
            [d[d.len() - 1], q[q.len() - 1]]
        })
        .collect()
}

/// Checks that `text` could have come from `template` (used by tests).
pub fn matches_template(template: &str, text: &str) -> bool {
    let fixed: Vec<&str> = template
        .split(['{', '}'])
        .enumerate()
        .filter(|(i, _)| i % 2 == 0)
        .map(|(_, s)| s)
        .filter(|s| s.len() > 3)
        .collect();
    !fixed.is_empty() && fixed.iter().all(|f| text.contains(f))
}

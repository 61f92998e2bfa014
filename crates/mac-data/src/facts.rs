//! A seeded stream of facts about fictional entities — the embedded default
//! dataset.
//!
//! Each entity (a made-up person) has five attributes: birth date, birth
//! city, employer, field and award, with values drawn from pools of invented
//! names the base LM cannot know. A document states some of the entity's
//! facts, in random order, each with one of at least five sentence
//! templates; each stated fact gets a question from its own set of at least
//! three paraphrases. Splits are **by entity** (no name is shared), and the
//! last document template and the last question template of every attribute
//! are held out of training, so validation and test measure generalisation
//! to unseen phrasings as well as unseen entities.

use std::collections::HashSet;

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{Dataset, Document, QaPair};

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
    /// Facts stated per document (1..=5).
    pub facts_per_document: usize,
}

impl Default for FactStreamConfig {
    fn default() -> Self {
        Self {
            seed: 2024,
            n_train: 4000,
            n_validation: 64,
            n_test: 200,
            facts_per_document: 3,
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
}

const ATTRIBUTES: [Attribute; 5] = [
    Attribute::BirthDate,
    Attribute::BirthCity,
    Attribute::Employer,
    Attribute::Field,
    Attribute::Award,
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

const CITIES: [&str; 32] = [
    "Port Vessa",
    "Oldmarsh",
    "Kelvanor",
    "Brightwater Falls",
    "Ustrava",
    "Dunmere",
    "Saltcombe Reach",
    "Velgrad",
    "Thornby",
    "Ameris",
    "Cold Harbor Vale",
    "Ninevah Cross",
    "Lowenfell",
    "Pyrrhos",
    "Quarry Hill",
    "Estmoor",
    "Galdova",
    "Hollin Bay",
    "Ironwick",
    "Jessamine",
    "Korrath",
    "Larkspur Ford",
    "Maravel",
    "Northgale",
    "Orlent",
    "Pellucid",
    "Redmantle",
    "Sunhollow",
    "Tessaly Point",
    "Umberlin",
    "Wyncrest",
    "Zarnow",
];
const EMPLOYERS: [&str; 32] = [
    "Orvane Dynamics",
    "Helix Meridian",
    "Castellan Works",
    "Bluefen Analytics",
    "Quillstone Press",
    "Nordavik Shipping",
    "Tamberlane Foods",
    "Virell Instruments",
    "Ashgrove Energy",
    "Kestrel Biotics",
    "Lumenfold Labs",
    "Marrow & Pike",
    "Obsidian Loom",
    "Pellmark Insurance",
    "Rothwyn Aerospace",
    "Sablecrest Bank",
    "Tidewell Pharma",
    "Umbra Textiles",
    "Vantor Rail",
    "Wexford Orchards",
    "Yarrowby Studios",
    "Zephyrine Optics",
    "Brindle Robotics",
    "Cinderhall Mining",
    "Dovecote Media",
    "Elmsworth Hospital",
    "Fernhollow Bakery",
    "Gildenreach Archive",
    "Hawthorne Glassworks",
    "Ivel Telecom",
    "Juniper Freight",
    "Kilnmoor Ceramics",
];
const FIELDS: [&str; 24] = [
    "marine biology",
    "astrophysics",
    "medieval history",
    "soil chemistry",
    "linguistics",
    "glaciology",
    "cryptography",
    "economics",
    "volcanology",
    "botany",
    "acoustics",
    "epidemiology",
    "architecture",
    "mycology",
    "seismology",
    "ornithology",
    "robotics",
    "paleontology",
    "oceanography",
    "topology",
    "metallurgy",
    "hydrology",
    "entomology",
    "optics",
];
const AWARDS: [&str; 24] = [
    "the Halvorsen Medal",
    "the Quartz Laurel",
    "the Ember Prize",
    "the Morrow Fellowship",
    "the Silver Compass",
    "the Verity Award",
    "the Aldane Cup",
    "the Northern Star Citation",
    "the Brannock Prize",
    "the Cobalt Ribbon",
    "the Delacroix Grant",
    "the Evergreen Medal",
    "the Falconer Award",
    "the Granite Crown",
    "the Hollis Prize",
    "the Iris Medallion",
    "the Juno Honor",
    "the Kepler Scroll",
    "the Lantern Prize",
    "the Meridian Award",
    "the Nightingale Cup",
    "the Obelisk Medal",
    "the Pemberton Prize",
    "the Quill of Ardent",
];

/// Document sentence templates per attribute (`{n}` name, `{v}` value). The
/// last one of each list is held out of training.
fn document_templates(a: Attribute) -> &'static [&'static str] {
    match a {
        Attribute::BirthDate => &[
            "{n} was born on {v}.",
            "{n}'s date of birth is {v}.",
            "Born on {v}, {n} grew up quickly.",
            "Records show that {n} came into the world on {v}.",
            "{n} celebrates a birthday each year, having been born on {v}.",
            "The birth of {n} took place on {v}.",
        ],
        Attribute::BirthCity => &[
            "{n} was born in {v}.",
            "{n}'s birthplace is {v}.",
            "{n} is a native of {v}.",
            "The city of {v} is where {n} was born.",
            "{n} spent early childhood in {v}, the city of their birth.",
            "Before anything else, {n} was a child of {v}.",
        ],
        Attribute::Employer => &[
            "{n} works for {v}.",
            "{n} is employed by {v}.",
            "{v} employs {n}.",
            "These days {n} has a job at {v}.",
            "{n} draws a salary from {v}.",
            "Colleagues at {v} know {n} well.",
        ],
        Attribute::Field => &[
            "{n} specializes in {v}.",
            "{n}'s field of study is {v}.",
            "{n} is a researcher in {v}.",
            "Most of {n}'s work concerns {v}.",
            "{n} has devoted a career to {v}.",
            "The discipline {n} practices is {v}.",
        ],
        Attribute::Award => &[
            "{n} received {v}.",
            "{n} was awarded {v}.",
            "{n} won {v}.",
            "In recognition of their work, {n} was given {v}.",
            "Among {n}'s honors is {v}.",
            "It was {n} who received {v}.",
        ],
    }
}

/// Question templates per attribute; the last one is held out of training.
fn question_templates(a: Attribute) -> &'static [&'static str] {
    match a {
        Attribute::BirthDate => &[
            "When was {n} born?",
            "What is the birth date of {n}?",
            "On what date was {n} born?",
            "What is {n}'s date of birth?",
        ],
        Attribute::BirthCity => &[
            "Where was {n} born?",
            "In which city was {n} born?",
            "What is the birthplace of {n}?",
            "Which city is {n} a native of?",
        ],
        Attribute::Employer => &[
            "Who does {n} work for?",
            "Which company employs {n}?",
            "Who is {n}'s employer?",
            "Where does {n} have a job?",
        ],
        Attribute::Field => &[
            "What field does {n} specialize in?",
            "What is {n}'s field of study?",
            "What does {n} research?",
            "Which discipline does {n} work in?",
        ],
        Attribute::Award => &[
            "What award did {n} receive?",
            "Which prize was {n} awarded?",
            "What honor did {n} win?",
            "What was {n} given in recognition of their work?",
        ],
    }
}

fn value(a: Attribute, rng: &mut ChaCha8Rng) -> String {
    match a {
        Attribute::BirthDate => {
            let month = MONTHS.choose(rng).copied().unwrap_or("May");
            format!(
                "{} {} {}",
                rng.random_range(1..=28),
                month,
                rng.random_range(1921..=2004)
            )
        }
        Attribute::BirthCity => CITIES.choose(rng).copied().unwrap_or_default().to_string(),
        Attribute::Employer => EMPLOYERS
            .choose(rng)
            .copied()
            .unwrap_or_default()
            .to_string(),
        Attribute::Field => FIELDS.choose(rng).copied().unwrap_or_default().to_string(),
        Attribute::Award => AWARDS.choose(rng).copied().unwrap_or_default().to_string(),
    }
}

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

fn entity_document(
    name: &str,
    facts_per_document: usize,
    held_out_too: bool,
    rng: &mut ChaCha8Rng,
) -> Document {
    let mut attributes = ATTRIBUTES.to_vec();
    attributes.shuffle(rng);
    attributes.truncate(facts_per_document.clamp(1, ATTRIBUTES.len()));
    let mut sentences = Vec::new();
    let mut qas = Vec::new();
    for a in attributes {
        let v = value(a, rng);
        sentences.push(fill(
            pick_template(document_templates(a), held_out_too, rng),
            name,
            &v,
        ));
        let q = fill(
            pick_template(question_templates(a), held_out_too, rng),
            name,
            "",
        );
        // Awards are stated with their article; the answer span keeps it and
        // the SQuAD normalisation ignores it.
        qas.push(QaPair {
            question: q,
            answers: vec![v],
        });
    }
    Document {
        id: name.to_string(),
        text: sentences.join(" "),
        qas,
    }
}

impl FactStream {
    /// Generates the three splits. Deterministic in `config.seed`; entity
    /// names are unique across all splits.
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
        let make = |names: &[String], held_out_too: bool, rng: &mut ChaCha8Rng| Dataset {
            documents: names
                .iter()
                .map(|n| entity_document(n, config.facts_per_document, held_out_too, rng))
                .collect(),
        };
        let (train_names, rest) = names.split_at(config.n_train.min(names.len()));
        let (val_names, test_names) = rest.split_at(config.n_validation.min(rest.len()));
        let train = make(train_names, false, &mut rng);
        let validation = make(val_names, true, &mut rng);
        let test = make(test_names, true, &mut rng);
        Self {
            train,
            validation,
            test,
        }
    }
}

/// The held-out document and question templates, for tests and reports.
pub fn held_out_templates() -> Vec<&'static str> {
    ATTRIBUTES
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

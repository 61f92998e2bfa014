//! Values of the broad stream's further attributes: second persons'
//! names, multi-word titles, numbers with units, dates in several forms,
//! languages, pets' names and cars — answers of 1 to about 12 tokens, so
//! that a memory trained on them learns what an answer looks like rather
//! than where seven kinds of values sit. None of them is a kind the novel
//! stream asks about.

use rand::seq::IndexedRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{name, Attribute, MONTHS};

/// A value of one of the broad attributes (`None` for the others).
pub(super) fn draw(a: Attribute, rng: &mut ChaCha8Rng) -> Option<String> {
    let pick = |xs: &[&'static str], rng: &mut ChaCha8Rng| xs.choose(rng).copied().unwrap_or("");
    Some(match a {
        Attribute::Mentor => name(rng),
        Attribute::Book => book(rng),
        Attribute::Height => match rng.random_bool(0.5) {
            true => format!("1.{} metres", rng.random_range(50..=99)),
            false => format!("{} centimetres", rng.random_range(150..=199)),
        },
        Attribute::StartDate => date(rng),
        Attribute::Language => match rng.random_bool(0.7) {
            true => pick(&LANGUAGES, rng).to_string(),
            false => format!("{} and {}", pick(&LANGUAGES, rng), pick(&LANGUAGES, rng)),
        },
        Attribute::Pet => format!("{}{}", pick(&PET_ONSETS, rng), pick(&PET_CODAS, rng)),
        Attribute::Vehicle => format!(
            "{} {}{} {}",
            pick(&COLOURS, rng),
            pick(&CAR_ONSETS, rng),
            pick(&CAR_CODAS, rng),
            pick(&CAR_MODELS, rng)
        ),
        _ => return None,
    })
}

/// A book title of two to seven words.
fn book(rng: &mut ChaCha8Rng) -> String {
    let pick = |xs: &[&'static str], rng: &mut ChaCha8Rng| xs.choose(rng).copied().unwrap_or("");
    let (a, n, m) = (pick(&ADJECTIVES, rng), pick(&NOUNS, rng), pick(&NOUNS, rng));
    match rng.random_range(0..5) {
        0 => format!("The {a} {n}"),
        1 => format!("The {n} of {m}"),
        2 => format!("A {n} for the {a} {m}"),
        3 => format!("The {n} at the End of the {m}"),
        _ => format!("{a} {n}s"),
    }
}

/// A date from 2005 on (after every birth date, so that no value is
/// shared with one) in one of five forms: `7 March 2008`, `March 7, 2008`,
/// `the 7th of March 2008`, `2008-03-07` or `7/3/2008`.
fn date(rng: &mut ChaCha8Rng) -> String {
    let (d, m, y) = (
        rng.random_range(1..=28),
        rng.random_range(0..12),
        rng.random_range(2005..=2024),
    );
    let month = MONTHS[m];
    match rng.random_range(0..5) {
        0 => format!("{d} {month} {y}"),
        1 => format!("{month} {d}, {y}"),
        2 => format!("the {d}{} of {month} {y}", ordinal(d)),
        3 => format!("{y}-{:02}-{d:02}", m + 1),
        _ => format!("{d}/{}/{y}", m + 1),
    }
}

fn ordinal(d: usize) -> &'static str {
    match (d % 10, d % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    }
}

const LANGUAGES: [&str; 24] = [
    "Portuguese",
    "Old Norse",
    "Cantonese",
    "Dutch",
    "Basque",
    "Welsh",
    "Finnish",
    "Tagalog",
    "Swahili",
    "Icelandic",
    "Catalan",
    "Hungarian",
    "Gaelic",
    "Latvian",
    "Yoruba",
    "Amharic",
    "Maltese",
    "Breton",
    "Estonian",
    "Frisian",
    "Romansh",
    "Quechua",
    "Sardinian",
    "Occitan",
];
const PET_ONSETS: [&str; 16] = [
    "Bis", "Mop", "Pip", "Tuf", "Wig", "Zub", "Nib", "Lom", "Fud", "Gri", "Hob", "Jin", "Kip",
    "Mur", "Pud", "Sno",
];
const PET_CODAS: [&str; 10] = [
    "kit", "sy", "ble", "do", "wick", "let", "bo", "zle", "ty", "ker",
];
const COLOURS: [&str; 8] = [
    "silver",
    "red",
    "dark blue",
    "white",
    "black",
    "green",
    "pale yellow",
    "grey",
];
const CAR_ONSETS: [&str; 12] = [
    "Kor", "Vel", "Ast", "Mir", "Sab", "Tel", "Ori", "Zan", "Bre", "Cal", "Dun", "Fer",
];
const CAR_CODAS: [&str; 8] = ["vex", "ano", "ica", "eon", "ara", "ix", "ello", "ar"];
const CAR_MODELS: [&str; 12] = [
    "Mistral",
    "Estate 300",
    "Coupe",
    "Tourer",
    "GT 2.0",
    "Rover",
    "Sprint",
    "Cabrio",
    "Hatch",
    "Saloon",
    "Van",
    "Roadster",
];
const ADJECTIVES: [&str; 20] = [
    "Silent",
    "Crimson",
    "Hollow",
    "Distant",
    "Gentle",
    "Broken",
    "Golden",
    "Restless",
    "Hidden",
    "Patient",
    "Northern",
    "Lonely",
    "Burning",
    "Quiet",
    "Wandering",
    "Bitter",
    "Luminous",
    "Forgotten",
    "Salt",
    "Iron",
];
const NOUNS: [&str; 24] = [
    "Harbour", "Orchard", "Lantern", "River", "Garden", "Winter", "Mirror", "Bridge", "Tide",
    "Mountain", "Island", "Tower", "Forest", "Letter", "Clock", "Meadow", "Station", "Kingdom",
    "Shadow", "Feather", "Compass", "Valley", "Window", "Storm",
];

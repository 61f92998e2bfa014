//! Open value vocabularies: values composed from parts (made-up town,
//! company and prize names, real disciplines with qualifiers, dates,
//! numbers, street addresses), thousands per attribute, so each value is
//! rare in training; and every value belongs to exactly one split, decided
//! by a stable hash, so validation and test answers never occur in training.
//! A model can only answer them by reading its memory.

use rand::seq::IndexedRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{Attribute, MONTHS};

/// The split a value may appear in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Split {
    Train,
    Validation,
    Test,
}

/// The split `value` of attribute `a` belongs to: 80% of the values train,
/// 10% validation, 10% test, by a hash that does not depend on the seed.
pub(super) fn split_of(a: Attribute, value: &str) -> Split {
    // FNV-1a, 64 bits: stable across platforms and Rust versions.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("{a:?}:{value}").bytes() {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    match h % 10 {
        8 => Split::Validation,
        9 => Split::Test,
        _ => Split::Train,
    }
}

/// A value of attribute `a` that belongs to `split`.
pub(super) fn value(a: Attribute, split: Split, rng: &mut ChaCha8Rng) -> String {
    loop {
        let v = draw(a, rng);
        if split_of(a, &v) == split {
            return v;
        }
    }
}

/// A value of attribute `a`, whatever its split.
pub(super) fn draw(a: Attribute, rng: &mut ChaCha8Rng) -> String {
    let pick = |xs: &[&'static str], rng: &mut ChaCha8Rng| xs.choose(rng).copied().unwrap_or("");
    match a {
        Attribute::BirthDate => format!(
            "{} {} {}",
            rng.random_range(1..=28),
            pick(&MONTHS, rng),
            rng.random_range(1921..=2004)
        ),
        Attribute::BirthCity => {
            let town = format!("{}{}", pick(&TOWN_HEADS, rng), pick(&TOWN_TAILS, rng));
            if rng.random_bool(0.25) {
                format!("{} {town}", pick(&TOWN_PREFIXES, rng))
            } else {
                town
            }
        }
        Attribute::Employer => format!(
            "{}{} {}",
            pick(&BRAND_ONSETS, rng),
            pick(&BRAND_CODAS, rng),
            pick(&COMPANY_KINDS, rng)
        ),
        Attribute::Field => format!(
            "{} {}",
            pick(&FIELD_QUALIFIERS, rng),
            pick(&DISCIPLINES, rng)
        ),
        Attribute::Award => format!(
            "the {}{} {}",
            pick(&PRIZE_ONSETS, rng),
            pick(&PRIZE_CODAS, rng),
            pick(&PRIZE_KINDS, rng)
        ),
        Attribute::Patents => rng.random_range(2..=999).to_string(),
        Attribute::Address => format!(
            "{} {}{} {}",
            rng.random_range(1..=199),
            pick(&STREET_HEADS, rng),
            pick(&STREET_TAILS, rng),
            pick(&STREET_KINDS, rng)
        ),
        broad => super::broad::draw(broad, rng).unwrap_or_default(),
    }
}

const TOWN_HEADS: [&str; 40] = [
    "Ash", "Bram", "Cald", "Dun", "Elm", "Fal", "Glen", "Har", "Ing", "Kil", "Lang", "Mel", "Nor",
    "Oak", "Pen", "Quen", "Ros", "Sel", "Tarn", "Ulv", "Ven", "Wick", "Yarl", "Zell", "Brock",
    "Carr", "Drum", "Fenn", "Gwyn", "Hale", "Kirk", "Lind", "Mar", "Nant", "Orm", "Pol", "Rav",
    "Stan", "Thorn", "Wold",
];
const TOWN_TAILS: [&str; 24] = [
    "bury", "ford", "haven", "mouth", "wick", "stead", "ton", "field", "more", "dale", "gate",
    "holm", "port", "by", "cliff", "brook", "mere", "worth", "ley", "thorpe", "caster", "minster",
    "well", "ness",
];
const TOWN_PREFIXES: [&str; 6] = ["Port", "New", "Upper", "East", "Old", "North"];

const BRAND_ONSETS: [&str; 30] = [
    "Zan", "Quor", "Vel", "Tris", "Om", "Kal", "Bry", "Cor", "Dra", "Ex", "Fal", "Gry", "Hel",
    "Ix", "Jun", "Lum", "Myr", "Nov", "Oph", "Pax", "Rho", "Syl", "Tor", "Ul", "Vex", "Wyn", "Xan",
    "Yor", "Zep", "Ard",
];
const BRAND_CODAS: [&str; 20] = [
    "ix", "ara", "eon", "ova", "ent", "ium", "ora", "yx", "ane", "oth", "ella", "ico", "umb", "is",
    "ador", "eria", "ont", "ex", "ana", "ulo",
];
const COMPANY_KINDS: [&str; 26] = [
    "Dynamics",
    "Analytics",
    "Works",
    "Labs",
    "Shipping",
    "Foods",
    "Instruments",
    "Energy",
    "Biotics",
    "Press",
    "Insurance",
    "Aerospace",
    "Bank",
    "Pharma",
    "Textiles",
    "Rail",
    "Studios",
    "Optics",
    "Robotics",
    "Mining",
    "Media",
    "Telecom",
    "Freight",
    "Ceramics",
    "Systems",
    "Logistics",
];

const FIELD_QUALIFIERS: [&str; 30] = [
    "applied",
    "coastal",
    "theoretical",
    "computational",
    "medieval",
    "urban",
    "arctic",
    "comparative",
    "experimental",
    "industrial",
    "tropical",
    "marine",
    "agricultural",
    "historical",
    "quantum",
    "molecular",
    "forensic",
    "environmental",
    "clinical",
    "statistical",
    "structural",
    "planetary",
    "rural",
    "maritime",
    "desert",
    "alpine",
    "evolutionary",
    "cognitive",
    "cultural",
    "nuclear",
];
const DISCIPLINES: [&str; 40] = [
    "botany",
    "linguistics",
    "geology",
    "acoustics",
    "economics",
    "mycology",
    "hydrology",
    "optics",
    "entomology",
    "ecology",
    "cartography",
    "metallurgy",
    "ornithology",
    "seismology",
    "archaeology",
    "glaciology",
    "cryptography",
    "epidemiology",
    "robotics",
    "topology",
    "astronomy",
    "zoology",
    "chemistry",
    "sociology",
    "philosophy",
    "musicology",
    "agronomy",
    "virology",
    "genetics",
    "geography",
    "demography",
    "ethics",
    "logistics",
    "toxicology",
    "petrology",
    "limnology",
    "forestry",
    "oceanography",
    "volcanology",
    "paleontology",
];

const PRIZE_ONSETS: [&str; 24] = [
    "Hal", "Brenn", "Cass", "Dal", "Ember", "Finch", "Grims", "Hart", "Ister", "Jess", "Kern",
    "Lowe", "Mont", "Nestor", "Oster", "Pell", "Quint", "Ross", "Strat", "Tenn", "Ursel", "Vance",
    "Whit", "York",
];
const PRIZE_CODAS: [&str; 16] = [
    "by", "ford", "wood", "ley", "ham", "well", "ton", "ridge", "ward", "more", "dale", "son",
    "field", "wick", "croft", "shaw",
];
const PRIZE_KINDS: [&str; 12] = [
    "Prize",
    "Medal",
    "Award",
    "Fellowship",
    "Cup",
    "Laurel",
    "Citation",
    "Grant",
    "Ribbon",
    "Medallion",
    "Honor",
    "Scroll",
];

const STREET_HEADS: [&str; 30] = [
    "Kess", "Birch", "Cole", "Dray", "Ember", "Flint", "Gorse", "Heath", "Ivy", "Juniper", "Kings",
    "Larch", "Mill", "Nettle", "Orchard", "Pike", "Quarry", "Rook", "Sorrel", "Tanner", "Upton",
    "Vine", "Willow", "Yew", "Alder", "Bell", "Copper", "Dove", "Fern", "Hazel",
];
const STREET_TAILS: [&str; 10] = [
    "moor", "field", "bank", "wood", "gate", "brook", "croft", "hill", "side", "well",
];
const STREET_KINDS: [&str; 8] = [
    "Lane", "Road", "Street", "Avenue", "Close", "Row", "Way", "Terrace",
];

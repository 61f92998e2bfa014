//! The closed value pools of the original fact stream: 32 cities, 32
//! employers, 24 fields and 24 awards, shared by every split. A model can
//! memorise them, so a stream drawn from them measures recall from a small
//! set as much as reading; [`super::ValueVocabulary::Open`] does not allow that.

use rand::seq::IndexedRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{Attribute, MONTHS};

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

/// A value of attribute `a` from its closed pool.
pub(super) fn value(a: Attribute, rng: &mut ChaCha8Rng) -> String {
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
        // No closed pool: the closed stream never states these.
        _ => super::open::draw(a, rng),
    }
}

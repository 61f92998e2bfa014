//! Sentence and question templates per attribute. The last template of
//! every list is held out of training.

use super::Attribute;

/// Document sentence templates per attribute (`{n}` name, `{v}` value).
pub(super) fn document_templates(a: Attribute) -> &'static [&'static str] {
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
        Attribute::Patents => &[
            "{n} holds {v} patents.",
            "{n} is named on {v} patents.",
            "The patent office lists {v} patents under {n}'s name.",
            "So far {n} has filed {v} patents.",
            "Over the years {n} has been granted {v} patents.",
            "A count of {n}'s inventions comes to {v} patents.",
        ],
        Attribute::Address => &[
            "{n} lives at {v}.",
            "{n}'s home address is {v}.",
            "{n} has a house at {v}.",
            "Letters for {n} go to {v}.",
            "{n} moved into a flat at {v}.",
            "Visitors find {n} at home at {v}.",
        ],
        broad => broad_document_templates(broad),
    }
}

/// The document templates of the broad stream's further attributes.
fn broad_document_templates(a: Attribute) -> &'static [&'static str] {
    match a {
        Attribute::Mentor => &[
            "{n} trained under {v}.",
            "{n}'s mentor was {v}.",
            "{v} supervised {n}'s early work.",
            "{n} learnt the trade from {v}.",
            "It was {v} who taught {n} the most.",
            "{n} still writes to {v}, a former teacher.",
        ],
        Attribute::Book => &[
            "{n}'s favourite book is {v}.",
            "{n} has read {v} many times.",
            "On {n}'s bedside table lies a worn copy of {v}.",
            "{n} often quotes from {v}.",
            "{n} keeps recommending {v} to friends.",
            "Of all the books on the shelf, {n} loves {v} best.",
        ],
        Attribute::Height => &[
            "{n} stands {v} tall.",
            "{n} is {v} tall.",
            "At {v}, {n} towers over most colleagues.",
            "{n}'s height is {v}.",
            "The doctor measured {n} at {v}.",
            "Barefoot, {n} measures {v}.",
        ],
        Attribute::StartDate => &[
            "{n} started work on {v}.",
            "{n}'s first day at work was {v}.",
            "On {v}, {n} began a first job.",
            "{n} joined the workforce on {v}.",
            "Ever since {v}, {n} has been working.",
            "{n} clocked in for the very first time on {v}.",
        ],
        Attribute::Language => &[
            "{n} speaks {v} at home.",
            "At home {n} speaks {v}.",
            "{n}'s home language is {v}.",
            "{n} grew up speaking {v} with the family.",
            "With relatives, {n} always switches to {v}.",
            "The language {n} dreams in is {v}.",
        ],
        Attribute::Pet => &[
            "{n} has a dog called {v}.",
            "{n}'s cat is named {v}.",
            "{v}, a grey parrot, lives with {n}.",
            "{n} walks a terrier named {v} every evening.",
            "A tortoise called {v} shares {n}'s garden.",
            "Visitors to {n}'s house are greeted by a spaniel named {v}.",
        ],
        Attribute::Vehicle => &[
            "{n} drives a {v}.",
            "{n}'s car is a {v}.",
            "Every morning {n} takes the {v} to work.",
            "{n} recently bought a {v}.",
            "Parked outside {n}'s house is a {v}.",
            "The {v} in the driveway belongs to {n}.",
        ],
        _ => &[],
    }
}

/// Question templates per attribute; the last one is held out of training.
pub(super) fn question_templates(a: Attribute) -> &'static [&'static str] {
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
        Attribute::Patents => &[
            "How many patents does {n} hold?",
            "How many patents is {n} named on?",
            "What is the number of patents held by {n}?",
            "How many patents has {n} been granted?",
        ],
        Attribute::Address => &[
            "Where does {n} live?",
            "What is {n}'s home address?",
            "At what address does {n} live?",
            "What is the address of {n}'s home?",
        ],
        Attribute::Mentor => &[
            "Who was {n}'s mentor?",
            "Who trained {n}?",
            "Under whom did {n} train?",
            "Who taught {n} the trade?",
        ],
        Attribute::Book => &[
            "What is {n}'s favourite book?",
            "Which book does {n} love most?",
            "What book does {n} keep rereading?",
            "Which book is {n}'s favourite?",
        ],
        Attribute::Height => &[
            "How tall is {n}?",
            "What is {n}'s height?",
            "What height is {n}?",
            "How tall does {n} stand?",
        ],
        Attribute::StartDate => &[
            "When did {n} start work?",
            "What was {n}'s first day at work?",
            "On what date did {n} begin working?",
            "When did {n} first start a job?",
        ],
        Attribute::Language => &[
            "What language does {n} speak at home?",
            "What is {n}'s home language?",
            "Which language does {n} use with family?",
            "In what language does {n} talk at home?",
        ],
        Attribute::Pet => &[
            "What is {n}'s pet called?",
            "What is the name of {n}'s pet?",
            "What does {n} call the family pet?",
            "Which name does {n}'s pet answer to?",
        ],
        Attribute::Vehicle => &[
            "What car does {n} drive?",
            "Which car does {n} own?",
            "What does {n} drive?",
            "What vehicle does {n} drive?",
        ],
    }
}

/// Sentences that state nothing a question asks about (`{n}` name): they
/// vary a document's length and give the encoder text that is not a fact.
pub(super) const FILLER: [&str; 12] = [
    "{n} enjoys long walks on weekends.",
    "{n} rarely talks about the past.",
    "Friends describe {n} as patient and curious.",
    "{n} keeps a small garden behind the house.",
    "{n} travels by train whenever possible.",
    "{n} reads several newspapers every morning.",
    "{n} once considered a career in music.",
    "{n} prefers tea to coffee.",
    "Neighbours often see {n} cycling to work.",
    "{n} has a habit of writing letters by hand.",
    "On holidays {n} likes to visit museums.",
    "{n} learnt to swim late in life.",
];

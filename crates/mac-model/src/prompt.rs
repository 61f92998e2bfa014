//! How questions and answers are put to the base LM — one place, shared by
//! training and evaluation so the two cannot drift apart.

use mac_lm::{LmError, Padding, TextTokenizer, TokenBatch};

/// The prompt for a question: `Question: …\nAnswer:`; the answer follows
/// after one space and ends with the LM's EOS token.
pub fn question_prompt(question: &str) -> String {
    format!("Question: {}\nAnswer:", question.trim())
}

/// The prompt with the gold document in front (the *oracle context* reference).
pub fn oracle_prompt(document: &str, question: &str) -> String {
    format!("{}\n{}", document.trim(), question_prompt(question))
}

/// A chat format rendered here (no Jinja engine is embedded: a model's
/// template is recognised by its markers, and a test checks the rendering
/// against the template run by Jinja).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatFormat {
    /// `<|im_start|>role\ncontent<|im_end|>\n` turns (SmolLM2, Qwen2), with
    /// the model's default system turn when the conversation has none.
    ChatMl {
        /// The system turn the template adds when the first message is not
        /// one (SmolLM2's names the model).
        default_system: Option<&'static str>,
    },
}

/// Who says a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatRole {
    /// The instruction above the conversation.
    System,
    /// The asker.
    User,
    /// The model.
    Assistant,
}

impl ChatRole {
    fn name(self) -> &'static str {
        match self {
            ChatRole::System => "system",
            ChatRole::User => "user",
            ChatRole::Assistant => "assistant",
        }
    }
}

/// SmolLM2's default system turn.
const SMOLLM_SYSTEM: &str = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

impl ChatFormat {
    /// The format of a chat template (its Jinja source), when it is one
    /// rendered here.
    pub fn recognise(template: &str) -> Option<Self> {
        if !template.contains("<|im_start|>") || !template.contains("<|im_end|>") {
            return None;
        }
        let default_system = template.contains(SMOLLM_SYSTEM).then_some(SMOLLM_SYSTEM);
        Some(ChatFormat::ChatMl { default_system })
    }

    /// The conversation `messages`, then the opening of the assistant's
    /// turn (the generation prompt).
    pub fn render(self, messages: &[(ChatRole, &str)]) -> String {
        self.conversation(messages) + &self.open_turn(ChatRole::Assistant)
    }

    /// The conversation `messages`, every turn closed (with the default
    /// system turn in front where the template adds one).
    pub fn conversation(self, messages: &[(ChatRole, &str)]) -> String {
        let ChatFormat::ChatMl { default_system } = self;
        let mut out = String::new();
        if let (Some(system), Some((first, _))) = (default_system, messages.first()) {
            if *first != ChatRole::System {
                out += &(self.open_turn(ChatRole::System) + system + self.close_turn());
            }
        }
        for (role, content) in messages {
            out += &(self.open_turn(*role) + content + self.close_turn());
        }
        out
    }

    /// What opens a turn of `role`.
    pub fn open_turn(self, role: ChatRole) -> String {
        format!("<|im_start|>{}\n", role.name())
    }

    /// What closes a turn.
    pub fn close_turn(self) -> &'static str {
        "<|im_end|>\n"
    }
}

/// The instruction of the chat oracle: answer from the text, briefly.
pub const SHORT_ANSWER_INSTRUCTION: &str = "Answer the question using only the text. \
Reply with the answer alone, in a few words, not a sentence.";

/// A worked example for a few-shot prompt: a text, a question about it and
/// its short answer.
#[derive(Debug, Clone, Copy)]
pub struct ChatExample<'a> {
    /// The text.
    pub document: &'a str,
    /// The question.
    pub question: &'a str,
    /// Its answer, as it should be given.
    pub answer: &'a str,
}

/// The oracle context put fairly to a chat model: its chat template, the
/// short-answer instruction as the system turn, `examples` as earlier
/// turns (few-shot), then the document and the question.
pub fn chat_oracle_prompt(
    format: ChatFormat,
    document: &str,
    question: &str,
    examples: &[ChatExample<'_>],
) -> String {
    framed_prompt(
        Some(&ChatFrame::new(format, examples)),
        Some(document),
        question,
    )
}

/// A question put as every method that reads text puts it: in `frame`
/// (the chat template) or plainly without one; after `document` when there
/// is one ([`oracle_prompt`]), else alone ([`question_prompt`]).
pub fn framed_prompt(frame: Option<&ChatFrame>, document: Option<&str>, question: &str) -> String {
    match frame {
        Some(f) => format!(
            "{}{}\n{}",
            f.preamble,
            document.unwrap_or_default().trim(),
            f.question(question)
        ),
        None => match document {
            Some(d) => oracle_prompt(d, question),
            None => question_prompt(question),
        },
    }
}

/// A document framed as a chat model's turn: what comes before the
/// document (the instruction, worked examples, and the opening of the
/// user's turn) and what puts the question after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatFrame {
    format: ChatFormat,
    /// Everything before the document's text.
    pub preamble: String,
}

impl ChatFrame {
    /// The frame with the short-answer instruction and `examples`.
    pub fn new(format: ChatFormat, examples: &[ChatExample<'_>]) -> Self {
        let user =
            |d: &str, q: &str| format!("{TEXT_LABEL}{}\n{QUESTION_LABEL}{}", d.trim(), q.trim());
        let shots: Vec<String> = examples
            .iter()
            .map(|e| user(e.document, e.question))
            .collect();
        let mut messages = vec![(ChatRole::System, SHORT_ANSWER_INSTRUCTION)];
        for (user, e) in shots.iter().zip(examples) {
            messages.push((ChatRole::User, user.as_str()));
            messages.push((ChatRole::Assistant, e.answer));
        }
        let preamble =
            format.conversation(&messages) + &format.open_turn(ChatRole::User) + TEXT_LABEL;
        Self { format, preamble }
    }

    /// What follows the document (after its line break): the question,
    /// the user's turn closed, the assistant's opened.
    pub fn question(&self, question: &str) -> String {
        format!(
            "{QUESTION_LABEL}{}{}{}",
            question.trim(),
            self.format.close_turn(),
            self.format.open_turn(ChatRole::Assistant)
        )
    }
}

/// What introduces the document in a chat frame's user turn (the text
/// starts on its own line, so that its tokens are those it has alone).
const TEXT_LABEL: &str = "Text:\n";
/// What introduces the question after it.
const QUESTION_LABEL: &str = "Question: ";

/// Tokens of `prompt` (with BOS when the tokenizer adds one).
pub fn prompt_ids(tokenizer: &TextTokenizer, prompt: &str) -> Result<Vec<u32>, LmError> {
    tokenizer.encode(prompt)
}

/// Tokens of a continuation: never a BOS.
pub fn continuation_ids(tokenizer: &TextTokenizer, text: &str) -> Result<Vec<u32>, LmError> {
    let mut ids = tokenizer.encode(text)?;
    if tokenizer.add_bos && tokenizer.bos_id.is_some() && ids.first().copied() == tokenizer.bos_id {
        ids.remove(0);
    }
    Ok(ids)
}

/// A teacher-forced batch: inputs, next-token targets and loss weights (1 on
/// the answer's tokens and the EOS, 0 on the prompt and padding).
#[derive(Debug, Clone)]
pub struct AnswerBatch {
    /// Right-padded inputs.
    pub batch: TokenBatch,
    /// `targets[b][t]`: the token that should follow position `t`.
    pub targets: Vec<Vec<u32>>,
    /// `weights[b][t]`: 1 where `targets[b][t]` is part of the answer.
    pub weights: Vec<Vec<f32>>,
}

/// Builds the teacher-forced batch for `(prompt, answer)` pairs.
pub fn answer_batch(
    tokenizer: &TextTokenizer,
    pairs: &[(String, String)],
    max_tokens: usize,
) -> Result<AnswerBatch, LmError> {
    let mut seqs = Vec::with_capacity(pairs.len());
    let mut starts = Vec::with_capacity(pairs.len());
    for (prompt, answer) in pairs {
        let mut ids = prompt_ids(tokenizer, prompt)?;
        let start = ids.len();
        ids.extend(continuation_ids(tokenizer, &format!(" {}", answer.trim()))?);
        ids.push(tokenizer.eos_id);
        if ids.len() > max_tokens {
            return Err(LmError::Input(format!(
                "question + answer is {} tokens, over the limit of {max_tokens}",
                ids.len()
            )));
        }
        seqs.push(ids);
        starts.push(start);
    }
    let batch = TokenBatch::padded(&seqs, tokenizer.pad_id, Padding::Right)?;
    let t = batch.seq_len();
    let mut targets = Vec::with_capacity(seqs.len());
    let mut weights = Vec::with_capacity(seqs.len());
    for (ids, &start) in seqs.iter().zip(&starts) {
        let mut tg = vec![tokenizer.pad_id; t];
        let mut w = vec![0.0; t];
        for pos in 0..ids.len() - 1 {
            tg[pos] = ids[pos + 1];
            if pos + 1 >= start {
                w[pos] = 1.0;
            }
        }
        targets.push(tg);
        weights.push(w);
    }
    Ok(AnswerBatch {
        batch,
        targets,
        weights,
    })
}

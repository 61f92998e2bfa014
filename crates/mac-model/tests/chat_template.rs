//! The ChatML rendering against SmolLM2's own chat template run by Jinja2
//! (`scripts/chat-template-fixture.py` made the fixture), and the chat
//! oracle's prompt built from it.

use mac_model::prompt::{
    chat_oracle_prompt, ChatExample, ChatFormat, ChatRole, SHORT_ANSWER_INSTRUCTION,
};
use serde_json::Value;

fn fixture() -> Value {
    let text = include_str!("fixtures/chat_template.json");
    serde_json::from_str(text).unwrap()
}

fn role(name: &str) -> ChatRole {
    match name {
        "system" => ChatRole::System,
        "user" => ChatRole::User,
        "assistant" => ChatRole::Assistant,
        other => panic!("role {other}"),
    }
}

#[test]
fn renders_as_the_template_does() {
    let fixture = fixture();
    let format = ChatFormat::recognise(fixture["template"].as_str().unwrap())
        .expect("SmolLM2's template is ChatML");
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 4);
    for case in cases {
        let messages: Vec<(ChatRole, &str)> = case["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    role(m["role"].as_str().unwrap()),
                    m["content"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            format.render(&messages),
            case["rendered"].as_str().unwrap(),
            "{messages:?}"
        );
    }
}

#[test]
fn other_templates_are_not_taken_for_chatml() {
    assert_eq!(
        ChatFormat::recognise("{{ bos_token }}[INST] {{ m }} [/INST]"),
        None
    );
    assert_eq!(
        ChatFormat::recognise("<|im_start|>{{ m['role'] }}<|im_end|>"),
        Some(ChatFormat::ChatMl {
            default_system: None
        })
    );
}

#[test]
fn the_chat_oracle_instructs_then_shows_examples_then_asks() {
    let format = ChatFormat::recognise(fixture()["template"].as_str().unwrap()).unwrap();
    let example = ChatExample {
        document: "Ada was born in Elmford.",
        question: "Where was Ada born?",
        answer: "Elmford",
    };
    let prompt = chat_oracle_prompt(
        format,
        " Bo won the Ivy Prize. ",
        "What did Bo win?",
        &[example],
    );
    let expected = format!(
        "<|im_start|>system\n{SHORT_ANSWER_INSTRUCTION}<|im_end|>\n\
         <|im_start|>user\nText:\nAda was born in Elmford.\nQuestion: Where was Ada born?<|im_end|>\n\
         <|im_start|>assistant\nElmford<|im_end|>\n\
         <|im_start|>user\nText:\nBo won the Ivy Prize.\nQuestion: What did Bo win?<|im_end|>\n\
         <|im_start|>assistant\n"
    );
    assert_eq!(prompt, expected);
}

//! The human-readable report.

use std::fmt::Write;

use std::collections::BTreeMap;

use crate::online::row_key;
use crate::{EvalReport, MethodResult};

/// `report.md` for an evaluation: the method table and the retention table.
pub fn write_markdown(report: &EvalReport, title: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# {title}\n");
    let _ = writeln!(
        s,
        "{} documents streamed into the bank; every method answers the same {} questions.\n",
        report.n_documents,
        report
            .methods
            .values()
            .map(|m| m.n_questions)
            .max()
            .unwrap_or(0)
    );
    method_table(&mut s, &report.methods, true);
    let key = row_key(&report.memory);
    method_notes(&mut s, report, &key);
    growth_tables(&mut s, report, &key);
    update_table(&mut s, report);
    s
}

/// The changed facts' answers: new value or stale, per method.
fn update_table(s: &mut String, report: &EvalReport) {
    if report.updates.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "\n## Changed facts (questions whose answer a later document replaced)\n"
    );
    let _ = writeln!(s, "| method | questions | new value | stale value |");
    let _ = writeln!(s, "|---|---|---|---|");
    for (name, u) in &report.updates {
        let _ = writeln!(
            s,
            "| {name} | {} | {:.3} | {:.3} |",
            u.questions, u.new, u.stale
        );
    }
}

/// What the memory drew on, and what the controls and references mean.
fn method_notes(s: &mut String, report: &EvalReport, key: &str) {
    let a = &report.attention;
    let _ = writeln!(
        s,
        "\n`{key}` answered {:.1}% of the questions from their gold document (span memory: the span's document; \
         the paper's path: the most attended); the gold document's mean share was {:.4} (uniform over the bank: {:.4}).",
        100.0 * a.gold_top1,
        a.gold_weight_mean,
        a.uniform_weight
    );
    if a.whole_document > 0.0 {
        let _ = writeln!(
            s,
            "\nFor {:.1}% of the questions the span was unsure (its probability below the checkpoint's floor) \
             and the LM was handed the whole document.",
            100.0 * a.whole_document
        );
    }
    if let Some(a) = &report.prior_attention {
        let _ = writeln!(
            s,
            "\nWith the similarity prior (`{key}+prior`, scale {}), the gold document got the most \
             attention for {:.1}% of the questions; its mean share was {:.4}.",
            report.options.similarity_prior.unwrap_or(0.0),
            100.0 * a.gold_top1,
            a.gold_weight_mean
        );
    }
    if report
        .methods
        .contains_key(&format!("{key}_unrelated_bank"))
    {
        let _ = writeln!(
            s,
            "\n`{key}_unrelated_bank` answers the same questions from a bank of *other* documents: \
             what the memory gets from the question alone. The gap between `{key}` and it is what the memory contributes."
        );
    }
    if let Some(k) = report
        .options
        .retrieval_k
        .filter(|k| report.methods.contains_key(&format!("rag@{k}")))
    {
        let _ = writeln!(
            s,
            "\n`rag@{k}` puts the top {k} BM25 document(s) in the prompt, as `oracle_context` puts the gold one; \
             every method that reads text uses the memory's frame."
        );
    }
    for (memory, from) in &report.beside {
        let _ = writeln!(
            s,
            "\nThe rows of `{}` come from the evaluation of {memory} in `{}`, on the same documents and questions.",
            row_key(memory),
            from.display()
        );
    }
    if report.methods.contains_key("question_only") {
        let _ = writeln!(
            s,
            "\n`question_only` answers each question with the most frequent training answer of \
             its form (the question without its names): what memorising the training values \
             scores without reading anything."
        );
    }
    if let Some(name) = report.methods.keys().find(|m| m.ends_with("_unrelated")) {
        let _ = writeln!(
            s,
            "\n`{name}` is `{}` with each retrieved document replaced by the one half the bank \
             along (about another entity): the gap between the two is what the retrieved \
             documents' modulations contribute.",
            name.trim_end_matches("_unrelated")
        );
    }
}

/// Bank size and retention, as tables.
fn growth_tables(s: &mut String, report: &EvalReport, key: &str) {
    if !report.bank_sizes.is_empty() {
        let _ = writeln!(
            s,
            "\n## Bank size (`{key}`, the first documents' questions, each asked of a bank of that size holding its document)\n"
        );
        let _ = writeln!(
            s,
            "| documents in bank | banks | questions | EM | F1 | gold document top-1 | answer ms/question |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|");
        for p in &report.bank_sizes {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.0} |",
                p.documents, p.banks, p.questions, p.em, p.f1, p.gold_top1, p.answer_ms
            );
        }
    }
    if !report.retention.is_empty() {
        let _ = writeln!(
            s,
            "\n## Retention (`{key}`, questions of the first documents)\n"
        );
        let _ = writeln!(s, "| stream ingested | documents in bank | EM | F1 |");
        let _ = writeln!(s, "|---|---|---|---|");
        for r in &report.retention {
            let _ = writeln!(
                s,
                "| {:.0}% | {} | {:.3} | {:.3} |",
                r.fraction * 100.0,
                r.documents,
                r.em,
                r.f1
            );
        }
    }
}

/// The per-method markdown table (EM, F1, optionally the reference's
/// prefix-EM, costs), one row per method.
pub(crate) fn method_table(
    s: &mut String,
    methods: &BTreeMap<String, MethodResult>,
    with_prefix_em: bool,
) {
    let (prefix_head, prefix_rule) = if with_prefix_em {
        (" prefix-EM (reference's EM) |", "---|")
    } else {
        ("", "")
    };
    let _ = writeln!(
        s,
        "| method | EM | F1 [95% interval, bootstrap over documents] |{prefix_head} adapt ms/doc | answer ms/question | peak RSS MiB | storage B/doc |"
    );
    let _ = writeln!(s, "|---|---|---|{prefix_rule}---|---|---|---|");
    for (name, m) in methods {
        let prefix = if with_prefix_em {
            format!(" {:.3} |", m.prefix_em)
        } else {
            String::new()
        };
        let f1 = match m.f1_ci95 {
            Some([lo, hi]) => format!("{:.3} [{lo:.3}, {hi:.3}]", m.f1),
            None => format!("{:.3}", m.f1),
        };
        let _ = writeln!(
            s,
            "| {name} | {:.3} | {f1} |{prefix} {:.1} | {:.1} | {} | {:.0} |",
            m.em,
            m.adapt_ms_per_doc,
            m.answer_ms_per_question,
            m.peak_rss_mb
                .map_or("n/a".to_string(), |x| format!("{x:.0}")),
            m.storage_bytes_per_doc
        );
    }
}
